"""How many CPUs this process may use, and an OpenMP set-up that survives a busy machine.

Imported by ``robustnb/__init__.py`` *before* torch, because OpenMP reads its settings once, when torch loads
it. Measured on the book's 2-core machine (``python -m robustnb.bench --contention``): a training loop with
torch's defaults ran 10-35x slower beside a 2-thread CPU load, not the 2x that half the cores would explain.
The cause is OpenMP's wait policy: between parallel regions, GNU OpenMP threads spin-wait for work; on
cores they share with another program a spinning thread burns the slice the other thread needed, and every
parallel region waits for its slowest thread. ``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep, which
costs nothing measurable alone and removes the collapse.

:func:`prepare` (run on import of robustnb) sets, unless the user already did:

* ``OMP_WAIT_POLICY=PASSIVE``;
* ``OMP_NUM_THREADS`` = :func:`usable_cpus`: the CPUs this process may run on (its affinity mask) capped by
  its container's CPU quota (cgroup ``cpu.max``), rather than the host's core count that torch would take.

When torch was imported before robustnb these settings come too late for OpenMP; :func:`late_note` says so
once (``robustnb.setup`` prints it). Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

#: environment variables this module sets when the user has not: name -> why
MANAGED = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")
_STATE = {"late": False}


def _quota_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """The container's CPU quota as a whole number of CPUs (cgroup v2 ``cpu.max`` "quota period"), or None."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def usable_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may actually use: its affinity mask, capped by a container CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    quota = _quota_cpus(cpu_max)
    return max(1, min(n, quota) if quota else n)


def worker_env(threads: int = 1) -> dict[str, str]:
    """Environment of a worker process (a Ray task) that runs beside others on the same cores."""
    return {"OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}


def prepare(environ=os.environ, modules=sys.modules) -> dict[str, str]:
    """Set the OpenMP environment before torch loads (the values the user set are kept); returns what was set."""
    wanted = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(usable_cpus())}
    done = {k: v for k, v in wanted.items() if not environ.get(k)}
    environ.update(done)
    _STATE["late"] = _STATE["late"] or ("torch" in modules and bool(done))
    return done


def late_note() -> str:
    """A warning when torch was imported before robustnb (the OpenMP settings could not apply), else ''."""
    if not _STATE["late"]:
        return ""
    return ("note: torch was imported before robustnb, so OpenMP's passive wait policy may not apply; training can "
            "slow down 10x or more when another program uses the CPU. Import robustnb first, or set "
            "OMP_WAIT_POLICY=PASSIVE before starting Python.")


__all__ = ["MANAGED", "prepare", "usable_cpus", "worker_env", "late_note"]
