"""``python -m robustnb.book``: the book's maintenance commands (see :mod:`robustnb.book`).

``new`` and ``nbval`` check their arguments before they write (:func:`robustnb.book.scaffold.chapter`,
:func:`robustnb.book.cells.store_checked_outputs`); a refusal prints ``error: ...`` and exits with status 2."""

import sys
from pathlib import Path

from robustnb.book import ROOT, chapters, scaffold, store_checked_outputs, summary_report, sync, watch, write_ledger
from robustnb.config import ConfigError

USAGE = ("usage: python -m robustnb.book [list | sync | ledger | summary [BUILD] | watch | nbval NB EXECUTED | "
         "new NAME TITLE [--part CAPTION]]")


def main(argv: list[str]) -> int:
    try:
        return _main(argv)
    except (ConfigError, FileExistsError) as e:
        print(f"python -m robustnb.book: error: {e}", file=sys.stderr)
        return 2


def _main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "list"
    if cmd == "sync":
        for p in sync():
            print("updated", p.relative_to(ROOT))
    elif cmd == "new" and len(argv) in (3, 5) and (len(argv) == 3 or argv[3] == "--part"):
        for p in scaffold.chapter(argv[1], argv[2], argv[4] if len(argv) == 5 else None):
            print("wrote", p.relative_to(ROOT))
    elif cmd == "nbval" and len(argv) == 3:  # python -m robustnb.book nbval book/x.ipynb executed.ipynb
        print("stored", store_checked_outputs(Path(argv[1]), Path(argv[2])), "checked cells")
    elif cmd == "watch":
        watch()
    elif cmd == "ledger":
        print("wrote", write_ledger().relative_to(ROOT))
    elif cmd == "summary":  # python -m robustnb.book summary [BUILD_DIR]: after `make book`
        print(summary_report(Path(argv[1]) if len(argv) > 1 else ROOT / "_build"))
    elif cmd == "list":
        for p in chapters():
            print(p.relative_to(ROOT))
    else:
        print(f"{USAGE}, got {' '.join(argv)!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
