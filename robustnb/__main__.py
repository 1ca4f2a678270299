"""``python -m robustnb``: the package's command line (:mod:`robustnb.cli`), e.g. ``python -m robustnb reproduce
entropy_attacks --preset cpu``."""

import sys

from robustnb.cli import main

if __name__ == "__main__":
    sys.exit(main())
