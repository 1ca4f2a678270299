#!/usr/bin/env python3
"""CI: the pinned install resolves to wheels on every Python the README names (resolution only, nothing is
installed; the tests themselves run on this machine's Python).

For each version in PYTHONS (and each patch boundary a ``python_full_version`` marker of constraints.txt draws
inside that range, e.g. 3.11.5), resolve what ``make install`` installs, the way it installs it, against the
package index with ``uv pip compile --python-version X --python-platform x86_64-manylinux_2_34``:

1. requirements.txt without its ``# no-deps`` lines, with constraints.txt, ``--only-binary :all:``;
2. each ``# no-deps`` line (compressai, torchattacks) alone with ``--no-deps`` and constraints.txt,
   ``--only-binary :all:`` too, except a package of SOURCE_BUILDS from the version it names on (compressai: no
   release has a wheel for Python 3.13 or newer; its C++ coder builds from the source distribution).

Exits 1 naming each version that does not resolve, with uv's reason. uv (pinned below) is installed into a
cache folder of its own on first use, or taken from $UV. Usage: python3 .ci/check_wheels.py [VERSION ...]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the Pythons the README names (its "Python 3.11 to 3.14"); tests/test_install.py checks they agree with the
#: README and with pyproject.toml's requires-python
PYTHONS = ("3.11", "3.12", "3.13", "3.14")
#: packages allowed to come as a source distribution (built at install time), from the Python version given on
SOURCE_BUILDS = {"compressai": "3.13"}
PLATFORM = "x86_64-manylinux_2_34"
UV_VERSION = "0.13.9"


def _v(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def targets(pythons=PYTHONS, constraints: Path = ROOT / "constraints.txt") -> list[str]:
    """Each named version (uv reads ``3.11`` as 3.11.0), plus the patch boundaries of the constraints' markers."""
    out = list(pythons)
    for m in re.finditer(r'python_full_version\s*[<>=!]+\s*"(\d+\.\d+\.\d+)"', constraints.read_text()):
        full = m[1]
        if ".".join(full.split(".")[:2]) in pythons and full not in out:
            out.append(full)
    return sorted(out, key=_v)


def split_requirements(path: Path = ROOT / "requirements.txt") -> tuple[list[str], list[str]]:
    """(requirement lines installed with their dependencies, lines marked ``# no-deps``), comments stripped."""
    deps, no_deps = [], []
    for line in path.read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            (no_deps if re.search(r"#\s*no-deps\b", line) else deps).append(spec)
    return deps, no_deps


def uv_binary() -> str:
    if os.environ.get("UV"):
        return os.environ["UV"]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "robustnb-ci" / f"uv-{UV_VERSION}"
    uv = cache / "bin" / "uv"
    if not uv.exists():
        subprocess.run([sys.executable, "-m", "venv", str(cache)], check=True)
        subprocess.run([str(cache / "bin" / "python"), "-m", "pip", "install", "-q", f"uv=={UV_VERSION}"], check=True)
    return str(uv)


def _compile(uv: str, reqs: list[str], python: str, tmp: Path, tag: str, *extra: str,
             offline: bool = False) -> tuple[bool, str]:
    """``uv pip compile`` of ``reqs`` for ``python``: (resolved, its output or error). ``offline``: from uv's cache
    alone, and online again when that fails (so a failure always comes from the index itself)."""
    src = tmp / f"{tag}-{python}.txt"
    src.write_text("\n".join(reqs) + "\n")
    cmd = [uv, "pip", "compile", str(src), "-c", str(ROOT / "constraints.txt"), "--python-version", python,
           "--python-platform", PLATFORM, "--no-header", "--no-annotate", "--quiet", *extra]
    p = subprocess.run(cmd + (["--offline"] if offline else []), capture_output=True, text=True)
    if offline and p.returncode != 0:
        p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode == 0, (p.stdout if p.returncode == 0 else p.stderr).strip()


def check(python: str, uv: str, tmp: Path, pool: ThreadPoolExecutor,
          offline: bool = False) -> tuple[bool, list[str], dict[str, str]]:
    """Resolve ``python``'s install (two uv runs, side by side); returns (ok, lines to print, {package: version})."""
    deps, no_deps = split_requirements()
    names = [re.match(r"[A-Za-z0-9_.\-]+", r)[0].lower() for r in no_deps]
    from_source = [n for n in names if n in SOURCE_BUILDS and _v(python) >= _v(SOURCE_BUILDS[n])]
    wheels_only = [n for n in names if n not in from_source]
    with_deps = pool.submit(_compile, uv, deps, python, tmp, "deps", "--only-binary", ":all:", offline=offline)
    alone = pool.submit(_compile, uv, no_deps, python, tmp, "no-deps", "--no-deps",
                        *(("--only-binary", ",".join(wheels_only)) if wheels_only else ()), offline=offline)
    (ok, out), (ok2, out2) = with_deps.result(), alone.result()
    lines = [f"{len(out.splitlines())} packages, all wheels" if ok else f"FAILED (with dependencies): {out}",
             (f"--no-deps: {', '.join(out2.split())}" + (f" ({', '.join(from_source)} from its source distribution:"
                                                          " no wheel for this Python)" if from_source else ""))
             if ok2 else f"FAILED (--no-deps: {', '.join(no_deps)}): {out2}"]
    pins = dict(line.split("==", 1) for line in out.splitlines() if "==" in line) if ok else {}
    return ok and ok2, lines, pins


def main(argv: list[str]) -> int:
    start = time.monotonic()
    versions = targets(tuple(argv) if argv else PYTHONS)
    uv = uv_binary()
    # The index is asked once per package page: the oldest and the newest version resolve online first (each
    # uv run revalidates every page it reads, ~13 s here), then the versions between them from the pages just
    # fetched (--offline, about 1 s), each asked online again if that fails.
    online = sorted({versions[0], versions[-1]}, key=_v)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=2 * len(versions)) as pool, \
            ThreadPoolExecutor(max_workers=len(versions)) as outer:
        done = dict(zip(online, outer.map(lambda v: check(v, uv, Path(tmp), pool), online)))
        rest = [v for v in versions if v not in done]
        done.update(zip(rest, outer.map(lambda v: check(v, uv, Path(tmp), pool, offline=True), rest)))
        results = [done[v] for v in versions]
    failed = []
    first = results[0][2]  # the oldest version's pins, to print what differs
    for version, (ok, lines, pins) in zip(versions, results):
        print(f"Python {version}: {'resolves' if ok else 'DOES NOT RESOLVE'}")
        for line in lines:
            print("   ", line.replace("\n", "\n    "))
        differ = sorted(n for n in set(pins) | set(first) if pins.get(n) != first.get(n))
        if ok and first and differ and pins is not first:
            print(f"    differs from Python {versions[0]}: " + ", ".join(
                f"{n} {first.get(n, '-')} -> {pins.get(n, '-')}" for n in differ))
        if not ok:
            failed.append(version)
    took = time.monotonic() - start
    if failed:
        print(f"check_wheels: the pinned install does not resolve for Python {', '.join(failed)} ({took:.0f} s)",
              file=sys.stderr)
        return 1
    print(f"check_wheels: the pinned install resolves for Python {', '.join(versions)} ({took:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
