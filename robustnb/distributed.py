"""Distributed training of ensemble nodes: each node an independent, cached job, locally or on Ray.

A *node* is one classifier with its own data shard, architecture, optimizer, learning-rate schedule and
hyperparameters (:class:`NodeSpec`). Nodes are independent jobs: :func:`train_nodes` trains them through
the model cache (:func:`robustnb.cache.cached`), in-process (``backend="local"``) or as parallel Ray tasks
(``backend="ray"``: a local Ray instance by default, a cluster when ``address`` or ``$RAY_ADDRESS`` is
given). :func:`tune_nodes` tunes each node's learning rate, weight decay and (where its optimizer and schedule
use it) momentum on its own data, each trial training the node as it will be trained: with Ray Tune, all nodes in
one experiment with ASHA early stopping per node (``tuner="asha"``), or an in-process random search.
Ray is imported only when the ``ray`` backend is used (it is heavy and optional on a laptop).

How the nodes vote is :mod:`robustnb.ensembles`.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from robustnb.cache import cache_key, cache_path, cached, cached_json
from robustnb.checks import check_number, one_or_more
from robustnb.config import ConfigError
from robustnb.jobs import (BACKENDS, TIMEOUT_S, WORKER_CACHE, Execution, ModelJob, _check_backend,  # noqa: F401
                           _check_num_cpus, adopt, ray_init, ray_shutdown, run_jobs)
from robustnb.models import for_dataset
from robustnb.progress import tqdm
from robustnb.train import TrainConfig, accuracy, classifier_spec, fit

#: how a node's hyperparameters are searched: ``random`` (every trial to the end, in this process) or ``asha``
#: (Ray Tune with ASHA early stopping, on a local Ray or the cluster): a science setting, part of the tuning key
TUNERS = ("random", "asha")
#: defaults per optimizer when a node is not tuned: (lr, momentum, weight_decay)
OPTIMIZER_DEFAULTS = {"sgd": (0.05, 0.9, 5e-4), "adam": (2e-3, 0.0, 5e-4), "adamw": (2e-3, 0.0, 1e-2),
                      "rmsprop": (5e-4, 0.0, 5e-4)}
#: tuning ranges of the learning rate per optimizer (log-uniform)
LR_RANGES = {"sgd": (0.01, 0.2), "adam": (3e-4, 5e-3), "adamw": (3e-4, 5e-3), "rmsprop": (1e-4, 2e-3)}
MOMENTUM_RANGE, WEIGHT_DECAY_RANGE = (0.8, 0.95), (1e-5, 1e-3)
#: ASHA's rungs for ``tuner="asha"``: a node's trial reaching epoch 1, 2, 4, ... is stopped when its validation
#: accuracy is below the median of that node's trials already there. The authors' tuning (their ``train.py``)
#: shares the reduction factor 2 but reads validation loss with a grace period of 3 epochs over 100 samples per
#: phase: a grace period of 1 fits the book's few samples and short schedules (heterogeneous chapter, tuning text)
ASHA_GRACE_PERIOD, ASHA_REDUCTION_FACTOR = 1, 2
#: the share of one GPU a Ray Tune trial asks for when the run's device is a GPU (four small trials per GPU)
TRIAL_GPU_FRACTION = 0.25
#: the deadline of a trial's wait for its node's shard from Ray's object store (seconds)
SHARD_TIMEOUT_S = 600.0


# --------------------------------------------------------------------------------------------- nodes
@dataclass(frozen=True)
class NodeSpec:
    """How one node is built and trained; ``data`` is its shard (an ImageDataset)."""

    arch: str
    train: TrainConfig
    data: object = field(repr=False, compare=False)
    model_kw: tuple = ()  # e.g. (("width", 16),) for the small CNN
    label: str = ""

    def cache_name_spec(self) -> tuple[str, dict]:
        """The model-cache name and spec: the same spec as :func:`robustnb.train.train_classifier`."""
        d = self.data
        return f"{d.name.replace('/', '_')}-{self.arch}", classifier_spec(self.arch, d, self.train, dict(self.model_kw))

    @property
    def key(self) -> str:
        return cache_key(self.cache_name_spec()[1])

    def is_cached(self) -> bool:
        return cache_path(*self.cache_name_spec()).exists()


def default_train(optimizer: str, scheduler: str, epochs: int, batch_size: int, seed: int) -> TrainConfig:
    """A node's training config with the per-optimizer default hyperparameters."""
    if optimizer not in OPTIMIZER_DEFAULTS:
        raise ConfigError(f"Unknown optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZER_DEFAULTS)}.")
    lr, momentum, wd = OPTIMIZER_DEFAULTS[optimizer]
    return TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, momentum=momentum,
                       weight_decay=wd, scheduler=scheduler, seed=seed)


