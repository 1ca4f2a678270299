"""``make book``'s progress line: the build's output passed through, with a status line every few seconds while a
chapter executes (which chapter, how long so far, how long it took when measured, the latest progress message)."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path

from robustnb.book import runtimes
from robustnb.book.toc import ROOT, chapters
from robustnb.progress import log_path


def _latest(path: Path, since: float) -> str:
    try:
        lines = path.read_text().splitlines()[-20:]
    except OSError:
        return ""
    for line in reversed(lines):
        stamp, _, msg = line.partition(" ")
        try:
            if float(stamp) >= since - 0.5:
                return msg
        except ValueError:
            continue
    return ""


def _expected(root: Path, preset: str) -> dict[str, float]:
    return runtimes.expected(preset, root / "book" / "runtimes.json")


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


def watch(stream=None, out=None, interval: float = 10.0) -> int:
    """Pass ``stream`` (the build's output) through to ``out`` and add a status line every ``interval``
    seconds while a chapter executes. Returns the number of chapters seen."""
    stream, out = stream or sys.stdin, out or sys.stdout
    names = [p.stem for p in chapters()]
    preset = os.environ.get("ROBUSTNB_PRESET") or "cpu"
    expected = _expected(ROOT, preset)
    state = {"chapter": None, "start": 0.0, "seen": 0}
    pattern = re.compile(r"book/(\w+)\.ipynb: Executing notebook")
    lock = threading.Lock()
    done = threading.Event()

    def status():
        name, start, i = state["chapter"], state["start"], state["seen"]  # i: executed so far, in build order
        exp = expected.get(name)
        hint = f" (expected: about {exp / 60:.1f} min at {preset})" if exp else ""
        latest = _latest(log_path(), start)
        return (f"[{i}/{len(names)}] {name}  {_clock(time.time() - start)} elapsed{hint}"
                + (f"  {latest}" if latest else ""))

    def ticker():
        while not done.wait(interval):
            with lock:
                if state["chapter"]:
                    print(status(), file=out, flush=True)

    t = threading.Thread(target=ticker, daemon=True)
    t.start()
    for line in stream:
        with lock:
            out.write(line)
            out.flush()
            m = pattern.search(line)
            if m:
                state.update(chapter=m.group(1), start=time.time(), seen=state["seen"] + 1)
                print(status(), file=out, flush=True)
    done.set()
    return state["seen"]
