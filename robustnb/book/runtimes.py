"""The measured runtimes, in one file (``book/runtimes.json``), and what the book renders from it.

``python -m robustnb.bench --preset P --fresh-cache`` records each chapter's cold wall time and its kernel's peak
memory there (:func:`save`); a chapter not yet measured at a preset may carry an estimate instead, which is always
rendered as one. Every chapter's runtime box (a ``<details class="runtime-box">`` block in its first cell) and the
introduction's table print the numbers as marked spans, ``<span data-rt="rt_cpu_tv_defense">14 min</span>``
(wall time; ``mem_...`` peak memory, ``how_...`` how it was measured, ``rt_cpu_total`` the whole book), whose text
``python -m robustnb.book sync`` writes from the file (:func:`fill`, :func:`values`): plain Markdown and HTML, so
Jupyter, Colab, GitHub and the built book all show the numbers, and a test fails while a span is out of date.
``make book``'s progress line reads the expected times from it (:func:`expected`).

The file: ``{preset: {"seconds": {chapter: s}, "peak_mb": {chapter: MB}, "estimated_seconds": {chapter: s},
"longest_cell_seconds": {chapter: s}, "how": {chapter: text}}}``. The longest cell is what the book build's per-cell
execution timeout (``_config.yml``: ``execute: timeout``) must clear: :func:`cell_bounds` gives it per chapter, or
the chapter's whole time where no cell was recorded (a cell cannot take longer than its chapter), and a test keeps
the timeout at least :data:`TIMEOUT_MARGIN` times above every bound. ``how`` says how a chapter's time was taken
(which command, alone or beside what). ``rebuild_seconds`` holds whole-book rebuild times with everything cached,
by what changed (``unchanged``, ``prose``, ``docstring``, ``code``), and ``rebuild_how`` how they were taken: spans
``rb_<preset>_<what>`` and ``rbhow_<preset>``.
The entry ``gpu`` holds the ``cpu`` preset run on a lent GPU (``bash .ci/gpu_check.sh``: ``python -m robustnb
reproduce <chapter> --preset cpu --device cuda`` from an empty cache) and has three more fields, each by chapter:
``stopped_seconds`` (stopped unfinished after s), ``beside`` (the chapter that ran beside it, the script
pinning each to half of the cores) and ``notes`` (why a chapter was not run). Its spans are
``rt_gpu_<chapter>``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from robustnb.book.toc import ROOT, chapters

PATH = ROOT / "book" / "runtimes.json"
FIELDS = ("seconds", "peak_mb", "estimated_seconds", "stopped_seconds", "beside", "notes", "longest_cell_seconds",
          "how", "rebuild_seconds", "rebuild_how")
#: the book's per-cell execution timeout stays at least this many times above every chapter's longest cell
TIMEOUT_MARGIN = 2.0
NOT_MEASURED = "not measured"
#: what changed before a timed rebuild (``rebuild_seconds``' keys)
REBUILDS = ("unchanged", "prose", "docstring", "code")
#: a value of the file in a page or notebook: its name and its text, which :func:`fill` rewrites
SPAN = re.compile(r'<span data-rt="(?P<name>[a-z0-9_]+)">(?P<text>.*?)</span>', re.S)


def load(path: Path = PATH) -> dict:
    """The file's content; ``{}`` when it does not exist. A malformed file is an error naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from exc
    for preset, fields in data.items():
        bad = sorted(set(fields) - set(FIELDS)) if isinstance(fields, dict) else [repr(fields)]
        if bad:
            raise ValueError(f"{path}: preset {preset!r} has {bad}; allowed fields are {list(FIELDS)}")
        bad = sorted(set(fields.get("rebuild_seconds", {})) - set(REBUILDS))
        if bad:
            raise ValueError(f"{path}: preset {preset!r} has rebuild_seconds {bad}; allowed are {list(REBUILDS)}")
    return data