def train_node(node: NodeSpec, device="cpu", verbose: bool = False) -> nn.Module:
    """Train one node (or load it from the model cache)."""
    name, spec = node.cache_name_spec()
    return cached(name, spec, build=lambda: for_dataset(node.arch, node.data, **dict(node.model_kw)),
                  train=lambda m: fit(m, node.data, node.train, device=device, desc=f"node {node.label or node.arch}"),
                  device=device, verbose=verbose)


def node_job(node: NodeSpec, cost: float = 0.0) -> ModelJob:
    """A node as a :class:`robustnb.jobs.ModelJob` (trained by :func:`train_node`, on the CPU)."""
    name, spec = node.cache_name_spec()
    return ModelJob(name, spec, functools.partial(train_node, node), cost=cost)


def adopt_checkpoint(node: NodeSpec, blob: bytes) -> Path:
    """Put a node's checkpoint trained elsewhere into this process's model cache (:func:`robustnb.jobs.adopt`)."""
    return adopt(node_job(node), blob)


def training_cost(node: NodeSpec) -> float:
    """A node's training work in forward FLOPs (one image's forward pass x images x epochs), for scheduling."""
    x = node.data.images[:1].float()
    with torch.random.fork_rng(devices=[]):
        model = for_dataset(node.arch, node.data, **dict(node.model_kw)).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops()) * len(node.data) * node.train.epochs


def train_nodes(nodes: Sequence[NodeSpec], backend: str = "local", device="cpu", address: str | None = None,
                num_cpus: int | None = None) -> dict[str, nn.Module]:
    """Train every distinct node (by cache key) and return ``{key: model}``.

    ``backend="ray"`` trains the nodes that are not cached yet as parallel Ray tasks (one CPU each, the
    costliest first by :func:`training_cost`, so the workers finish together) on a local Ray or the cluster at
    ``address`` / ``$RAY_ADDRESS`` (:func:`robustnb.jobs.run_jobs`); each trained checkpoint comes back through
    the object store into this process's cache, and everything is then loaded from there; ``"local"`` trains
    them one after the other in this process.
    """
    _check_backend(backend)
    nodes = one_or_more(nodes, "nodes", NodeSpec)
    ex = Execution(backend, address, num_cpus)  # checks address and num_cpus whatever the backend
    unique = {}
    for node in nodes:
        unique.setdefault(node.key, node)
    if backend == "ray" and torch.device(device).type == "cpu":
        todo = [n for n in unique.values() if not n.is_cached()]
        run_jobs([node_job(n, training_cost(n)) for n in todo], ex, desc="nodes")
    out = {}
    for key, node in tqdm(unique.items(), desc="nodes", leave=False):
        out[key] = train_node(node, device)
    return out


# -------------------------------------------------------------------------------------------- tuning
def tuned_params(train: TrainConfig) -> tuple[str, ...]:
    """The hyperparameters tuned for a node with this optimizer and schedule (each one reaches training):

    ``lr`` and ``weight_decay`` always; ``momentum`` only where the optimizer uses it (SGD, RMSprop: Adam and
    AdamW have no momentum argument) and the schedule leaves it alone (one-cycle cycles momentum 0.95 -> 0.85
    itself and would overwrite a tuned value)."""
    uses_momentum = train.optimizer in ("sgd", "rmsprop") and train.scheduler != "onecycle"
    return ("lr", "momentum", "weight_decay") if uses_momentum else ("lr", "weight_decay")


