"""``python -m robustnb reproduce <chapter>``: a chapter's experiments and its claims table, without Jupyter.

For a cluster node or a GPU box with no notebook server::

    python -m robustnb reproduce --list
    python -m robustnb reproduce entropy_attacks --preset cpu --seed 0 --device cuda --out claims.csv

Each chapter module (``robustnb/chapters/<chapter>.py``) has a ``reproduce(run)`` that makes the calls its
notebook makes on the way to its claims table, in the same order and with the same config. So the command
reads and fills the same experiment cache as the book (``ROBUSTNB_CACHE``): a chapter the book already
executed is read back, and a chapter run here first makes the book's build fast. It prints the table (claim,
ours with its 95% interval, the paper's figure, verdict, Holm's reading) and, with ``--out``, writes it as CSV
(every column of :data:`robustnb.stats.CLAIM_COLUMNS`) to a new file: ``--out`` naming a folder or a file that
exists, or a place that cannot be written, is refused before the chapter runs (:func:`check_out`), and the file is
created exclusively, so nothing the user has is ever overwritten. Nothing here needs Jupyter, papermill or a renderer:
only what the chapter module itself imports.

The chapters are the modules of :mod:`robustnb.chapters` (one per notebook of the book, the same names).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from pathlib import Path

import pandas as pd

import robustnb.chapters
from robustnb import stats
from robustnb.config import DEVICES, PRESETS, ConfigError, setup

#: the columns printed for a claims table, in this order (the CSV of ``--out`` keeps every column)
SHOWN = ("claim", "ours", "paper", "verdict", "holm")


def chapter_names() -> list[str]:
    """Every chapter that can be reproduced: the modules of :mod:`robustnb.chapters` (each named like its
    notebook), sorted by name."""
    return sorted(m.name for m in pkgutil.iter_modules(robustnb.chapters.__path__) if not m.name.startswith("_"))


def chapter_module(name: str):
    """The chapter's module, checked: an unknown name, or a module without ``reproduce(run)``, raises
    :class:`~robustnb.config.ConfigError` naming the allowed chapters."""
    names = chapter_names()
    if name not in names:
        raise ConfigError(f"Unknown chapter {name!r}: choose one of {', '.join(map(repr, names))} "
                          "(python -m robustnb reproduce --list).")
    module = importlib.import_module(f"robustnb.chapters.{name}")
    if not callable(getattr(module, "reproduce", None)):
        raise ConfigError(f"Chapter {name!r} cannot be reproduced from the command line yet: "
                          f"robustnb/chapters/{name}.py has no reproduce(run) function. Run its notebook instead "
                          f"(papermill book/{name}.ipynb out.ipynb -p preset cpu).")
    return module


def reproduce(name: str, preset: str | None = None, seed: int = 0, device: str = "auto",
              verbose: bool = True) -> pd.DataFrame:
    """Run chapter ``name`` as its notebook does (``robustnb.setup(preset, seed, device)``, then the chapter's
    ``reproduce(run)``) and return its claims table. ``preset=None``: ``$ROBUSTNB_PRESET``, else ``cpu``."""
    module = chapter_module(name)
    run = setup(preset, seed=seed, device=device, verbose=verbose)
    return module.reproduce(run)


def check_out(out: str | Path) -> Path:
    """``--out`` checked before any work: a new file in a folder that exists or can be made there, writable.
    A folder, an existing file (never overwritten), a name ending in a path separator, or a parent that is a file
    or cannot be written is refused with :class:`~robustnb.config.ConfigError` saying why."""
    raw = os.fspath(out)
    path = Path(raw)
    if not raw.strip():
        raise ConfigError("--out names no file: give a path such as claims.csv.")
    if raw.endswith(("/", os.sep)) or path.is_dir():
        raise ConfigError(f"--out {raw} is a folder: name the CSV file to write, e.g. {path / 'claims.csv'}.")
    if path.exists() or path.is_symlink():
        raise ConfigError(f"--out {raw} exists: not overwriting it. Remove it or name another file.")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--out {raw}: {parent} is a file, not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {raw}: cannot write in {parent} (no permission).")
    return path


def write_new(table: pd.DataFrame, out: Path) -> None:
    """Write ``table`` as CSV to ``out``, a file that must not exist yet (created exclusively, with its folders)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "x", newline="") as f:
        table.to_csv(f, index=False)


def format_table(table: pd.DataFrame) -> str:
    """The table as Markdown: the :data:`SHOWN` columns of a claims table, every column of another table."""
    shown = [c for c in SHOWN if c in table.columns]
    return table[shown if "claim" in shown else list(table.columns)].to_markdown(index=False)