def expected(preset: str, path: Path = PATH) -> dict[str, float]:
    """Chapter -> expected cold seconds at ``preset``: measured where measured, else the estimate."""
    entry = load(path).get(preset, {})
    return {**entry.get("estimated_seconds", {}), **entry.get("seconds", {})}


def cell_bounds(preset: str, path: Path = PATH) -> dict[str, tuple[float, str]]:
    """Chapter -> (seconds, what) at ``preset``: the longest recorded cell (``what`` = ``"longest cell"``), else the
    chapter's measured or estimated time (``"whole chapter"``), an upper bound on any of its cells."""
    entry = load(path).get(preset, {})
    out = {chapter: (s, "whole chapter") for chapter, s in
           {**entry.get("estimated_seconds", {}), **entry.get("stopped_seconds", {}), **entry.get("seconds", {})}.items()}
    out.update({chapter: (s, "longest cell") for chapter, s in entry.get("longest_cell_seconds", {}).items()})
    return out


def save(rows: Iterable[tuple], preset: str, path: Path = PATH, how: str | None = None) -> Path:
    """Record measured (chapter, cold seconds, peak MB[, longest cell seconds]) rows at ``preset``, with ``how``
    they were taken (which command, alone or beside what; None: no text); a measurement replaces the chapter's
    estimate. Other chapters and presets are kept. ``python -m robustnb.book sync`` then writes the boxes."""
    data = load(path)
    entry = data.setdefault(preset, {})
    for chapter, seconds, peak_mb, *cell in rows:
        if how is not None:
            entry.setdefault("how", {})[chapter] = how
        else:
            entry.get("how", {}).pop(chapter, None)
        entry.setdefault("seconds", {})[chapter] = round(float(seconds), 1)
        entry.setdefault("peak_mb", {})[chapter] = round(float(peak_mb))
        if cell and cell[0] == cell[0]:  # not NaN
            entry.setdefault("longest_cell_seconds", {})[chapter] = round(float(cell[0]), 1)
        entry.get("estimated_seconds", {}).pop(chapter, None)
    for field in ("estimated_seconds", "how"):
        if not entry.get(field, True):
            del entry[field]
    Path(path).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return Path(path)


def measure(notebook: Path, preset: str, out: Path, env: dict | None = None, cwd: Path | None = None) -> dict:
    """Execute one chapter in a child process as ``python -m robustnb.bench`` times it (a fresh kernel under
    papermill, the executed copy written to ``out``) and return the child's measurement: ``seconds``, ``peak_mb``
    (the kernel's peak resident memory), ``longest_cell_s`` and ``error`` (empty when the chapter ran)."""
    proc = subprocess.run([sys.executable, "-m", "robustnb.bench", "--one", str(notebook), "--preset", preset,
                           "--out", str(out)], env=env, cwd=cwd, capture_output=True, text=True)
    line = (proc.stdout.strip().splitlines() or ["{}"])[-1]
    try:
        result = json.loads(line)
    except json.JSONDecodeError:
        result = {}
    if "seconds" not in result:
        result = {"seconds": float("nan"), "peak_mb": float("nan"), "error": proc.stderr[-2000:] or "no measurement"}
    return result


def estimate(chapter: str, preset: str, seconds: float, path: Path = PATH, how: str | None = None) -> Path:
    """Record an estimate of ``chapter``'s cold time at ``preset`` (rendered as one, "about ..."), with ``how`` it
    was made; a chapter measured there keeps its measurement."""
    data = load(path)
    entry = data.setdefault(preset, {})
    if chapter not in entry.get("seconds", {}):
        entry.setdefault("estimated_seconds", {})[chapter] = round(float(seconds), 1)
        if how is not None:
            entry.setdefault("how", {})[chapter] = how
    Path(path).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return Path(path)