def search_space(train: TrainConfig) -> dict:
    """The ranges searched for this node: ``{name: (low, high, scale)}`` (log scale for lr and weight decay)."""
    ranges = {"lr": (*LR_RANGES[train.optimizer], "log"), "momentum": (*MOMENTUM_RANGE, "linear"),
              "weight_decay": (*WEIGHT_DECAY_RANGE, "log")}
    return {k: ranges[k] for k in tuned_params(train)}


def _split(data, seed: int, frac: float = 0.8):
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=g)
    cut = max(1, int(frac * len(data)))
    return data.select(order[:cut]), data.select(order[cut:])


def _trial(config: dict, node: NodeSpec, report, device="cpu") -> float:
    """Train ``node`` with ``config``'s hyperparameters on 80% of its shard, exactly as it will train (its own
    optimizer, schedule over all its epochs, precision), on ``device`` (the run's: a trial trains where its node
    will); ``report`` gets the validation accuracy after every epoch (so ASHA can stop a poor trial early).
    Returns the last epoch's validation accuracy."""
    train, val = _split(node.data, node.train.seed)
    with torch.random.fork_rng(devices=[]):  # the trial's initial weights depend on the node's seed only
        torch.manual_seed(node.train.seed)
        model = for_dataset(node.arch, node.data, **dict(node.model_kw))
    hist = fit(model, train, tuned(node, config).train, device=device, eval_data=val, desc="trial",
               on_epoch=lambda row: report({"val_acc": row["eval_acc"], "epoch": row["epoch"]}))
    return float(hist["eval_acc"].iloc[-1]) if len(hist) else float("nan")


