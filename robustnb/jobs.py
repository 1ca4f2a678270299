"""Independent trainings as jobs: in this process, or as Ray tasks on a local Ray or a cluster.

A :class:`ModelJob` is one model trained through the model cache (:func:`robustnb.cache.cached`): its cache name
and spec (the key) and a function that builds, trains and caches it. :func:`run_jobs` trains the jobs whose
checkpoint is not cached yet. With ``Execution(backend="ray")`` they run as parallel Ray tasks, a job after the
jobs it ``needs`` (whose checkpoints travel to its worker); each trained checkpoint comes back through Ray's
object store into this process's own cache, so a cluster needs no shared file system. In this process
(``backend="local"``) nothing runs here: the caller's own loading trains each model when it asks for it, in
order. Either way the caller then loads every model from the cache as usual.

Used for the ensemble nodes (:mod:`robustnb.distributed`), the split models (:mod:`robustnb.split.zoo`) and the
compressed chapter's bases and attackers. Ray is imported only when the ``ray`` backend is used.

Every wait on Ray has a deadline: :func:`run_jobs` refuses a Ray with no CPU at once (its tasks would never
start), and fails when no job has finished within ``Execution.timeout_s``, naming the jobs still running or
waiting and the CPUs Ray has free (and cancels them).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from robustnb import cpus
from robustnb.cache import atomic_write, cache_key, cache_path
from robustnb.checks import check_number, one_or_more
from robustnb.config import ConfigError, ConfigTypeError, Run, cache_dir, data_dir, pick
from robustnb.progress import tqdm

BACKENDS = ("local", "ray")
#: the default deadline of a wait on Ray: the longest it waits without any job finishing (a day: the longest job
#: of the ``cpu`` book trains for well under two hours on one core; a paper-scale node may take hours)
TIMEOUT_S = 24 * 3600.0
#: where the workers of a Ray cluster cache what they train before sending it back (on their own machine, never
#: shared); a local Ray's workers use this process's cache
WORKER_CACHE = Path(tempfile.gettempdir()) / "robustnb-ray-worker-cache"


def _check_backend(backend: str) -> None:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ConfigError(f"Unknown backend {backend!r}: choose one of {', '.join(map(repr, BACKENDS))}.")


def _check_num_cpus(num_cpus, name: str = "num_cpus") -> int | None:
    """``None`` (the usable CPUs) or an integer >= 1: a local Ray with no CPU would never start a task."""
    return None if num_cpus is None else check_number(num_cpus, name, 1, None, integer=True, hi_open=True)


def _check_address(address) -> str | None:
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise ConfigError(f"address must be None ($RAY_ADDRESS, else a local Ray) or a Ray address such as "
                          f"'HEAD_IP:6379' or 'auto', got {address!r}.")
    return address


@dataclass(frozen=True)
class Execution:
    """Where independent jobs run, apart from what they compute (never part of a cache key): ``backend``
    (``local``: in this process, ``ray``: Ray tasks), the Ray ``address`` (None: ``$RAY_ADDRESS``, else a local
    Ray), ``num_cpus`` of a local Ray (None: the usable CPUs, else an integer >= 1), ``threads``, this process's
    torch threads while Ray workers train on the cores (so the two do not oversubscribe them; an integer >= 1),
    and ``timeout_s``, the deadline of a wait on Ray: the longest :func:`run_jobs` waits without any job
    finishing (:data:`TIMEOUT_S`). Every field is checked here: ``Execution("ray", num_cpus=0)`` is refused."""

    backend: str = "local"
    address: str | None = None
    num_cpus: int | None = None
    threads: int = 1
    timeout_s: float = TIMEOUT_S

    def __post_init__(self):
        _check_backend(self.backend)
        _check_address(self.address)
        object.__setattr__(self, "num_cpus", _check_num_cpus(self.num_cpus))
        object.__setattr__(self, "threads", check_number(self.threads, "threads", 1, None, integer=True,
                                                         hi_open=True))
        object.__setattr__(self, "timeout_s", check_number(self.timeout_s, "timeout_s", 0, None, lo_open=True,
                                                           hi_open=True))

    @classmethod
    def from_preset(cls, preset: str, backend: str | None = None, address: str | None = None) -> "Execution":
        """``smoke``: in-process; ``cpu`` and ``full``: Ray (a local instance, or the cluster at ``address``)."""
        return cls(backend=backend or pick(preset, smoke="local", cpu="ray", full="ray"), address=address)

    @classmethod
    def for_run(cls, run: Run, backend: str | None = None, address: str | None = None) -> "Execution":
        """Where a run's independent trainings go unless ``backend`` says otherwise: Ray tasks (a local Ray, or
        the cluster at ``address`` / ``$RAY_ADDRESS``) when the run trains on the CPU at ``cpu`` or ``full`` (two
        one-thread workers on two cores train 1.8x the images per second of one two-thread process: a split-model
        epoch took 72 s on each worker, side by side, against 64 s alone in the kernel, on the build machine); in
        this process at ``smoke`` (its checked outputs must not depend on Ray) and on a GPU (jobs train on the
        CPU, the GPU is this process's)."""
        if backend is None and run.device.type != "cpu":
            backend = "local"
        return cls.from_preset(run.preset, backend, address)


def as_execution(ex, run: Run | None = None) -> Execution:
    """``ex`` as an :class:`Execution`: one as it is, a backend name (``"local"``, ``"ray"``) as
    ``Execution(backend=ex)``, ``None`` as the run's default (:meth:`Execution.for_run`; without a run,
    ``Execution()``). Anything else is refused naming what is allowed (not an ``AttributeError`` later)."""
    if isinstance(ex, Execution):
        return ex
    if ex is None:
        return Execution.for_run(run) if run is not None else Execution()
    if isinstance(ex, str):
        _check_backend(ex)
        return Execution(backend=ex)
    raise ConfigTypeError(f"ex must be a robustnb.jobs.Execution (e.g. Execution('ray', num_cpus=2)), a backend name "
                          f"({', '.join(map(repr, BACKENDS))}) or None, got {type(ex).__name__}: {ex!r:.80}.")


@contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch threads in this process (``None``: unchanged), restoring the previous number
    after: while Ray workers train on every core, the driver keeps to ``Execution.threads``."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def ray_init(address: str | None = None, num_cpus: int | None = None):
    """Start (or join) Ray once: a local instance, or the cluster at ``address`` / ``$RAY_ADDRESS``.

    On a local Ray the workers share this process's cache (``ROBUSTNB_CACHE``: what they train and decode is
    there, and emptying it empties theirs, so a run from an empty cache trains everything); on a cluster they
    cache what they train in their own scratch folder (:data:`WORKER_CACHE`, on their machine). Either way results
    come back through Ray's object store; jobs carry their data, so a cluster needs no shared file system.
    Workers run one torch thread each with OpenMP's passive wait policy (:mod:`robustnb.cpus`).
    """
    _check_address(address)
    num_cpus = _check_num_cpus(num_cpus)
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    cache = WORKER_CACHE if address is not None else cache_dir()
    env = {"ROBUSTNB_CACHE": str(cache), "ROBUSTNB_DATA": str(data_dir()), **cpus.worker_env(1)}
    kw = dict(runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=False,
              logging_level="ERROR", configure_logging=True)
    if address is None:
        kw["num_cpus"] = num_cpus or cpus.usable_cpus()
    ray.init(address=address, **kw)
    return ray


@contextmanager
def ray_session(ex: Execution | None):
    """A block that may start Ray (:func:`run_jobs` on ``ex``): Ray is shut down after it when it was not
    running before, so idle workers do not keep their memory while the chapter goes on in this process."""
    ex = None if ex is None else as_execution(ex)
    ray = sys.modules.get("ray")
    started_here = ex is not None and ex.backend == "ray" and (ray is None or not ray.is_initialized())
    try:
        yield
    finally:
        if started_here:
            ray_shutdown()


def ray_shutdown() -> None:
    """Stop the Ray instance this process started (no-op when Ray is not running)."""
    try:
        import ray
    except ImportError:  # pragma: no cover
        return
    if ray.is_initialized():
        ray.shutdown()


@dataclass(frozen=True)
class ModelJob:
    """One model trained through the model cache: its cache ``name`` and ``spec`` (the key), ``train()`` that
    builds, trains and caches it (a :func:`robustnb.cache.cached` call) and returns the model, the jobs it
    ``needs`` (whose cached checkpoints it loads: a fine-tune needs its base), and its ``cost`` (for scheduling:
    the costliest first)."""

    name: str
    spec: dict
    train: Callable[[], nn.Module]
    needs: tuple["ModelJob", ...] = ()
    cost: float = 0.0

    def __post_init__(self):  # one job it needs, or several
        object.__setattr__(self, "needs", tuple(one_or_more(self.needs, "needs", ModelJob)))

    @property
    def key(self) -> str:
        return cache_key(self.spec)

    @property
    def path(self) -> Path:
        """Its checkpoint in this process's model cache."""
        return cache_path(self.name, self.spec)

    def is_cached(self) -> bool:
        return self.path.exists()


def adopt(job: ModelJob, blob: bytes) -> Path:
    """Put a checkpoint trained elsewhere into this process's model cache (atomically; a checkpoint already
    there is kept). Loading it through the cache verifies its spec and checksum."""
    path = job.path
    if not path.exists():
        atomic_write(path, lambda f: f.write(blob))
    return path


def _run_in_worker(job: ModelJob, *needed: bytes) -> bytes:
    """A Ray task: put the checkpoints ``job`` needs into the worker's own cache, train ``job`` there and return
    its checkpoint file's bytes (they travel back through Ray's object store)."""
    torch.set_num_threads(1)
    for need, blob in zip(job.needs, needed):
        adopt(need, blob)
    model = job.train()
    return Path(model.robustnb_info["path"]).read_bytes()


def _with_needs(jobs: Sequence[ModelJob] | ModelJob) -> list[ModelJob]:
    """The distinct jobs (by key) and everything they need, each after what it needs."""
    jobs = one_or_more(jobs, "jobs", ModelJob)
    out: dict[str, ModelJob] = {}

    def visit(job: ModelJob) -> None:
        for need in job.needs:
            visit(need)
        out.setdefault(job.key, job)

    for job in jobs:
        visit(job)
    return list(out.values())


def run_jobs(jobs: Sequence[ModelJob] | ModelJob, ex: Execution | str | None = None, desc: str = "models") -> int:
    """Train the jobs (and what they need) that are not in the model cache yet, as Ray tasks when
    ``ex.backend == "ray"`` (see the module docstring); returns how many ran. Locally (``ex`` None or
    ``backend="local"``) nothing runs here: loading each model through the cache trains it.

    On Ray, a cluster with no CPU is refused before anything is sent (every task takes one CPU), and the wait has
    a deadline: when no job finishes within ``ex.timeout_s`` seconds, the jobs left are cancelled and a
    ``TimeoutError`` names them and the CPUs Ray has free."""
    jobs = one_or_more(jobs, "jobs", ModelJob)
    ex = None if ex is None else as_execution(ex)
    if ex is None or ex.backend != "ray":
        return 0
    todo = [j for j in _with_needs(jobs) if not j.is_cached()]
    if not todo:
        return 0
    ray = ray_init(ex.address, ex.num_cpus)
    total = float(ray.cluster_resources().get("CPU", 0))
    if total < 1:
        raise ConfigError(f"Ray ({ex.address or os.environ.get('RAY_ADDRESS') or 'local'}) has {total:g} CPUs: the "
                          f"{len(todo)} {desc} to train ({_names(todo)}) take one CPU each and would never start. "
                          "Start its nodes with CPUs (ray start --num-cpus N) or use Execution('local').")
    remote = ray.remote(num_cpus=1)(_run_in_worker)
    depth: dict[str, int] = {}  # 0: needs nothing still to train; what a job needs is launched before it
    for job in todo:  # in dependency order
        depth[job.key] = 1 + max((depth[n.key] for n in job.needs if n.key in depth), default=-1)
    refs = {}
    for job in sorted(todo, key=lambda j: (depth[j.key], -j.cost)):  # the costliest first at each depth
        needed = [refs[n.key] if n.key in refs else ray.put(n.path.read_bytes()) for n in job.needs]
        refs[job.key] = remote.remote(job, *needed)  # Ray starts it once the checkpoints it needs exist
    pending = {refs[j.key]: j for j in todo}
    with tqdm(total=len(pending), desc=f"training {len(todo)} {desc} on Ray") as bar:
        last = time.monotonic()
        while pending:
            left = ex.timeout_s - (time.monotonic() - last)
            done, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, min(left, 60.0)))
            if not done:
                if time.monotonic() - last >= ex.timeout_s:
                    _give_up(ray, pending, ex, desc, len(todo))
                continue
            adopt(pending.pop(done[0]), ray.get(done[0]))  # re-raises a worker's error here
            last = time.monotonic()
            bar.update(1)
    return len(todo)


def _names(jobs, most: int = 6) -> str:
    names = [j.name for j in jobs]
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _give_up(ray, pending: dict, ex: Execution, desc: str, total: int) -> None:
    """Cancel the jobs left and raise a ``TimeoutError`` naming them (the deadline of :func:`run_jobs`)."""
    try:
        free = f"{float(ray.available_resources().get('CPU', 0)):g} of {float(ray.cluster_resources().get('CPU', 0)):g}"
    except Exception:  # pragma: no cover - Ray itself is what is stuck
        free = "an unknown number of"
    for ref in pending:
        try:
            ray.cancel(ref, force=True)
        except Exception:  # pragma: no cover
            pass
    jobs = list(pending.values())
    raise TimeoutError(f"Ray: no job finished in {ex.timeout_s:g} s; still running or waiting: {len(jobs)} of {total} "
                       f"{desc} ({_names(jobs)}), now cancelled. Ray has {free} CPUs free. If they are only slow, "
                       f"pass Execution(..., timeout_s=...) with a longer deadline.")


__all__ = ["BACKENDS", "TIMEOUT_S", "WORKER_CACHE", "Execution", "ModelJob", "adopt", "as_execution", "ray_init",
           "ray_session", "ray_shutdown", "run_jobs"]