def duration(seconds: float) -> str:
    """34 s, 5.7 min, 22 min, 2.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 10:
        return f"{minutes:.1f} min"
    if minutes < 90:
        return f"{minutes:.0f} min"
    return f"{seconds / 3600:.1f} h"


def memory(mb: float) -> str:
    return f"{mb / 1024:.1f} GB"


def _chapter_texts(entry: dict, chapter: str) -> tuple[str, str, float, bool]:
    """(wall time, memory, seconds counted in the total, whether an estimate) of one chapter at one preset."""
    measured, mem, estimated, stopped, beside, notes = (entry.get(field, {}) for field in FIELDS[:6])
    memory_text = memory(mem[chapter]) if chapter in mem else NOT_MEASURED
    next_to = f" (beside the {beside[chapter]} chapter, each on half of the cores)" if chapter in beside else ""
    if chapter in measured:
        return duration(measured[chapter]) + next_to, memory_text, measured[chapter], False
    if chapter in stopped:
        return f"not finished: stopped after {duration(stopped[chapter])}{next_to}", memory_text, 0.0, False
    if chapter in notes:
        return f"{NOT_MEASURED}: {notes[chapter]}", memory_text, 0.0, False
    if chapter in estimated:
        return f"about {duration(estimated[chapter])} (**estimate**, not yet measured)", memory_text, \
            estimated[chapter], True
    return NOT_MEASURED, memory_text, 0.0, False


def values(path: Path = PATH, names: list[str] | None = None) -> dict[str, str]:
    """The span texts (:data:`SPAN`): every chapter's wall time, peak memory and how it was measured at every preset
    in the file, the whole book's rebuild times, and the whole book's time (the sum of the chapters; "about" and
    the number of estimated rows when any is estimated)."""
    names = names if names is not None else [p.stem for p in chapters()]
    out = {}
    for preset, entry in load(path).items():
        total, estimates, missing = 0.0, 0, 0
        for chapter in names:
            wall, mem, seconds, estimate = _chapter_texts(entry, chapter)
            out[f"rt_{preset}_{chapter}"], out[f"mem_{preset}_{chapter}"] = wall, mem
            out[f"how_{preset}_{chapter}"] = entry.get("how", {}).get(chapter, "")
            total += seconds
            estimates += estimate
            missing += seconds == 0.0
        text = duration(total)
        if estimates:
            text = f"about {text} (the sum of the rows; {estimates} of them estimated)"
        if missing:
            done = len(names) - missing
            text += (f" for the {done} chapter{'s' if done != 1 else ''} measured "
                     f"({missing} chapter{'s' if missing > 1 else ''} not measured)")
        out[f"rt_{preset}_total"] = text
        for what, seconds in entry.get("rebuild_seconds", {}).items():
            out[f"rb_{preset}_{what}"] = duration(seconds)
        if "rebuild_how" in entry:
            out[f"rbhow_{preset}"] = entry["rebuild_how"]
    return out


def span(name: str, text: str = "") -> str:
    """A marked value (:data:`SPAN`) whose text :func:`fill` keeps up to date."""
    return f'<span data-rt="{name}">{text}</span>'


def fill(text: str, known: dict[str, str] | None = None) -> str:
    """``text`` with every marked value (:data:`SPAN`) rewritten from ``known`` (default: :func:`values`). A name
    the file does not give is an error naming it and the names of its kind that it does give."""
    known = values() if known is None else known

    def one(m):
        name = m["name"]
        if name not in known:
            kind = name.split("_", 1)[0]
            raise KeyError(f"unknown runtime value {name!r} in a runtime span; book/runtimes.json gives "
                           f"{sorted(k for k in known if k.startswith(kind + '_'))}")
        return span(name, known[name])

    return SPAN.sub(one, text)


#: the runtime box's look in the built book (a folded box, like the theme's dropdown admonitions)
STYLE = """
details.runtime-box { border: 1px solid #8fd19e; border-left: 4px solid #28a745; border-radius: 4px;
  padding: 0.3em 0.9em; margin: 1em 0; }
details.runtime-box > summary { cursor: pointer; font-weight: 600; }
details.runtime-box table { font-size: 0.85em; }
"""