def _ray_trainable(config, nodes=None, device="cpu"):
    """One tuning trial on a Ray worker; ``nodes``: one object reference per node (a trial fetches its own
    node's shard, not every node's); ``device``: where the trial trains (the run's device)."""
    import ray
    from ray import tune

    torch.set_num_threads(1)
    trial = dict(config["trial"])
    try:  # a deadline on the one wait inside a trial: its node's shard from the object store
        node = ray.get(nodes[trial["node"]], timeout=SHARD_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise TimeoutError(f"tuning trial {trial}: node {trial['node']}'s data did not arrive from Ray's object "
                           f"store in {SHARD_TIMEOUT_S:g} s") from None
    _trial({k: v for k, v in trial.items() if k != "node"}, node, tune.report, device)


def trial_resources(device="cpu") -> dict:
    """What one Ray Tune trial asks for: one CPU, and :data:`TRIAL_GPU_FRACTION` of a GPU when ``device`` is a
    CUDA device (so trials share the GPU the run trains on instead of queueing for CPUs)."""
    if torch.device(device).type == "cuda":
        return {"cpu": 1, "gpu": TRIAL_GPU_FRACTION}
    return {"cpu": 1}


def _sample_space(space: dict, rng: np.random.Generator) -> dict:
    out = {}
    for name, (lo, hi, scale) in space.items():
        out[name] = float(np.exp(rng.uniform(np.log(lo), np.log(hi))) if scale == "log" else rng.uniform(lo, hi))
    return out


def trial_configs(node: NodeSpec, trials: int) -> list[dict]:
    """The ``trials`` hyperparameter samples of a node, drawn from its seed alone: each round re-draws them, and
    a node gets the same samples whichever other nodes are tuned beside it."""
    rng = np.random.default_rng(node.train.seed)
    space = search_space(node.train)
    return [_sample_space(space, rng) for _ in range(trials)]


def _tuning_spec(node: NodeSpec, trials: int, tuner: str) -> tuple[str, dict]:
    name, spec = node.cache_name_spec()
    asha = {"grace_period": ASHA_GRACE_PERIOD, "reduction_factor": ASHA_REDUCTION_FACTOR} if tuner == "asha" else {}
    return name, {"kind": "tuning", **spec, "trials": trials, "tuner": tuner, "protocol": "full-schedule",
                  "sampler": "node-seed", "asha": asha,
                  "space": {k: list(v) for k, v in search_space(node.train).items()}}


def tune_node(node: NodeSpec, trials: int = 4, tuner: str = "random", address: str | None = None,
              num_cpus: int | None = None, timeout_s: float = TIMEOUT_S, device="cpu") -> dict:
    """Tune one node (:func:`tune_nodes` with a single node)."""
    return tune_nodes([node], trials, tuner, address, num_cpus, timeout_s, device)[0]


def tune_nodes(nodes: Sequence[NodeSpec] | NodeSpec, trials: int = 4, tuner: str = "random",
               address: str | None = None, num_cpus: int | None = None, timeout_s: float = TIMEOUT_S,
               device="cpu") -> list[dict]:
    """Tune each node's hyperparameters (:func:`tuned_params`) on its own shard (80/20 split); each node's
    result is cached as JSON under its own spec. Returns one dict per node: the tuned values and ``val_acc``.

    Every trial trains the node as it will be trained (:func:`_trial`) with one of the node's
    :func:`trial_configs` (``trials`` random samples of :func:`search_space` drawn from the node's seed).
    ``asha``: ONE Ray Tune experiment for all the nodes not cached yet, on a local Ray or the cluster at
    ``address``, with ASHA early stopping applied to each node's trials separately (:func:`_per_node_asha`:
    grace period :data:`ASHA_GRACE_PERIOD` epoch, reduction factor :data:`ASHA_REDUCTION_FACTOR`; the authors
    use grace period 3 on validation loss, see :data:`ASHA_GRACE_PERIOD`). The costliest nodes' trials start first and every worker stays busy until the last trial
    (one small experiment per node left a worker idle during each node's last trial, and paid Tune's start-up
    every time). Parallel trials make ASHA's choices depend on timing; the cached result is the one used.
    ``random``: every trial runs to the end, in this process. ``timeout_s``: the deadline of the Ray Tune
    experiment (its ``time_budget_s``); one that runs out raises a ``TimeoutError`` naming the nodes.
    ``device``: where every trial trains (the run's device; with ``asha`` each trial asks Ray for
    :func:`trial_resources`); like the backend, it never enters the cached result's key.
    """
    if tuner not in TUNERS:
        raise ConfigError(f"Unknown tuner {tuner!r}: choose one of {', '.join(map(repr, TUNERS))}.")
    nodes = one_or_more(nodes, "nodes", NodeSpec)
    trials = check_number(trials, "trials", 1, None, integer=True, hi_open=True)
    Execution("ray" if tuner == "asha" else "local", address, num_cpus, timeout_s=timeout_s)  # checks them
    specs = [_tuning_spec(node, trials, tuner) for node in nodes]
    todo = {}
    for node, (name, tspec) in zip(nodes, specs):
        if not cache_path(name, tspec, "tuning", suffix=".json").exists():
            todo.setdefault(cache_key(tspec), node)
    found = (_tune_asha(list(todo.values()), trials, address, num_cpus, timeout_s, device)
             if todo and tuner == "asha" else {})
    out = []
    for node, (name, tspec) in zip(nodes, specs):
        key = cache_key(tspec)
        compute = (lambda k=key: found[k]) if key in found else (lambda n=node: _tune_random(n, trials, device))
        out.append(cached_json(name, tspec, compute, folder="tuning"))
    return out


def _tune_random(node: NodeSpec, trials: int, device="cpu") -> dict:
    results = []
    for config in tqdm(trial_configs(node, trials), desc=f"tuning {node.label or node.arch}", leave=False):
        results.append({**config, "val_acc": _trial(config, node, lambda _: None, device)})
    return max(results, key=lambda r: r["val_acc"])


def _per_node_asha(epochs: Sequence[int]):
    """A Ray Tune scheduler running one ASHA per node: trial ``config["trial"]["node"] == i`` is stopped or
    continued by node ``i``'s own ASHA (``max_t = epochs[i]``), so a node's trials are only ever compared with
    each other, as in a separate experiment per node."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    class PerNodeASHA(FIFOScheduler):
        def __init__(self):
            super().__init__()
            self.asha = [ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=e,
                                       grace_period=min(ASHA_GRACE_PERIOD, e),
                                       reduction_factor=ASHA_REDUCTION_FACTOR) for e in epochs]

        def _of(self, trial):
            return self.asha[trial.config["trial"]["node"]]

        def set_search_properties(self, metric, mode, **spec) -> bool:
            return True  # every node's ASHA already has its metric and mode

        def on_trial_add(self, controller, trial):
            self._of(trial).on_trial_add(controller, trial)

        def on_trial_result(self, controller, trial, result):
            return self._of(trial).on_trial_result(controller, trial, result)

        def on_trial_complete(self, controller, trial, result):
            self._of(trial).on_trial_complete(controller, trial, result)

        def on_trial_remove(self, controller, trial):
            self._of(trial).on_trial_remove(controller, trial)

    return PerNodeASHA()


def _tune_asha(nodes: list[NodeSpec], trials: int, address, num_cpus, timeout_s: float = TIMEOUT_S,
               device="cpu") -> dict[str, dict]:
    """One Ray Tune experiment over every trial of ``nodes``; returns ``{tuning key: best trial}``. Its deadline is
    ``timeout_s`` (Tune's ``time_budget_s``): a Ray with no CPU is refused at once, and an experiment stopped by
    the deadline raises a ``TimeoutError`` naming the nodes whose trials did not all finish."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the old reporter honours verbose=0
    ray = ray_init(address, num_cpus)
    from ray import tune

    labels = ", ".join(n.label or n.arch for n in nodes)
    if float(ray.cluster_resources().get("CPU", 0)) < 1:
        raise ConfigError(f"Ray has no CPU: the tuning trials of nodes {labels} take one CPU each and would never "
                          "start. Start its nodes with CPUs (ray start --num-cpus N) or tune with tuner='random'.")
    started = time.monotonic()

    order = sorted(range(len(nodes)), key=lambda i: -training_cost(nodes[i]))  # costliest first
    samples = [trial_configs(node, trials) for node in nodes]
    grid = [{"node": i, **samples[i][j]} for j in range(trials) for i in order]
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_ray_trainable, nodes=[ray.put(n) for n in nodes],
                                                 device=str(device)), trial_resources(device)),
        param_space={"trial": tune.grid_search(grid)},
        tune_config=tune.TuneConfig(num_samples=1, scheduler=_per_node_asha([n.train.epochs for n in nodes]),
                                    time_budget_s=timeout_s),
        run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="robustnb-tune-"), verbose=0, name="tune"),
    )
    results = tuner.fit()
    if time.monotonic() - started >= timeout_s:
        raise TimeoutError(f"Ray Tune: the tuning of nodes {labels} ({len(nodes) * trials} trials) did not finish "
                           f"within its deadline of {timeout_s:g} s (stopped). If it is only slow, pass a longer "
                           "timeout_s to tune_nodes.")
    best = {}
    for result in results:
        if result.error is not None:
            raise RuntimeError(f"a tuning trial failed: {result.error}") from result.error
        trial = dict(result.config["trial"])
        i = trial.pop("node")
        row = {**trial, "val_acc": float(result.metrics["val_acc"])}
        if i not in best or row["val_acc"] > best[i]["val_acc"]:
            best[i] = row
    return {cache_key(_tuning_spec(nodes[i], trials, "asha")[1]): b for i, b in best.items()}