def not_measured(name: str, table: pd.DataFrame) -> list[str]:
    """The claim ids the chapter declares (``PAPER_CLAIMS``) that this run did not measure (too small a run): not
    in the table, or in it as :data:`robustnb.stats.UNMEASURED`."""
    declared = getattr(importlib.import_module(f"robustnb.chapters.{name}"), "PAPER_CLAIMS", {})
    measured = (set(table.loc[table["ours"] != stats.UNMEASURED, "claim_id"])
                if {"claim_id", "ours"} <= set(table.columns) else set())
    return [cid for cid in declared if cid not in measured]


def cache_command(args) -> int:
    """``cache export ARCHIVE`` / ``cache import ARCHIVE|URL`` (:mod:`robustnb.archive`), from and into
    ``$ROBUSTNB_CACHE``; an ``http(s)`` URL is downloaded first."""
    from robustnb import archive
    try:
        if args.action == "export":
            manifest = archive.export_archive(args.archive, label=args.label)
            print(f"written: {args.archive} ({len(manifest['files'])} files)")
        else:
            if archive.is_url(args.archive):
                print(f"downloading {args.archive} ...", flush=True)
            done = archive.import_archive(args.archive)
            made = f" ({done['label']})" if done["label"] else ""
            print(f"imported {args.archive}{made}: {done['added']} files added, {done['present']} already present")
            if done["conflicts"]:
                print(f"kept your own version of {len(done['conflicts'])} file(s) that differ from the archive's: "
                      + ", ".join(done["conflicts"][:5]) + (" ..." if len(done["conflicts"]) > 5 else ""))
    except ConfigError as e:
        print(f"python -m robustnb cache {args.action}: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robustnb", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("reproduce", help="run a chapter's experiments and print its claims table",
                        description="Run a chapter's experiments (same calls and cache as its notebook) and print "
                                    "its claims table.")
    rp.add_argument("chapter", nargs="?", help="chapter name (see --list)")
    rp.add_argument("--list", action="store_true", help="list the chapters and exit")
    rp.add_argument("--preset", choices=PRESETS, default=None, help="default: $ROBUSTNB_PRESET, else cpu")
    rp.add_argument("--seed", type=int, default=0, help="default: 0, as the book")
    rp.add_argument("--device", choices=DEVICES, default="auto", help="default: auto (the GPU when there is one)")
    rp.add_argument("--out", help="also write the table as CSV (every column) to this new file (never overwritten)")
    cp = sub.add_parser("cache", help="export or import an archive of trained models and results",
                        description="Export the cache's trained models and results to one archive, or import one "
                                    "(checked first; nothing the reader has is overwritten).")
    csub = cp.add_subparsers(dest="action", required=True)
    ep = csub.add_parser("export", help="write the cache's models and results to a new .tar.gz")
    ep.add_argument("archive", help="the new archive, e.g. robustnb-cache-cpu.tar.gz (never overwritten)")
    ep.add_argument("--label", default="", help="a note stored in the manifest, e.g. the preset")
    ip = csub.add_parser("import", help="add an archive's models and results to the cache")
    ip.add_argument("archive", help="an archive made by `python -m robustnb cache export`, a file or an http(s) URL "
                                    "(the book's: robustnb: cache_archive in _config.yml)")
    args = ap.parse_args(argv)
    if args.command == "cache":
        return cache_command(args)
    if args.list:
        print("\n".join(chapter_names()))
        return 0
    if not args.chapter:
        rp.error(f"name a chapter, one of: {', '.join(chapter_names())} (or --list)")
    try:  # the chapter and --out are checked before the work starts
        chapter_module(args.chapter)
        out = None if args.out is None else check_out(args.out)
        table = reproduce(args.chapter, args.preset, args.seed, args.device)
    except ConfigError as e:
        print(f"python -m robustnb reproduce: error: {e}", file=sys.stderr)
        return 2
    print(f"\n{args.chapter}:\n")
    print(format_table(table))
    missing = not_measured(args.chapter, table)
    if missing:
        print(f"\nnot measured at this preset ({len(missing)}): {', '.join(missing)}")
    if out is not None:
        try:
            write_new(table, out)
        except OSError as e:  # made since the check (another run?): still not overwritten
            print(f"python -m robustnb reproduce: error: --out {out}: {e.strerror or e} (the table is printed above; "
                  "nothing was overwritten)", file=sys.stderr)
            return 1
        print(f"\nwritten: {out}")
    return 0


__all__ = ["chapter_names", "chapter_module", "check_out", "write_new", "reproduce", "format_table", "not_measured",
           "cache_command", "main"]
