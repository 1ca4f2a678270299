#!/usr/bin/env python
"""Fetch a dataset into the data folder (ROBUSTNB_DATA, default ~/.cache/robustnb/data).

    python data_scripts/get_data.py cifar10                 # official download (torchvision)
    python data_scripts/get_data.py fashion_mnist           # official idx files (torchvision)
    python data_scripts/get_data.py office31                # Google Drive archive (needs `pip install gdown`)
    python data_scripts/get_data.py office31 --archive domain_adaptation_images.tar.gz   # a file you downloaded

Office-31 ends up as <root>/office31/{amazon,dslr,webcam}/images/<class>/*.jpg. Existing files are never
overwritten. Offline machines can instead put CIFAR-10's JPEG archive (cifar10-jpg.tar.gz) in the data folder.
A damaged file (a truncated archive, an HTML error page saved as the archive, a corrupt image) is reported by
name, with exit status 1: delete or replace it and run the command again.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from robustnb import data  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=data.DATASETS)
    ap.add_argument("--root", default=None, help="data folder (default: $ROBUSTNB_DATA or ~/.cache/robustnb/data)")
    ap.add_argument("--archive", default=None, help="office31 only: install from a local archive")
    args = ap.parse_args()
    try:
        where = data.fetch(args.dataset, args.root, args.archive)
    except (data.DatasetNotFoundError, ValueError) as e:  # ValueError includes data.DatasetCorruptError
        print(e, file=sys.stderr)
        return 1
    except OSError as e:  # e.g. a read-only or full data folder while installing an archive
        print(f"Could not install {args.dataset}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"{args.dataset} is ready under {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