def tuned(node: NodeSpec, params: dict) -> NodeSpec:
    """``node`` with its tuned hyperparameters (the ones in ``params`` that :func:`tuned_params` names)."""
    return replace(node, train=node.train.replace(**{k: params[k] for k in tuned_params(node.train) if k in params}))



def tuning_jobs(nodes: dict[str, list[NodeSpec]], shared: Sequence[str] = ("ENS",)) -> dict[str, list[NodeSpec]]:
    """The nodes of one instantiation grid ``{group: node specs}`` that are tuned: a ``shared`` group (ENS) tunes
    ONE configuration, on its node 0 (a shard of the size its nodes train on) with one node's budget, shared by
    all its nodes; every other group tunes each node on its own shard."""
    return {g: specs[:1] if g in shared else specs for g, specs in nodes.items()}


def apply_tuning(nodes: dict[str, list[NodeSpec]], best: dict[str, list[dict]],
                 shared: Sequence[str] = ("ENS",)) -> tuple[dict, list[dict]]:
    """The tuned specs ``{group: specs}`` (a ``shared`` group's one configuration given to every node of it) and
    the tuning rows (group as ``axis``, node, architecture, optimizer, scheduler, shard size, tuned values)."""
    out, rows = {}, []
    for axis, specs in nodes.items():
        values = best[axis] * len(specs) if axis in shared else best[axis]
        out[axis] = [tuned(node, b) for node, b in zip(specs, values)]
        rows += [{"axis": axis, "node": i, "arch": node.arch, "optimizer": node.train.optimizer,
                  "scheduler": node.train.scheduler, "shard_size": len(node.data), **b}
                 for i, (node, b) in enumerate(zip(specs, values)) if axis not in shared or i == 0]
    return out, rows


