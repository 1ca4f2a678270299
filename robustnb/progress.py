"""Progress a terminal can show while the book builds, without progress bars in the pages.

A chapter's kernel writes short lines ("training resnet: epoch 3/8", "entropy attack: batch 2/4") to
``$ROBUSTNB_CACHE/progress.log`` (:func:`note`, called by the training loop and the attack runner). The pages
never see them. ``make book`` pipes ``jupyter-book build`` through ``python -m robustnb.progress``, which passes
the build's own lines through and, every few seconds while a chapter executes, prints one status line
(:func:`robustnb.book.watch`)::

    [3/7] entropy_attacks  1:42 elapsed (measured cpu run: 1.5 min)  attacking: entropy attack 2/4

The chapter count and names come from ``_toc.yml``; the expected time from ``book/runtimes.json``, written by
``python -m robustnb.bench`` (absent: no estimate is shown).
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm as _auto_tqdm

from robustnb.config import cache_dir, executed_kernel

LOG_NAME = "progress.log"
MAX_BYTES = 1_000_000
_last: dict[str, float] = {}


def tqdm(iterable=None, *args, **kwargs):
    """``tqdm.auto``'s progress bar, except in a kernel that executes a notebook for nobody watching (a book
    build, papermill, nbval: :func:`robustnb.config.executed_kernel`), where it is disabled, so that no progress
    widget is saved into the pages; there :func:`note` (the progress line of ``make book``) reports progress."""
    if executed_kernel():
        kwargs["disable"] = True
    return _auto_tqdm(iterable, *args, **kwargs)


def log_path() -> Path:
    return cache_dir() / LOG_NAME


def note(message: str, every: float = 2.0, key: str | None = None) -> None:
    """Append ``message`` to the progress log (at most once per ``every`` seconds per ``key``). Never raises:
    progress must not break a chapter."""
    key = key or message.split(":")[0]
    now = time.monotonic()
    if every and now - _last.get(key, -1e9) < every:
        return
    _last[key] = now
    try:
        path = log_path()
        mode = "w" if path.exists() and path.stat().st_size > MAX_BYTES else "a"
        with open(path, mode) as f:
            f.write(f"{time.time():.3f} {message}\n")
    except OSError:
        pass
