"""How many CPUs this process may use, and an OpenMP set-up that survives a busy machine.

Imported by ``robustnb/__init__.py`` *before* torch, because OpenMP reads its settings once, when torch loads
it. Measured on the book's 2-core machine (``python -m robustnb.bench --contention``): a training loop with
torch's defaults ran 10-35x slower beside a 2-thread CPU load, not the 2x that half the cores would explain.
The cause is OpenMP's wait policy: between parallel regions, GNU OpenMP threads spin-wait for work; on
cores they share with another program a spinning thread burns the slice the other thread needed, and every
parallel region waits for its slowest thread. ``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep, which
removes the collapse but is not free alone. Measured 2026-12-04 on the build machine (4,096 images, bf16 +
channels-last, threads adapted, images/s, two runs each): alone, the small CNN trained 1,423-1,740 img/s passive
against 1,843-2,107 with a short spin (``GOMP_SPINCOUNT=100000``), the split ResNet 751-914 against 1,568-1,645;
beside a 2-thread load the two were about equal (CNN 630-705 vs 568-665, split ResNet 493-538 vs 506-613). Passive
waiting is kept until a cold book run with the short spin is measured (the runtime boxes were measured with it).

:func:`prepare` (run on import of robustnb) sets, unless the user already did:

* ``OMP_WAIT_POLICY=PASSIVE``;
* ``OMP_NUM_THREADS`` = :func:`usable_cpus`: the CPUs this process may run on (its affinity mask) capped by
  its container's CPU quota (cgroup ``cpu.max``), rather than the host's core count that torch would take.

When torch was imported before robustnb these settings come too late for OpenMP; :func:`late_note` says so
once (``robustnb.setup`` prints it).

The passive wait policy alone does not remove the collapse (measured: a split ResNet ran 6.4x slower beside a
2-thread load with 2 threads, passive or not): every parallel region still ends at a barrier, and with each of
our threads sharing a core with another program, one of them is descheduled at almost every barrier. One thread
has no barrier (1.9x slower beside the same load). So training adapts its thread count to the machine
(:func:`threads_now`, called by :func:`robustnb.train.fit` every few dozen batches when :func:`adaptive` is on):
the usable CPUs minus the other runnable tasks (``/proc/loadavg``), at least one. ``robustnb.setup`` turns it on
for the ``cpu`` and ``full`` presets; ``smoke`` keeps a fixed thread count, so that its outputs, which the tests
compare, do not depend on what else the machine runs. Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

#: environment variables this module sets when the user has not: name -> why
MANAGED = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")
_STATE = {"late": False, "adaptive": False}
LOADAVG = Path("/proc/loadavg")


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


def native_bf16(cpuinfo: Path = Path("/proc/cpuinfo"), platform: str = sys.platform) -> bool:
    """Whether this CPU computes bfloat16 natively: x86 ``avx512_bf16`` or ``amx_bf16``, Arm ``bf16`` (Linux's
    ``/proc/cpuinfo`` flags), Apple's ``hw.optional.arm.FEAT_BF16`` (macOS). Elsewhere torch emulates bf16 by
    converting to float32, which makes a bf16 autocast slower than plain float32, so the ``cpu`` preset trains in
    float32 there (:func:`robustnb.config.training_precision`)."""
    if platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return False
        return out == "1"
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


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


def set_adaptive(on: bool) -> None:
    """Let training adapt its thread count to the machine's load (:func:`threads_now`), or keep it fixed."""
    _STATE["adaptive"] = bool(on)


def adaptive() -> bool:
    return _STATE["adaptive"]


def _own_running(tasks: Path = Path("/proc/self/task")) -> int:
    """Threads of this process running or runnable now (state ``R`` in ``/proc/self/task/*/stat``)."""
    n = 0
    for stat in tasks.glob("*/stat"):
        try:
            n += stat.read_text().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            pass
    return n


def other_runnable(samples: int = 3, interval: float = 0.005, loadavg: Path = LOADAVG,
                   own: Callable[[], int] = _own_running) -> int | None:
    """How many tasks of other programs are running or waiting for a CPU right now: the median over a few
    readings of ``/proc/loadavg``'s running count minus this process's own running threads (an OpenMP worker
    still finishing its last region counts as ours, not as load); None where it cannot be read."""
    counts = []
    for i in range(samples):
        try:
            total = int(loadavg.read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        counts.append(total - max(1, own()))
        if i + 1 < samples:
            time.sleep(interval)
    return max(0, sorted(counts)[len(counts) // 2])


def threads_now(most: int | None = None, loadavg: Path = LOADAVG) -> int:
    """Threads to train with now: the usable CPUs (at most ``most``) minus the other runnable tasks, at least 1.
    Call it between parallel regions (idle OpenMP threads sleep under the passive policy, so they are not
    counted)."""
    cpus = usable_cpus() if most is None else min(most, usable_cpus())
    others = other_runnable(loadavg=loadavg)
    return cpus if others is None else max(1, min(cpus, usable_cpus() - others))


def late_note() -> str:
    """A warning when torch was imported before robustnb (the OpenMP settings could not apply), else ''."""
    if not _STATE["late"]:
        return ""
    return ("note: torch was imported before robustnb, so OpenMP's passive wait policy may not apply; training can "
            "slow down 10x or more when another program uses the CPU. Import robustnb first, or set "
            "OMP_WAIT_POLICY=PASSIVE before starting Python.")


__all__ = ["MANAGED", "prepare", "usable_cpus", "worker_env", "late_note", "set_adaptive", "adaptive",
           "other_runnable", "threads_now"]