def tune_and_train(untuned: dict, trials: int, tuner: str, ex: Execution, device="cpu", also: Sequence[NodeSpec] = (),
                   shared: Sequence[str] = ("ENS",)) -> tuple[dict, dict, list[dict]]:
    """Tune and train every node of several instantiation grids: ``untuned`` maps a key (a round and N, say) to
    ``{group: untuned node specs}``. Every tuning (:func:`tuning_jobs`) is one :func:`tune_nodes` call (with
    ``asha``: one Ray Tune experiment, ASHA per node), then every tuned node and ``also`` (the attacker's
    surrogates) train in one pool, so that the workers stay busy until the last model is done.

    Returns ``(tuned, models, rows)``: ``tuned[key][group]`` the tuned specs, ``models`` the nodes only
    (``{node key: model}``; ``also`` is loaded by its own caller) and the tuning rows with their ``key``."""
    jobs = [(key, g, node) for key, nodes in untuned.items() for g, specs in tuning_jobs(nodes, shared).items()
            for node in specs]
    values = tune_nodes([node for *_, node in jobs], trials, tuner, ex.address, ex.num_cpus, device=device)
    best: dict = {}
    for (key, g, _), v in zip(jobs, values):
        best.setdefault(key, {}).setdefault(g, []).append(v)
    out, rows = {}, []
    for key, nodes in untuned.items():
        out[key], r = apply_tuning(nodes, best[key], shared)
        rows += [{"key": key, **row} for row in r]
    flat = [node for by_group in out.values() for ns in by_group.values() for node in ns]
    trained = train_nodes([*flat, *also], ex.backend, device, ex.address, ex.num_cpus)
    return out, {n.key: trained[n.key] for n in flat}, rows

def node_table(nodes: dict[str, NodeSpec]) -> pd.DataFrame:
    """One row per node: label, architecture, optimizer, scheduler, hyperparameters, shard size."""
    return pd.DataFrame([{"node": n.label, "arch": n.arch, **{k: v for k, v in asdict(n.train).items()
                                                             if k in ("optimizer", "scheduler", "lr", "momentum",
                                                                      "weight_decay", "epochs", "seed")},
                          "shard_size": len(n.data), "key": k} for k, n in nodes.items()])


__all__ = ["BACKENDS", "TUNERS", "Execution", "NodeSpec", "default_train", "adopt_checkpoint", "WORKER_CACHE",
           "node_job", "train_node", "train_nodes", "training_cost", "tune_node", "tune_nodes", "trial_configs",
           "trial_resources", "TRIAL_GPU_FRACTION",
           "tuned", "tuned_params",
           "search_space", "ray_init", "ray_shutdown", "node_table"]
