"""``python -m robustnb reproduce <chapter>``: a chapter's experiments and its claims table, without Jupyter.

For a cluster node or a GPU box with no notebook server::

    python -m robustnb reproduce --list
    python -m robustnb reproduce entropy_attacks --preset cpu --seed 0 --device cuda --out claims.csv

Each chapter module (``robustnb/chapters/<chapter>.py``) has a ``reproduce(run)`` that makes the calls its
notebook makes on the way to its claims table, in the same order and with the same config. So the command
reads and fills the same experiment cache as the book (``ROBUSTNB_CACHE``): a chapter the book already
executed is read back, and a chapter run here first makes the book's build fast. It prints the table (claim,
ours with its 95% interval, the paper's figure, verdict, Holm's reading) and, with ``--out``, writes it as CSV
(every column of :data:`robustnb.stats.CLAIM_COLUMNS`). Nothing here needs Jupyter, papermill or a renderer:
only what the chapter module itself imports.

The chapters are the modules of :mod:`robustnb.chapters` (one per notebook of the book, the same names).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

import pandas as pd

import robustnb.chapters
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


def format_table(table: pd.DataFrame) -> str:
    """The table as Markdown: the :data:`SHOWN` columns of a claims table, every column of another table."""
    shown = [c for c in SHOWN if c in table.columns]
    return table[shown if "claim" in shown else list(table.columns)].to_markdown(index=False)


def not_measured(name: str, table: pd.DataFrame) -> list[str]:
    """The claim ids the chapter declares (``PAPER_CLAIMS``) that this table does not hold (too small a run)."""
    declared = getattr(importlib.import_module(f"robustnb.chapters.{name}"), "PAPER_CLAIMS", {})
    measured = set(table["claim_id"]) if "claim_id" in table.columns else set()
    return [cid for cid in declared if cid not in measured]


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
    rp.add_argument("--out", type=Path, help="also write the table as CSV (every column) to this file")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(chapter_names()))
        return 0
    if not args.chapter:
        rp.error(f"name a chapter, one of: {', '.join(chapter_names())} (or --list)")
    try:
        table = reproduce(args.chapter, args.preset, args.seed, args.device)
    except ConfigError as e:
        print(f"python -m robustnb reproduce: error: {e}", file=sys.stderr)
        return 2
    print(f"\n{args.chapter}:\n")
    print(format_table(table))
    missing = not_measured(args.chapter, table)
    if missing:
        print(f"\nnot measured at this preset ({len(missing)}): {', '.join(missing)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
        print(f"\nwritten: {args.out}")
    return 0


__all__ = ["chapter_names", "chapter_module", "reproduce", "format_table", "not_measured", "main"]
