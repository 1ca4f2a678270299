"""Chapter ``book/heterogeneous_ensembles.ipynb``: heterogeneous distributed learning against transfer attacks
(Andreina, Zimmer, Karame), on the authors' protocol (``RUB-InfSec/distributed_learning_robustness``).

An *instantiation* (an axis of heterogeneity, or none) with N nodes splits one node pool into N disjoint shards
of ``pool / N`` images (more nodes, less data each, as in the paper) and trains one node per shard:

=================  ========================================================================
``ENS``            the authors' baseline: N identical nodes, the round's *master configuration* (architecture,
                   optimizer and schedule drawn per round from the preset's lists, :func:`master`, as each of the
                   authors' rounds has its own in ``utils/master_configs.json``), that all train with ONE set of
                   hyperparameters, tuned once on a shard of the size they train on with the same budget as one
                   node's tuning (the authors' ``config = deepcopy(master_config)``). N = 1: the *single model*.
``tuned HP``       each node's lr / momentum / weight decay tuned on its own shard
``data non-IID``   tuned HP, on Dirichlet(0.9) non-IID shards (the authors' ``ensemble_diverse`` on their
                   Dirichlet split)
``architecture``   tuned HP, node 0 with the master's architecture, nodes 1, 2, ... with the others in turn
``optimizer``      the same with the optimizer (each node tuned in its optimizer's range)
``scheduler``      the same with the learning-rate schedule
``all``            every axis at once
=================  ========================================================================

Every instantiation is the master configuration except on its axis, so node 0 of every IID instantiation is ENS's
node 0 (one model, one tuning), as the authors' master configuration is their node 0.

So each axis is judged against ENS (the paper's comparison: what heterogeneity + independent tuning adds to
identical nodes) and against tuned HP (what the axis adds on top of tuning); the paper's "lesser role" compares
the second with what tuning adds over ENS. A tuning trial trains the node as it will train (its optimizer,
schedule and epochs; :func:`robustnb.distributed.tune_nodes`), and every tuned value reaches training. The tuning
is far lighter than the authors' (Ray Tune's ASHA on the validation loss, grace period 3, over 100 samples in each
of two phases, then 200 epochs of training): a few random samples per node drawn at once, scored on validation
accuracy, with ASHA (grace period 1 epoch, reduction factor 2) on Ray.

Each training seed is an independent **round**, as the authors' rounds: a new master configuration is drawn, the
pool is split into shards afresh, every node is tuned afresh and trained afresh; the verdicts use a t interval over
rounds of the per-round difference. Robust accuracy is the authors' metric: every vote of an instantiation is
scored on the attacked images whose clean versions the instantiation's soft vote classifies correctly
(:func:`clean_correct_masks`); the book adds a sensitivity reading on the round's shared mask, the images every
instantiation of the round gets right (:func:`mask_sensitivity`). The attacker's surrogates, the attacked images and the node pool itself stay fixed across rounds
(the attacker is not what the paper re-draws, and fixing it keeps the rounds paired). The attacker trains its
surrogates on a part of the training set that no node sees, crafts MI-FGSM / SAM / CSE / CWA examples on them
once per (attack, epsilon), and every instantiation is evaluated on the same examples.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from robustnb import data as rdata
from robustnb import distributed as D
from robustnb import ensembles as E
from robustnb import plots, stats
from robustnb.attacks import perturb
from robustnb.cache import experiment
from robustnb.config import ConfigError, Run, in_colab, pick
from robustnb.jobs import as_execution, torch_threads
from robustnb.mechanisms import make, names
from robustnb.progress import tqdm
from robustnb.train import TrainConfig, predict, speed_for, speed_options

AXES = ("ENS", "tuned HP", "data non-IID", "architecture", "optimizer", "scheduler", "all")
HEADLINE_ATTACK = "cwa"
CHAPTER = "heterogeneous_ensembles"

# ------------------------------------------------------------------------------------ the paper's claims
_SOURCE = "abstract and evaluation on CIFAR-10 (../shared/papers summary: key results)"
_MEASURE = ("CWA at 8/255, robust accuracy on each instantiation's clean-correct images (those its soft vote "
            "classifies correctly when clean, the authors' metric; 1 - attack success rate), majority vote, N = {n} (the preset's N nearest below if it has no {n}); "
            "{what}; one value per round (shards, tuning and training re-drawn), t interval over rounds")
_UP_TO = ("up to +40% robust accuracy over ENS against CWA (the paper's best case over its settings: judged for "
          "direction only)")
_AXIS_SLUG = {"tuned HP": "tuned_hp", "data non-IID": "non_iid", "architecture": "arch", "optimizer": "optimizer",
              "scheduler": "scheduler", "all": "all"}
_LESSER = ("architecture", "optimizer", "scheduler")  # the paper's "lesser role" axes

#: The paper's world, in which every claim's "right" world is built (``world_claims``): under
#: CWA at N = 5, tuning each node gains WORLD_TUNING over ENS and each axis adds WORLD_ON_TOP[axis] on top of tuning
#: (every axis instantiation tunes its nodes): architecture, optimizer and scheduler +3 to +4 points, the lesser
#: role; at N = 3 every gain is WORLD_SCALE[3] of its N = 5 size (the gains grow with N); every instantiation costs
#: WORLD_CLEAN_COST of clean accuracy.
WORLD_TUNING = 0.10
WORLD_ON_TOP = {"ENS": -WORLD_TUNING, "tuned HP": 0.0, "data non-IID": 0.03, "architecture": 0.03,
                "optimizer": 0.035, "scheduler": 0.04, "all": 0.08}
WORLD_SCALE = {3: 0.7, 5: 1.0}
WORLD_CLEAN_COST = 0.01


def _paper_gain(axis: str, n: int) -> float:
    """``axis``'s robust-accuracy gain over ENS at N = ``n`` in the paper's world."""
    return WORLD_SCALE.get(n, 1.0) * (WORLD_TUNING + WORLD_ON_TOP[axis])


@dataclass(frozen=True)
class Target:
    """What a claim's per-round value is, at N = ``n`` under CWA (``g(a, b)``: robust accuracy of instantiation
    ``a`` minus ``b`` in the same round, on the clean-correct images):

    ``gain``        ``g(axis, versus)``;
    ``lesser``      ``g(axis, tuned HP) - g(tuned HP, ENS)``: what the axis adds on top of tuning minus what
                    tuning adds over ENS (below 0: the axis plays the lesser role);
    ``largest``     ``g(tuned HP, ENS)`` minus the largest of ``g(axis, tuned HP)`` over the ``_LESSER`` axes
                    (above 0: tuning is the largest driver; minus the largest of the three ``lesser`` values);
    ``growth``      ``g(axis, ENS)`` at N = ``n`` minus at N = ``n_small``;
    ``clean_cost``  ``versus`` minus ``axis`` on clean accuracy.
    """

    kind: str
    axis: str
    n: int
    versus: str = "ENS"
    n_small: int | None = None

    @property
    def compared(self) -> tuple[str, ...]:
        """The instantiations whose robust accuracies the value compares (for the fewest clean-correct images)."""
        return {"gain": (self.axis, self.versus), "lesser": (self.axis, "tuned HP", "ENS"),
                "largest": (*_LESSER, "tuned HP", "ENS"), "growth": (self.axis, "ENS")}.get(self.kind, ())


def _gain_claim(axis: str, n: int) -> tuple[stats.PaperClaim, Target]:
    what = "every axis at once" if axis == "all" else f"the {axis} axis"
    return stats.PaperClaim(
        claim=f"heterogeneity ({what}, with per-node tuning) raises robust accuracy over ENS under CWA, N = {n}",
        paper=_UP_TO, source=_SOURCE, measure=_MEASURE.format(n=n, what=f"{axis} minus ENS"), form="increase",
        unit=" points", role="primary" if (axis, n) == ("all", 5) else "exploratory",
        worlds=(_paper_gain(axis, n), -0.10)), Target("gain", axis, n)


def _lesser_claim(axis: str, n: int) -> tuple[stats.PaperClaim, Target]:
    """The paper's "lesser role": what the axis adds on top of tuning is smaller than what tuning adds over ENS.
    Wrong world: the axis adds +15 points on top of tuning's +10."""
    return stats.PaperClaim(
        claim=f"the {axis} axis adds less robustness on top of tuning than tuning adds over ENS, N = {n}",
        paper="diversity in architecture / optimizer / scheduler plays a lesser role than independently tuned "
              "hyperparameters", source=_SOURCE, form="less", unit=" points",
        measure=_MEASURE.format(n=n, what=f"({axis} minus tuned HP) minus (tuned HP minus ENS) in the same round"),
        role="primary" if n == 5 else "exploratory",
        worlds=(_paper_gain(axis, n) - 2 * _paper_gain("tuned HP", n), 0.05)), Target("lesser", axis, n)


def _beyond_tuning_claim(axis: str, n: int) -> tuple[stats.PaperClaim, Target]:
    """What an axis adds on top of per-node tuning (every axis instantiation tunes its nodes). The paper compares
    every instantiation with ENS and gives no size for this: exploratory for its axes (non-IID data is the authors'
    too: Dirichlet(0.9) shards in their ``ensemble_diverse`` runs), the book's own question for the full mix.
    Worlds: the axis adds 8 points on top of tuning, or costs 5."""
    what = {"all": "the full mix", "data non-IID": "non-IID data"}.get(axis, f"the {axis} axis")
    note = ""
    if axis == "data non-IID":
        note = "; non-IID shards are the authors' flavour too (Dirichlet(0.9), their ensemble_diverse runs)"
    elif axis in _LESSER:
        note = "; its lesser role for this axis is a size, tested by the 'adds less than tuning' rows"
    return stats.PaperClaim(
        claim=f"{what} adds robustness on top of per-node tuning, N = {n}",
        paper="not stated in the summary (the paper compares every instantiation with ENS)" + note,
        source=_SOURCE, measure=_MEASURE.format(n=n, what=f"{axis} minus tuned HP"), form="greater",
        unit=" points", role="addition" if axis == "all" else "exploratory",
        worlds=(0.08, -0.05)), Target("gain", axis, n, versus="tuned HP")


def _declare() -> tuple[dict[str, stats.PaperClaim], dict[str, Target]]:
    """The claims at N = 5, every axis; at N = 3 only the full mix's gain over ENS, the other end of the growth
    claim (the cpu preset runs only ENS and the full mix at N = 3: :attr:`HeteroConfig.small_axes`)."""
    pairs = {}
    for axis, slug in _AXIS_SLUG.items():
        pairs[f"he_gain_{slug}_n5"] = _gain_claim(axis, 5)
    pairs["he_gain_all_n3"] = _gain_claim("all", 3)
    pairs["he_growth_all_n5"] = (stats.PaperClaim(
        claim="the gain of heterogeneity (the full mix) over ENS grows with the number of nodes (N = 5 vs N = 3)",
        paper="the robustness gains grow with the number of nodes N", source=_SOURCE, form="greater",
        unit=" points", role="primary",
        measure=_MEASURE.format(n=5, what="the full mix's gain over ENS at N = 5 minus at N = 3"),
        worlds=(_paper_gain("all", 5) - _paper_gain("all", 3), -0.05)), Target("growth", "all", 5, n_small=3))
    for axis in _LESSER:
        pairs[f"he_lesser_{_AXIS_SLUG[axis]}_n5"] = _lesser_claim(axis, 5)
    pairs["he_tuned_hp_largest_n5"] = (stats.PaperClaim(
        claim="independently tuned hyperparameters are the largest driver: tuning's gain over ENS exceeds what each "
              "of architecture, optimizer and scheduler adds on top of tuning, N = 5",
        paper="the gains grow with independently tuned hyperparameters; the other axes play a lesser role (the "
              "three 'adds less than tuning' rows at N = 5 at once: shown, not counted twice)",
        source=_SOURCE, form="greater", unit=" points",
        measure=_MEASURE.format(n=5, what="(tuned HP minus ENS) minus the largest of (architecture / optimizer / "
                                          "scheduler minus tuned HP) in the same round"),
        worlds=(2 * _paper_gain("tuned HP", 5) - max(_paper_gain(a, 5) for a in _LESSER), -0.05)),
        Target("largest", "tuned HP", 5))
    for axis, slug in _AXIS_SLUG.items():
        if axis != "tuned HP":
            pairs[f"he_vs_tuned_{slug}_n5"] = _beyond_tuning_claim(axis, 5)
    for axis in ("all", "tuned HP"):
        pairs[f"he_clean_cost_{_AXIS_SLUG[axis]}_n5"] = (stats.PaperClaim(
            claim=f"the robustness of {'every axis at once' if axis == 'all' else 'tuned HP'} costs little clean "
                  "accuracy, N = 5",
            paper="a minimal impact on clean accuracy (no figure in the summary: the 5-point bound is the book's)",
            source=_SOURCE, form="at_most", paper_value=0.05, unit=" points",
            role="primary" if axis == "all" else "exploratory", worlds=(WORLD_CLEAN_COST, 0.10),
            measure=f"ENS clean accuracy minus {axis}'s at N = 5 (test subset, majority vote), one value per round, "
                    "t interval over rounds"), Target("clean_cost", axis, 5))
    return {k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()}


#: claim id -> the claim (the one place where the paper's figures are typed, with QUOTED_NUMBERS)
PAPER_CLAIMS, TARGETS = _declare()
#: the papers' figures and the book's fixed settings that the prose may type
QUOTED_NUMBERS = ("+40", "+40%", "40%", "5 points", "0.9", "75", "20%", "95%", "80/20", "80%",
                  "10 points")  # power: 80% (stats.POWER), 10 points where the paper states no size


#: the cpu preset's rounds: one round (tuning and training every instantiation) is sized for about 8 minutes on 2
#: cores (:func:`one_round` times one), so that the chapter stays near an hour; the claims that compare three or
#: four instantiations per round need about WORLD_ROUNDS rounds (the constructed worlds) and are not decided here
CPU_ROUNDS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class HeteroConfig:
    dataset: str
    n_values: tuple[int, ...]
    pool: int  # the nodes' images; N nodes get pool / N each
    n_attacker: int
    n_test: int
    n_attack: int
    epochs: int
    node_width: int
    archs: tuple[str, ...]
    optimizers: tuple[str, ...]
    schedulers: tuple[str, ...]
    surrogates: tuple[tuple[str, int], ...]  # (arch, width); width is used by the small CNN only
    surrogate_epochs: int
    attacks: tuple[str, ...]
    eps_255: float
    sweep_eps_255: tuple[float, ...]
    attack_steps: int
    tune_trials: int  # random samples per tuning (every trial trains the node's full schedule; ASHA on Ray)
    axes: tuple[str, ...] = AXES
    # the axes that also run at the N between 1 and the largest (:meth:`axes_at`): every claim but the growth one
    # reads N = 5, and the growth claim reads the full mix and ENS at N = 3
    small_axes: tuple[str, ...] = AXES
    votes: tuple[str, ...] = ("hard", "soft", "weighted")
    tuner: str = "random"  # robustnb.distributed.TUNERS: random search, or ASHA early stopping (Ray Tune)
    dirichlet_alpha: float = 0.9
    batch_size: int = 64
    seed: int = 0
    seeds: tuple[int, ...] = (0,)  # rounds: each re-draws shards, tuning and training (verdicts: t over rounds)
    speed: tuple[tuple[str, object], ...] = ()  # train.speed_options of the preset, for nodes and surrogates

    def __post_init__(self):
        unknown = [a for a in self.axes if a not in AXES]
        if unknown:
            raise ConfigError(f"Unknown axes {unknown}: choose from {AXES}.")
        bad = [a for a in self.attacks if a not in names("transfer attack")]
        if bad:
            raise ConfigError(f"Unknown attacks {bad}: choose from {names('transfer attack')}.")
        if self.tuner not in D.TUNERS:
            raise ConfigError(f"Unknown tuner {self.tuner!r}: choose one of {D.TUNERS}.")
        if self.dataset not in ("cifar10", "fashion_mnist"):
            raise ConfigError(f"Unknown dataset {self.dataset!r}: choose 'cifar10' or 'fashion_mnist'.")
        if "ENS" not in self.axes:
            raise ConfigError("the axes must include 'ENS' (the baseline and the single model).")
        unknown = [a for a in self.small_axes if a not in AXES]
        if unknown or "ENS" not in self.small_axes:
            raise ConfigError(f"small_axes must include 'ENS' and name axes of {AXES}, got {self.small_axes!r}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct training seeds, got {self.seeds!r}.")
        if self.pool < 10 * max(self.n_values):
            raise ConfigError(f"pool={self.pool} is too small for N = {max(self.n_values)} nodes: give each node at "
                              "least 10 images.")

    @property
    def n_max(self) -> int:
        return max(self.n_values)

    def axes_at(self, n: int) -> tuple[str, ...]:
        """The instantiations run with ``n`` nodes: ENS alone at N = 1 (the single model), every axis at the
        largest N, and the axes in both ``axes`` and ``small_axes`` in between."""
        if n == 1:
            return ("ENS",)
        return self.axes if n == self.n_max else tuple(a for a in self.axes if a in self.small_axes)

    @classmethod
    def from_preset(cls, preset: str, seed: int = 0, dataset: str = "cifar10", **overrides) -> "HeteroConfig":
        """smoke: N in {1, 2} over a 400-image pool, in-process; cpu: N in {1, 3, 5} over 12,000 images, bfloat16
        + channels-last, Ray; full: N up to 10 over 40,000 images, ResNet-18 family, Ray."""
        cfg = cls(
            dataset=dataset,
            n_values=pick(preset, smoke=(1, 2), cpu=(1, 3, 5), full=(1, 3, 5, 7, 10)),
            # cpu: at N = 3 only what the growth claim reads (ENS and the full mix), a third of a round's training
            small_axes=pick(preset, smoke=AXES, cpu=("ENS", "all"), full=AXES),
            # cpu: N = 5 nodes of 2,400 images, N = 3 of 4,000, the single model on 12,000
            pool=pick(preset, smoke=400, cpu=12_000, full=40_000),
            n_attacker=pick(preset, smoke=300, cpu=4_000, full=10_000),
            n_test=pick(preset, smoke=200, cpu=2_000, full=10_000),
            n_attack=pick(preset, smoke=32, cpu=256, full=1_000),
            # cpu: 4 epochs and 2 trials per tuning, so that a round (26 tunings, 32 nodes: one_round) fits in
            # 8 minutes on 2 cores
            epochs=pick(preset, smoke=1, cpu=4, full=30),
            node_width=pick(preset, smoke=8, cpu=16, full=32),
            # cpu: three families sized for 2 cores (VGG-11 and MobileNetV2 trained at a ninth of the small CNN's
            # images per second and took most of a round's tuning); mobilenet_v2_x0_5 is as fast but learned
            # far less from a 2,400-image shard in a few epochs, so it is left out
            archs=pick(preset, smoke=("cnn", "resnet10_w16"), cpu=("cnn", "vgg11_w16", "resnet10_w16"),
                       full=("resnet18", "mobilenet_v2", "vgg11", "regnet_x_400mf", "cnn")),
            optimizers=("sgd", "adam", "adamw", "rmsprop"),
            schedulers=("cosine", "step", "onecycle"),
            surrogates=pick(preset, smoke=(("cnn", 8), ("cnn", 12)), cpu=(("cnn", 24), ("vgg11", 0)),
                            full=(("resnet34", 0), ("densenet121", 0), ("cnn", 64))),
            surrogate_epochs=pick(preset, smoke=1, cpu=8, full=30),
            attacks=names("transfer attack"),
            eps_255=8,
            sweep_eps_255=pick(preset, smoke=(4, 8), cpu=(2, 4, 8, 16), full=(2, 4, 8, 16)),
            attack_steps=pick(preset, smoke=2, cpu=10, full=10),
            tune_trials=pick(preset, smoke=2, cpu=2, full=8),
            tuner=pick(preset, smoke="random", cpu="asha", full="asha"),
            seed=seed,
            seeds=pick(preset, smoke=(0,), cpu=CPU_ROUNDS, full=(0, 1, 2, 3, 4)),
            speed=tuple(speed_options(preset).items()),
        )
        return replace(cfg, **overrides) if overrides else cfg


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Splits:
    pool: rdata.ImageDataset      # the nodes' data (``cfg.pool`` images), split into shards afresh every round
    attacker: rdata.ImageDataset  # the attacker's own data: no node sees it
    test: rdata.ImageDataset


def load_splits(cfg: HeteroConfig) -> Splits:
    """Disjoint node pool and attacker set from the training split; a stratified test subset."""
    train = rdata.load(cfg.dataset, "train")
    test = rdata.load(cfg.dataset, "test").subset(cfg.n_test, cfg.seed)
    need = cfg.n_attacker + cfg.pool
    if need > len(train):
        raise ConfigError(f"{cfg.dataset} has {len(train)} training images; the grid needs {need}.")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
    return Splits(pool=train.select(order[cfg.n_attacker:need]), attacker=train.select(order[:cfg.n_attacker]),
                  test=test)


def round_seed(cfg: HeteroConfig, seed: int, n: int) -> int:
    """The seed of round ``seed``'s shards for N = ``n`` (each round and each N draws its own split)."""
    return cfg.seed + 1000 * seed + n


def shards(cfg: HeteroConfig, splits: Splits, seed: int, n: int, mode: str = "disjoint") -> list:
    """Round ``seed``'s ``n`` shards of the pool, ``pool // n`` images each (``dirichlet``: non-IID sizes)."""
    idx = E.make_shards(splits.pool.labels, n, len(splits.pool) // n, mode, round_seed(cfg, seed, n),
                        cfg.dirichlet_alpha)
    return [splits.pool.select(i) for i in idx]


def fashion_mnist_available(download: bool | None = None) -> bool:
    """Whether Fashion-MNIST can be loaded (downloads only in Colab unless ``download=True``)."""
    download = in_colab() if download is None else download
    try:
        rdata.load_fashion_mnist("test", download=download)
        return True
    except (rdata.DatasetNotFoundError, RuntimeError, OSError) as e:
        print("Fashion-MNIST is not available here, so this part is skipped (offline machine; in Colab it "
              f"downloads; elsewhere: python data_scripts/get_data.py fashion_mnist). ({type(e).__name__})")
        return False


# --------------------------------------------------------------------------------------------- nodes
def node_seed(cfg: HeteroConfig, i: int, seed: int = 0) -> int:
    """Training seed of node ``i`` in round ``seed`` (its initialisation, data order and tuning samples)."""
    return cfg.seed + i + 1000 * seed


def master(cfg: HeteroConfig, seed: int = 0) -> tuple[str, str, str]:
    """Round ``seed``'s *master configuration* ``(arch, optimizer, scheduler)``: ENS's configuration and node 0 of
    every instantiation, as each of the authors' rounds has its own (their ``utils/master_configs.json``: vgg19 /
    SGD / CyclicLR, regnetx_200mf / SGD-M / ReduceLROnPlateau, ...). The rounds walk through one seeded shuffle of
    every combination of the preset's ``archs`` x ``optimizers`` x ``schedulers`` (``cfg.seed`` shuffles it,
    round ``seed`` picks its place in it), so no two rounds share a master until every combination has had one."""
    combos = list(itertools.product(cfg.archs, cfg.optimizers, cfg.schedulers))
    order = np.random.default_rng(cfg.seed).permutation(len(combos))
    return combos[int(order[seed % len(combos)])]


def _with_master_first(values: tuple[str, ...], first: str) -> tuple[str, ...]:
    """``values`` with ``first`` moved to the front: node ``i`` of an axis takes item ``i % len`` of it, so node 0
    keeps the round's master value and the other nodes take the others in the preset's order."""
    return (first, *(v for v in values if v != first))


def _node(cfg: HeteroConfig, data, axis: str, i: int, arch=None, optimizer=None, scheduler=None,
          seed: int = 0) -> D.NodeSpec:
    """Node ``i`` of ``axis`` in round ``seed``: the round's :func:`master` configuration, with ``arch``,
    ``optimizer`` or ``scheduler`` where given."""
    m_arch, m_opt, m_sched = master(cfg, seed)
    arch, optimizer, scheduler = arch or m_arch, optimizer or m_opt, scheduler or m_sched
    kw = (("width", cfg.node_width),) if arch == "cnn" else ()
    train = D.default_train(optimizer, scheduler, cfg.epochs, cfg.batch_size, node_seed(cfg, i, seed)).replace(
        **speed_for(arch, cfg.speed))
    return D.NodeSpec(arch, train, data, kw, label=f"{axis} #{i}")


def plan(cfg: HeteroConfig, splits: Splits, seed: int, n: int) -> dict[str, list[D.NodeSpec]]:
    """Untuned node specs of round ``seed`` for N = ``n``: ``{axis: n specs}`` for the axes of
    :meth:`HeteroConfig.axes_at` (N = 1: ENS only, the single model). Node ``i`` of every axis trains on the
    round's disjoint shard ``i`` (Dirichlet shards for non-IID).
    Every node is the round's :func:`master` configuration except on its axis, where node 0 keeps the master's
    value and nodes 1, 2, ... take the preset's other values in turn (so node 0 of every IID axis is ENS's node 0,
    one model, as in the authors' rounds)."""
    iid, non_iid = shards(cfg, splits, seed, n), None
    m_arch, m_opt, m_sched = master(cfg, seed)
    archs, optimizers, schedulers = (_with_master_first(cfg.archs, m_arch),
                                     _with_master_first(cfg.optimizers, m_opt),
                                     _with_master_first(cfg.schedulers, m_sched))
    out = {}
    for axis in cfg.axes_at(n):
        if axis == "data non-IID" and non_iid is None:
            non_iid = shards(cfg, splits, seed, n, "dirichlet")
        nodes = []
        for i in range(n):
            a, o, s = archs[i % len(archs)], optimizers[i % len(optimizers)], schedulers[i % len(schedulers)]
            kw = {"ENS": {}, "tuned HP": {}, "data non-IID": {}, "architecture": {"arch": a},
                  "optimizer": {"optimizer": o}, "scheduler": {"scheduler": s},
                  "all": {"arch": a, "optimizer": o, "scheduler": s}}[axis]
            data = non_iid[i] if axis == "data non-IID" else iid[i]
            nodes.append(_node(cfg, data, axis, i, seed=seed, **kw))
        out[axis] = nodes
    return out


def build_nodes(cfg: HeteroConfig, run: Run, splits: Splits, ex: D.Execution = D.Execution(), seeds=None, also=()):
    """Tune and train every node of every round (seed) and N.

    Every tuning of the grid is one call of :func:`robustnb.distributed.tune_nodes` (with ``asha``: one Ray Tune
    experiment, ASHA per node), then every node and ``also`` (the attacker's surrogates) train in one pool, so
    that the workers stay busy until the last model is done. Returns ``(plans, models, tuning frame)`` with
    ``plans[seed][n][axis]`` the tuned node specs and ``models`` the nodes only (``{key: model}``)."""
    ex = as_execution(ex, run)
    seeds = tuple(cfg.seeds if seeds is None else seeds)
    untuned = {(seed, n): plan(cfg, splits, seed, n) for seed in seeds for n in cfg.n_values}
    tuned, models, rows = D.tune_and_train(untuned, cfg.tune_trials, cfg.tuner, ex, run.device, also)
    plans = {seed: {} for seed in seeds}
    for (seed, n), by_axis in tuned.items():
        plans[seed][n] = by_axis
    tuning = [{"seed": row["key"][0], "n_nodes": row["key"][1], **{k: v for k, v in row.items() if k != "key"}}
              for row in rows]
    return plans, models, pd.DataFrame(tuning)


@dataclass(frozen=True)
class RoundTiming:
    """What :func:`one_round` did: the round's ``seed``, its ``master`` configuration, how many distinct nodes it
    tuned and trained, and the wall time (``seconds``) of its tuning and training (data loading excluded)."""

    seed: int
    master: tuple[str, str, str]
    tunings: int
    nodes: int
    seconds: float


def one_round(preset: str = "cpu", seed: int = 0, backend: str | None = None, ray_address: str | None = None,
              device: str = "cpu", run: Run | None = None, **overrides) -> RoundTiming:
    """Tune and train every instantiation of ONE round (every axis at every N of the preset, ENS and the single
    model included; no surrogate, no attack) through the caches, and say how long it took. From an empty
    ``ROBUSTNB_CACHE`` this is the cost of one round of the grid::

        ROBUSTNB_CACHE=$(mktemp -d) OMP_NUM_THREADS=1 python -c \
            "from robustnb.chapters import heterogeneous_ensembles as H; print(H.one_round('cpu'))"

    ``overrides``: :class:`HeteroConfig` fields (``seeds`` is ``(seed,)``)."""
    run = run or Run(preset=preset, seed=0, device=torch.device(device))
    cfg = HeteroConfig.from_preset(preset, run.seed, **{"seeds": (seed,), **overrides})
    ex = execution(run, backend, ray_address)
    splits = load_splits(cfg)
    started = time.perf_counter()
    with torch_threads(ex.threads if ex.backend == "ray" else None):
        try:
            plans, models, tuning = build_nodes(cfg, run, splits, ex, seeds=(seed,))
        finally:
            D.ray_shutdown()
    seconds = time.perf_counter() - started
    tuned = {node.key for n in cfg.n_values for specs in D.tuning_jobs(plan(cfg, splits, seed, n)).values()
             for node in specs}  # distinct tunings (node 0 of every IID axis is ENS's: one tuning)
    return RoundTiming(seed, master(cfg, seed), len(tuned), len(models), round(seconds, 1))


def surrogate_specs(cfg: HeteroConfig, splits: Splits) -> list[D.NodeSpec]:
    """The attacker's own models: node specs on the attacker's data, which no node sees."""
    specs = []
    for j, (arch, width) in enumerate(cfg.surrogates):
        kw = (("width", width),) if arch == "cnn" else ()
        train = TrainConfig(epochs=cfg.surrogate_epochs, batch_size=cfg.batch_size, optimizer="sgd", lr=0.05,
                            scheduler="cosine", seed=cfg.seed + 1000 + j, **speed_for(arch, cfg.speed))
        specs.append(D.NodeSpec(arch, train, splits.attacker, kw, label=f"surrogate {arch}"))
    return specs


def train_surrogates(cfg: HeteroConfig, run: Run, splits: Splits, ex: D.Execution = D.Execution()) -> list:
    """The attacker's own models, trained on its own data (through the cache)."""
    specs = surrogate_specs(cfg, splits)
    ex = as_execution(ex, run)
    models = D.train_nodes(specs, ex.backend, run.device, ex.address, ex.num_cpus)
    return [models[s.key] for s in specs]


def one_small_case(cfg: HeteroConfig, run: Run, n_images: int = 64, attack: str = "cwa") -> pd.DataFrame:
    """The protocol on one small case before the grid: two nodes on the first two of round 0's disjoint shards
    for N = ``cfg.n_max``, untuned (the optimizer's defaults), as ENS (two copies of round 0's :func:`master`
    configuration) and as the architecture instantiation (the master's architecture, then the next one); the attacker's first surrogate, trained on its own
    data, crafts ``attack`` at ``cfg.eps_255`` on ``n_images`` test images. One row per instantiation and member
    (each node, then the hard vote): ``clean_acc`` on those images and ``robust_acc_cc`` on the clean-correct
    ones. The surrogate is the grid's (from the model cache afterwards); the nodes are not (the grid's are
    tuned)."""
    splits = load_splits(cfg)
    two = shards(cfg, splits, 0, cfg.n_max)[:2]
    nodes = {"ENS": [_node(cfg, two[i], "ENS", i) for i in range(2)],
             "architecture": [_node(cfg, two[i], "architecture", i,
                                    arch=_with_master_first(cfg.archs, master(cfg, 0)[0])[i]) for i in range(2)]}
    surrogate_spec = surrogate_specs(cfg, splits)[:1]
    models = D.train_nodes([*surrogate_spec, *(n for ns in nodes.values() for n in ns)], "local", run.device)
    x, y = splits.test.tensors(n_images)
    adv = crafted([models[surrogate_spec[0].key]], attack, cfg.eps_255, cfg.attack_steps, x, y)
    rows = []
    for axis, specs in nodes.items():
        clean = torch.stack([predict(models[s.key], x) for s in specs])
        attacked = torch.stack([predict(models[s.key], adv) for s in specs])
        members = [(f"node {i} ({s.arch})", clean[i:i + 1], attacked[i:i + 1]) for i, s in enumerate(specs)]
        for member, c, a in [*members, ("hard vote", clean, attacked)]:
            ok, kept = E.aggregate(c, "hard") == y, E.aggregate(a, "hard") == y
            rows.append({"instantiation": axis, "member": member, "clean_acc": float(ok.float().mean()),
                         "robust_acc_cc": float((ok & kept).sum() / ok.sum()) if ok.any() else float("nan"),
                         "n_clean_correct": int(ok.sum())})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------- attacking
def attack_set(cfg: HeteroConfig, splits: Splits) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n_attack`` test images every transfer attack perturbs, with *their* labels (a stratified
    subset of the test set, not its first ``n_attack`` items)."""
    return splits.test.tensors(cfg.n_attack)


def craft(cfg: HeteroConfig, surrogates, splits: Splits) -> dict:
    """Adversarial examples ``{(attack, eps_255): x_adv}`` crafted on the surrogates, plus ``("clean", 0)``.

    Each set is an :func:`robustnb.cache.experiment` (:func:`crafted`): keyed by the surrogates, attack, budget,
    steps, images and the code it runs, so an edit to ``robustnb.attacks.transfer`` recrafts it.
    """
    x, y = attack_set(cfg, splits)
    out = {("clean", 0): x}
    eps_values = sorted(set(cfg.sweep_eps_255) | {cfg.eps_255})
    for attack, eps in tqdm([(a, e) for e in eps_values for a in cfg.attacks], desc="crafting transfer attacks"):
        out[(attack, eps)] = crafted(list(surrogates), attack, eps, cfg.attack_steps, x, y)
    return out


@experiment
def crafted(surrogates: list, attack: str, eps_255: float, steps: int, x: torch.Tensor, y: torch.Tensor):
    """One transfer attack's examples on the surrogates (``make("transfer attack", ...)``)."""
    return perturb(make("transfer attack", attack, surrogates, eps=eps_255 / 255, steps=steps), x, y, batch_size=128)


@experiment
def _node_logits(models: dict, splits: Splits, adv: dict) -> dict:
    """Logits of every distinct node on the clean test set and on every adversarial set."""
    x_test, _ = splits.test.tensors()
    out = {}
    for key, model in tqdm(models.items(), desc="node predictions"):
        out[key] = {"test": predict(model, x_test)}
        for k, x in adv.items():
            out[key][k] = predict(model, x)
    return out


def clean_correct_masks(nodes: dict, logits: dict, y: torch.Tensor) -> dict[tuple[int, str], torch.Tensor]:
    """``{(N, axis): (n_attack,) bool}``: the attacked images whose clean versions each instantiation of the round
    (``nodes``: ``{N: {axis: node specs}}``) classifies correctly under its soft vote. The authors score every vote
    of an instantiation on its soft vote's mask; the headline ``robust_acc_cc`` does the same."""
    return {(n, axis): E.aggregate(torch.stack([logits[s.key][("clean", 0)] for s in specs]), "soft") == y
            for n, by_axis in nodes.items() for axis, specs in by_axis.items()}


def shared_mask(masks: dict) -> torch.Tensor:
    """The round's shared mask: the images that EVERY instantiation of ``masks`` (:func:`clean_correct_masks`)
    classifies correctly when clean, the book's sensitivity reading (``robust_acc_shared``): every instantiation
    scored on the same images, so a weak one is not scored on an easier subset."""
    return torch.stack(list(masks.values())).all(dim=0)


def evaluate_grid(cfg: HeteroConfig, nodes: dict, models: dict, splits: Splits, adv: dict, seed: int = 0,
                  logits: dict | None = None) -> pd.DataFrame:
    """Tidy frame: one row per (seed, axis, N, vote, attack, eps) with clean / robust accuracy and success rate;
    ``nodes``: one round's ``{n: {axis: node specs}}``.

    ``clean_acc`` is on the ``n_test`` test images. On the ``n_attack`` attacked images: ``robust_acc_cc``,
    the headline (the authors' metric), is the share of the instantiation's clean-correct images
    (:func:`clean_correct_masks`: those its soft vote classifies correctly when clean, one mask for all its votes)
    that it still classifies correctly after the attack (= 1 - ``success_rate``; ``n_clean_correct`` images);
    ``robust_acc_shared`` the same on the round's :func:`shared_mask` (``n_shared`` images, the book's
    sensitivity reading); ``robust_acc`` is the unconditional accuracy on the attacked images. Votes are
    unweighted (``weighted`` = the per-sample softmax-confidence vote of :func:`robustnb.ensembles.vote_scores`).
    """
    logits = _node_logits(models, splits, adv) if logits is None else logits
    y_test = splits.test.labels
    _, y_att = attack_set(cfg, splits)
    masks = clean_correct_masks(nodes, logits, y_att)
    shared = shared_mask(masks)

    def share(mask, hit):
        return float((mask & hit).sum() / mask.sum()) if mask.any() else float("nan")

    rows = []
    for n, by_axis in nodes.items():
        for axis, specs in by_axis.items():
            keys = [s.key for s in specs]
            mask = masks[n, axis]
            for vote in cfg.votes:

                def decide(which):
                    return E.aggregate(torch.stack([logits[k][which] for k in keys]), vote)

                clean_test = float((decide("test") == y_test).float().mean())
                for (attack, eps) in adv:
                    if attack == "clean":
                        continue
                    hit = decide((attack, eps)) == y_att
                    kept = share(mask, hit)
                    rows.append({"seed": seed, "dataset": cfg.dataset, "instantiation": axis, "n_nodes": n,
                                 "vote": vote, "attack": attack, "eps_255": eps, "clean_acc": clean_test,
                                 "robust_acc_cc": kept, "robust_acc_shared": share(shared, hit),
                                 "robust_acc": float(hit.float().mean()), "success_rate": 1 - kept,
                                 "n_clean_correct": int(mask.sum()), "n_shared": int(shared.sum())})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class HeteroStudy:
    """Everything the study made: the tidy ``frame`` (:func:`evaluate_grid`, a ``seed`` column per round), the
    ``tuning`` frame, ``plans`` (seed -> N -> axis -> tuned node specs), ``nodes`` (the first round's at the
    largest N), the trained ``models`` (``{key: model}``), the attacker's ``surrogates``, the crafted ``adv``
    examples, the data ``splits`` and the ``cfg``."""

    frame: pd.DataFrame
    tuning: pd.DataFrame
    plans: dict
    nodes: dict
    models: dict
    surrogates: list
    adv: dict
    splits: Splits
    cfg: HeteroConfig


def execution(run: Run, backend: str | None = None, ray_address: str | None = None) -> D.Execution:
    """Where the nodes train (the preset's default: in-process at ``smoke``, Ray otherwise; ``ray_address`` or
    ``$RAY_ADDRESS``: a cluster). Apart from the config: where a result is computed never changes its key."""
    return D.Execution.from_preset(run.preset, backend, ray_address)


def run_study(cfg: HeteroConfig, run: Run, ex: D.Execution | None = None) -> HeteroStudy:
    """Everything: splits, nodes (tuned and trained, every round), surrogates, attacks, the frame; ``ex`` says
    where the nodes train (default: :func:`execution`)."""
    ex = execution(run) if ex is None else as_execution(ex, run)
    splits = load_splits(cfg)
    # while Ray workers train on every core, this process keeps to cfg.threads (2 threads on 2 busy cores ran
    # 40x slower); crafting and evaluating afterwards have the cores to themselves and use all of them
    with torch_threads(ex.threads if ex.backend == "ray" else None):
        try:
            # nodes and surrogates in one pool, costliest first (the VGG surrogate last kept one core idle)
            plans, models, tuning = build_nodes(cfg, run, splits, ex, also=surrogate_specs(cfg, splits))
            surrogates = train_surrogates(cfg, run, splits, ex)  # loads them from the model cache
        finally:
            D.ray_shutdown()
    adv = craft(cfg, surrogates, splits)
    logits = _node_logits(models, splits, adv)
    frame = pd.concat([evaluate_grid(cfg, plans[sd], models, splits, adv, sd, logits) for sd in cfg.seeds],
                      ignore_index=True)
    return HeteroStudy(frame, tuning, plans, plans[cfg.seeds[0]][cfg.n_max], models, surrogates, adv, splits, cfg)


# ------------------------------------------------------------------------------------------- frames
KEYS = ["dataset", "instantiation", "n_nodes", "vote", "attack", "eps_255"]
METRICS = ["clean_acc", "robust_acc_cc", "robust_acc_shared", "robust_acc", "success_rate"]


def seed_mean(frame: pd.DataFrame) -> pd.DataFrame:
    """The grid frame averaged over training seeds (one row per instantiation, N, vote, attack, epsilon)."""
    keys = [k for k in KEYS if k in frame.columns]
    return frame.groupby(keys, sort=False, as_index=False)[METRICS].mean()


def main_table(frame: pd.DataFrame, cfg: HeteroConfig, vote: str = "hard") -> pd.DataFrame:
    """Wide table at the main epsilon (mean over seeds): clean accuracy, robust accuracy on the clean-correct
    images per attack (the headline), then the unconditional robust accuracy per attack.

    The single model (ENS at N = 1) gets its own first row; N = 1 rows of the other axes are left out
    (their node 0 is a tuned single model, not an ensemble).
    """
    d = seed_mean(frame)
    d = d[(d.vote == vote) & (d.eps_255 == cfg.eps_255)]
    attacks = [a for a in cfg.attacks if a in set(d.attack)]
    parts = []
    for metric, suffix in (("robust_acc_cc", " (clean-correct)"), ("robust_acc", " (all)")):
        wide = d.pivot_table(index=["instantiation", "n_nodes"], columns="attack", values=metric, sort=False,
                             dropna=False)  # an empty clean-correct mask leaves NaN, not a missing column
        parts.append(wide.reindex(columns=attacks).rename(columns=lambda a: f"{a}{suffix}"))
    clean = d.groupby(["instantiation", "n_nodes"], sort=False)["clean_acc"].first()
    out = pd.concat([clean.rename("clean"), *parts], axis=1).reset_index()
    single = out[(out.instantiation == "ENS") & (out.n_nodes == 1)].assign(instantiation="single model")
    rest = out[out.n_nodes > 1]
    return pd.concat([single, rest]).reset_index(drop=True)


def per_seed_diff(frame: pd.DataFrame, axis: str, n_nodes: int, attack: str, eps_255: float,
                  metric: str = "robust_acc_cc", vote: str = "hard", versus: str = "ENS") -> np.ndarray:
    """``axis`` minus ``versus`` on ``metric``, one value per round (same N, attack, budget and vote).

    Empty when the axis or N is not in the frame."""
    d = frame[(frame.vote == vote) & (frame.attack == attack) & np.isclose(frame.eps_255, eps_255)
              & (frame.n_nodes == n_nodes)]
    a = d[d.instantiation == axis].set_index("seed")[metric]
    b = d[d.instantiation == versus].set_index("seed")[metric]
    both = a.index.intersection(b.index)
    return (a.loc[both] - b.loc[both]).to_numpy(dtype=float)


def gains(frame: pd.DataFrame, cfg: HeteroConfig, vote: str = "hard") -> pd.DataFrame:
    """Every instantiation minus ENS and minus tuned HP with the same N (main epsilon, every attack), mean over
    rounds with a t interval over rounds (``stats.seeds_ci``; NaN with one round): ``robust_gain`` on the
    clean-correct images (headline; ``low``/``high`` its interval), ``robust_gain_all`` unconditional,
    ``clean_cost`` = the baseline's clean accuracy minus the instantiation's; ``versus`` names the baseline."""
    rows = []
    for versus in ("ENS", "tuned HP"):
        for n in [n for n in cfg.n_values if n > 1 and versus in cfg.axes_at(n)]:
            for axis in [a for a in cfg.axes_at(n) if a not in ("ENS", versus)]:
                for attack in cfg.attacks:
                    def diff(metric):
                        return per_seed_diff(frame, axis, n, attack, cfg.eps_255, metric, vote, versus)
                    g, ga, c = stats.seeds_ci(diff("robust_acc_cc")), stats.seeds_ci(diff("robust_acc")), \
                        stats.seeds_ci(-diff("clean_acc"))
                    rows.append({"instantiation": axis, "versus": versus, "n_nodes": n, "attack": attack,
                                 "robust_gain": g.value, "low": g.low, "high": g.high,
                                 "robust_gain_all": ga.value, "clean_cost": c.value, "seeds": g.n})
    return pd.DataFrame(rows)


def pareto(frame: pd.DataFrame, attack: str = "cwa", eps_255: float = 8, vote: str = "hard") -> pd.DataFrame:
    """Clean vs robust accuracy per (instantiation, N) with a ``pareto`` flag (not dominated in both)."""
    d = seed_mean(frame)
    d = d[(d.attack == attack) & (d.eps_255 == eps_255) & (d.vote == vote)].copy()
    pts = d[["clean_acc", "robust_acc"]].to_numpy()
    dominated = [bool(((pts >= p).all(1) & (pts > p).any(1)).any()) for p in pts]
    d["pareto"] = ~np.array(dominated)
    d["label"] = d.instantiation + " N=" + d.n_nodes.astype(str)
    return d.reset_index(drop=True)


def pareto_figure(points: pd.DataFrame, title: str):
    """Scatter of clean vs robust accuracy with the Pareto frontier drawn as a line."""
    fig = plots.scatter(points, x="clean_acc", y="robust_acc", color="instantiation", symbol="n_nodes",
                        hover_name="label", title=title,
                        labels={"clean_acc": "clean accuracy", "robust_acc": "robust accuracy"})
    front = points[points.pareto].sort_values("clean_acc")
    fig.add_scatter(x=front.clean_acc, y=front.robust_acc, mode="lines", name="Pareto frontier",
                    line=dict(color="#444", dash="dot"))
    return fig


@experiment
def similarity(models: dict, surrogates, nodes: dict, splits: Splits, n_images: int = 128,
               axes=("ENS", "all")) -> pd.DataFrame:
    """Input-gradient cosine similarity (mean over test images) between surrogates and the nodes of ``axes``.

    High similarity between a node and the surrogates means the attacker's gradients point where the
    node's do, the mechanism that makes transfer attacks work.
    """
    x, y = splits.test.tensors(n_images)
    return _similarity(models, surrogates, nodes, x, y, axes)


def _similarity(models, surrogates, nodes, x, y, axes) -> pd.DataFrame:
    named = [(f"surrogate {i}", m) for i, m in enumerate(surrogates)]
    for axis in axes:
        if axis in nodes:
            named += [(f"{axis} #{i} ({s.arch})", models[s.key]) for i, s in enumerate(nodes[axis])]
    grads = {}
    for name, model in named:
        xg = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xg), y)
        grads[name] = torch.autograd.grad(loss, xg)[0].flatten(1)
    names = [n for n, _ in named]
    return pd.DataFrame([{"model_a": a, "model_b": b,
                          "cosine": float(F.cosine_similarity(grads[a], grads[b], dim=1).mean())}
                         for a in names for b in names])


def at(frame: pd.DataFrame, eps_255: float | None = None, vote: str = "hard",
       n_nodes: int | None = None) -> pd.DataFrame:
    """Rows of the grid frame (mean over training seeds) with one vote, at one epsilon (None: all) and,
    optionally, one N."""
    d = seed_mean(frame)
    d = d[d.vote == vote]
    if eps_255 is not None:
        d = d[np.isclose(d.eps_255, eps_255)]
    return d if n_nodes is None else d[d.n_nodes == n_nodes]


def node_overview(result: HeteroStudy, axes=("ENS", "architecture", "tuned HP", "all")) -> pd.DataFrame:
    """What each node of the largest instantiation of ``axes`` is (architecture, optimizer, schedule, HP),
    in the first round (momentum only where the node uses a tuned one)."""
    rows = []
    for axis in axes:
        for i, s in enumerate(result.nodes.get(axis, [])):
            t = s.train
            rows.append({"instantiation": axis, "node": i, "arch": s.arch, "optimizer": t.optimizer,
                         "scheduler": t.scheduler, "lr": t.lr,
                         "momentum": t.momentum if "momentum" in D.tuned_params(t) else float("nan"),
                         "weight_decay": t.weight_decay, "shard_size": len(s.data),
                         "train_acc": float(result.models[s.key].robustnb_info["history"]["train_acc"].iloc[-1])})
    return pd.DataFrame(rows)


def vote_comparison(frame: pd.DataFrame, cfg: HeteroConfig, attack: str = "cwa") -> pd.DataFrame:
    """Robust accuracy of every instantiation with the largest N under each vote (main epsilon)."""
    d = seed_mean(frame)
    d = d[np.isclose(d.eps_255, cfg.eps_255) & (d.attack == attack) & (d.n_nodes == cfg.n_max)]
    return d[["instantiation", "vote", "clean_acc", "robust_acc_cc", "robust_acc"]].reset_index(drop=True)


def fashion_mnist_study(run: Run, ex: D.Execution | None = None, axes=("ENS", "tuned HP", "optimizer", "all"),
                        **overrides):
    """The same grid on Fashion-MNIST (fewer axes) when the data is there; else prints why and returns None.
    ``overrides``: more :class:`HeteroConfig` fields (``archs`` too), as ``HeteroConfig.from_preset`` takes them."""
    if not fashion_mnist_available():
        return None
    overrides = {"archs": ("cnn", "regnet_x_400mf", "mobilenet_v2"), **overrides}
    cfg = HeteroConfig.from_preset(run.preset, run.seed, dataset="fashion_mnist", axes=axes, **overrides)
    return main_table(run_study(cfg, run, ex).frame, cfg)


# ------------------------------------------------------------------------------------------- claims
def claim_n(cfg: HeteroConfig, n: int) -> int:
    """The N a claim "at N = n" uses: ``n`` if the preset has it, else the largest N > 1 below it (smoke: 2)."""
    below = [m for m in cfg.n_values if 1 < m <= n]
    return max(below) if below else max(cfg.n_values)


def _support(frame: pd.DataFrame, axes, ns) -> int | None:
    """The fewest clean-correct images behind one of the robust accuracies an estimate compares (``axes`` at the
    N values ``ns``; None where it compares none)."""
    d = frame[frame.instantiation.isin(list(axes)) & frame.n_nodes.isin(list(ns)) & (frame.attack == HEADLINE_ATTACK)]
    return int(d.n_clean_correct.min()) if len(d) else None


def _per_round(frame: pd.DataFrame, cfg: HeteroConfig, metric: str) -> dict[int, pd.DataFrame]:
    """``{N: table}``: ``metric`` under CWA at the main budget, majority vote, one row per round (index ``seed``)
    and one column per instantiation of :data:`AXES` (NaN where it did not run)."""
    d = frame[(frame.vote == "hard") & (frame.attack == HEADLINE_ATTACK) & np.isclose(frame.eps_255, cfg.eps_255)]
    return {int(n): g.groupby(["seed", "instantiation"])[metric].mean().unstack().reindex(columns=list(AXES))
            for n, g in d.groupby("n_nodes")}


def claim_rounds(frame: pd.DataFrame, cfg: HeteroConfig, claim_id: str, tables: tuple | None = None) -> pd.Series:
    """The per-round values behind one claim (its :data:`TARGETS` entry; index: the round), rounds where one of
    them is missing left out; empty where the preset cannot measure it (smoke's one N > 1 has no growth).
    ``tables``: the ``_per_round`` tables of robust and clean accuracy, when the caller has them."""
    t = TARGETS[claim_id]
    n = claim_n(cfg, t.n)
    robust, clean = tables or (_per_round(frame, cfg, "robust_acc_cc"), _per_round(frame, cfg, "clean_acc"))
    none = pd.DataFrame(columns=list(AXES), dtype=float)

    def g(a, b="ENS", at=n):
        r = robust.get(at, none)
        return r[a] - r[b]

    if t.kind == "clean_cost":
        c = clean.get(n, none)
        v = c[t.versus] - c[t.axis]
    elif t.kind == "gain":
        v = g(t.axis, t.versus)
    elif t.kind == "lesser":
        v = g(t.axis, "tuned HP") - g("tuned HP")
    elif t.kind == "largest":
        on_top = [g(a, "tuned HP") for a in _LESSER if a in cfg.axes]
        v = g("tuned HP") - pd.concat(on_top, axis=1).max(axis=1, skipna=False) if on_top else none["ENS"]
    else:  # growth
        small = claim_n(cfg, t.n_small)
        v = g(t.axis) - g(t.axis, at=small) if small != n else none["ENS"]
    return v.dropna()


def claim_estimate(frame: pd.DataFrame, cfg: HeteroConfig, claim_id: str, tables: tuple | None = None
                   ) -> stats.Estimate:
    """The estimate behind one claim: the mean of its per-round values (:func:`claim_rounds`) with a t interval
    over rounds (``stats.seeds_ci``), and the fewest clean-correct images behind one of them."""
    t = TARGETS[claim_id]
    n = claim_n(cfg, t.n)
    ns = (n, claim_n(cfg, t.n_small)) if t.kind == "growth" else (n,)
    support = _support(frame, t.compared, ns) if t.compared else None
    return stats.seeds_ci(claim_rounds(frame, cfg, claim_id, tables), support)


def claims(frame: pd.DataFrame, cfg: HeteroConfig) -> pd.DataFrame:
    """The chapter's claims table (columns ``stats.CLAIM_COLUMNS``, one row per ``PAPER_CLAIMS`` entry);
    verdicts by ``stats.verdict`` (with one training seed every interval is NaN: inconclusive)."""
    tables = (_per_round(frame, cfg, "robust_acc_cc"), _per_round(frame, cfg, "clean_acc"))
    return stats.claims_table(CHAPTER, PAPER_CLAIMS,
                              {cid: claim_estimate(frame, cfg, cid, tables) for cid in PAPER_CLAIMS})


def mask_sensitivity(frame: pd.DataFrame, cfg: HeteroConfig) -> pd.DataFrame:
    """The primary robustness claims read twice (the book's sensitivity check, not a verdict): on each
    instantiation's own clean-correct images (the authors' metric, the claims table's) and on the round's shared
    mask (:func:`shared_mask`: the images every instantiation of the round gets right when clean). One row per
    claim: the mean over rounds with its 95% t interval under each mask, and the rounds behind it."""
    clean = _per_round(frame, cfg, "clean_acc")
    readings = {label: (_per_round(frame, cfg, metric), clean)
                for label, metric in (("own masks (authors')", "robust_acc_cc"), ("shared mask", "robust_acc_shared"))}
    rows = []
    for cid, pc in PAPER_CLAIMS.items():
        if not pc.counted or TARGETS[cid].kind == "clean_cost":
            continue
        row = {"claim": pc.claim}
        for label, tables in readings.items():
            e = stats.seeds_ci(claim_rounds(frame, cfg, cid, tables))
            row[label] = e.fmt(unit=" points", signed=True)
        row["rounds"] = e.n
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------- constructed worlds
#: rounds with which every claim reads "inconclusive at this size" (one round gives no t interval)
TOO_FEW = 1
#: rounds of a constructed world. At the worlds' spread 3 rounds (t with 2 degrees of freedom) decide the full
#: mix's gain over ENS (in 100% of the paper's worlds, 80% of the wrong ones), not the comparisons of effects, whose
#: per-round values combine three or four instantiations: the lesser role, the largest driver and the growth with N
#: read right in 14-31% of their worlds at 3 rounds, 50-91% at 8, 72-99% at 12 and 87-100% at
#: 16; the clean cost in about 80% at 3 rounds (simulated over 150 worlds each). The cpu preset's CPU_ROUNDS are
#: between 3 and 8: enough for the gain over ENS and the clean cost, not for the lesser role or the growth.
WORLD_ROUNDS = 16
#: the worlds' spread between rounds: each instantiation's robust accuracy moves by WORLD_ROUND_SD in each round
#: (independently), so that a per-round difference of two has an SD of 3 points; its clean accuracy by
#: WORLD_CLEAN_SD (a difference: 1.4 points, on the 2,000 test images)
WORLD_ROUND_SD = 0.03 / np.sqrt(2)
WORLD_CLEAN_SD = 0.01
#: ENS's robust accuracy at 8/255 per attack in the worlds (CWA the strongest), and its clean accuracy
_WORLD_ROBUST = {"mifgsm": 0.45, "sam": 0.35, "cse": 0.32, "cwa": 0.25}
_WORLD_CLEAN = 0.55


def world_gains(cfg: HeteroConfig, claim_id: str, truth: float) -> tuple[dict, dict]:
    """``(gain, cost)``: robust accuracy gained over ENS and clean accuracy lost, per ``(instantiation, N)``, in the
    paper's world (:data:`WORLD_TUNING`, :data:`WORLD_ON_TOP`) with the claim's measured quantity set to ``truth``
    (for ``largest``: the three lesser-role axes moved together until the largest adds ``truth`` less than tuning)."""
    t = TARGETS[claim_id]
    n, small = claim_n(cfg, t.n), claim_n(cfg, t.n_small or t.n)
    gain = {(a, m): _paper_gain(a, m) for m in cfg.n_values for a in cfg.axes_at(m)}
    cost = {(a, m): 0.0 if a == "ENS" else WORLD_CLEAN_COST for a, m in gain}
    if t.kind == "clean_cost":
        cost[t.axis, n] = cost[t.versus, n] + truth
    elif t.kind == "gain":
        gain[t.axis, n] = gain[t.versus, n] + truth
    elif t.kind == "lesser":
        gain[t.axis, n] = 2 * gain["tuned HP", n] - gain["ENS", n] + truth
    elif t.kind == "largest":
        move = 2 * gain["tuned HP", n] - gain["ENS", n] - truth - max(gain[a, n] for a in _LESSER)
        gain.update({(a, n): gain[a, n] + move for a in _LESSER})
    else:  # growth
        gain[t.axis, small] = gain[t.axis, n] - gain["ENS", n] + gain["ENS", small] - truth
    return gain, cost


def world_frame(cfg: HeteroConfig, gain: dict, cost: dict, seed: int = 0) -> pd.DataFrame:
    """The frame :func:`evaluate_grid` produces (every round of ``cfg.seeds``, vote, attack and budget), synthetic:
    ENS's robust accuracy per attack falls with the budget, every instantiation adds its ``gain`` and loses its
    ``cost`` (``world_gains``), and each (round, instantiation, N) moves by its own draw of the worlds' spread."""
    rng = np.random.default_rng(seed)
    runs = pd.DataFrame([(sd, a, n) for sd in cfg.seeds for a, n in gain], columns=["seed", "instantiation", "n_nodes"])
    keys = list(zip(runs.instantiation, runs.n_nodes))
    runs["up"] = [gain[k] for k in keys] + rng.normal(0, WORLD_ROUND_SD, len(runs))
    runs["clean_acc"] = _WORLD_CLEAN - np.array([cost[k] for k in keys]) + rng.normal(0, WORLD_CLEAN_SD, len(runs))
    eps_values = sorted(set(cfg.sweep_eps_255) | {cfg.eps_255})
    settings = pd.DataFrame([(v, a, e) for v in cfg.votes for a in cfg.attacks for e in eps_values],
                            columns=["vote", "attack", "eps_255"])
    f = runs.merge(settings, how="cross")
    base = f.attack.map(lambda a: _WORLD_ROBUST.get(a, 0.3)) * (cfg.eps_255 / f.eps_255) ** 0.3
    kept = (base + f.up).clip(0.0, 1.0)
    # each instantiation's clean-correct images (evaluate_grid) are about its clean accuracy's share of the attacked
    # images; the round's shared mask about the weakest instantiation's
    n_cc = (f.clean_acc * cfg.n_attack).round().astype(int)
    n_shared = (f.groupby("seed").clean_acc.transform("min") * cfg.n_attack).round().astype(int)
    f = f.assign(dataset=cfg.dataset, robust_acc_cc=kept, robust_acc_shared=kept, robust_acc=kept * n_cc / cfg.n_attack,
                 success_rate=1 - kept, n_clean_correct=n_cc, n_shared=n_shared)
    return f[["seed", "dataset", "instantiation", "n_nodes", "vote", "attack", "eps_255", "clean_acc", "robust_acc_cc",
              "robust_acc_shared", "robust_acc", "success_rate", "n_clean_correct", "n_shared"]]


def world_claims(claim_id: str, truth: float, replicates: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The chapter's claims table on a constructed world (``tests/test_claim_worlds.py``): the cpu preset's grid
    with ``replicates`` rounds (default :data:`WORLD_ROUNDS`), the paper's world with ``claim_id``'s measured
    quantity set to ``truth`` (:func:`world_gains`), noise of :data:`WORLD_ROUND_SD` per round."""
    cfg = HeteroConfig.from_preset("cpu", seeds=tuple(range(WORLD_ROUNDS if replicates is None else replicates)))
    return claims(world_frame(cfg, *world_gains(cfg, claim_id, truth), seed=seed), cfg)


def _pct(x: float, signed: bool = False) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:{'+' if signed else ''}.1f}%"


def claim_numbers(frame: pd.DataFrame, cfg: HeteroConfig) -> dict[str, str]:
    """Formatted numbers and short computed sentences for the prose (glued with ``book.record``)."""
    n5 = claim_n(cfg, 5)
    d = seed_mean(frame)
    d = d[(d.vote == "hard") & np.isclose(d.eps_255, cfg.eps_255) & (d.n_nodes == n5)
          & (d.attack == HEADLINE_ATTACK)].set_index("instantiation")

    def get(axis, col):
        return float(d.loc[axis, col]) if axis in d.index else float("nan")

    g = gains(frame, cfg)
    g = g[(g.n_nodes == n5) & (g.versus == "ENS")]
    cw = g[g.attack == HEADLINE_ATTACK].set_index("instantiation")
    best = cw.robust_gain.idxmax() if len(cw) and cw.robust_gain.notna().any() else None
    spread = g.groupby("attack").robust_gain.mean()
    others = ", ".join(f"{a.upper()} {_pct(v, True)}" for a, v in spread.items() if a != HEADLINE_ATTACK)
    return {
        "he_seeds": str(len(cfg.seeds)),
        "he_world_rounds": str(WORLD_ROUNDS),
        "he_masters": "; ".join(f"round {sd}: {' / '.join(master(cfg, sd))}" for sd in cfg.seeds),
        "he_mask_images": (f"{frame.n_clean_correct.min():.0f} to {frame.n_clean_correct.max():.0f}"
                           if len(frame) else "n/a"),
        "he_shared_images": (f"{frame.n_shared.min():.0f} to {frame.n_shared.max():.0f}" if len(frame) else "n/a"),
        "he_interval_note": ("with a single round there is no interval, so every verdict is inconclusive at "
                             "this size and the table shows n/a" if len(cfg.seeds) < 2 else
                             f"the intervals are over {len(cfg.seeds)} rounds"),
        "he_n_large": str(n5),
        "he_n_small": str(claim_n(cfg, 3)),
        "he_n_attack": f"{cfg.n_attack:,}",
        "he_pool": f"{cfg.pool:,}",
        "he_per_node_large": f"{cfg.pool // n5:,}",
        "he_tune_trials": str(cfg.tune_trials),
        "he_epochs": str(cfg.epochs),
        "he_ens_cwa_cc": _pct(get("ENS", "robust_acc_cc")),
        "he_all_cwa_cc": _pct(get("all", "robust_acc_cc")),
        "he_ens_cwa_all": _pct(get("ENS", "robust_acc")),
        "he_all_cwa_all": _pct(get("all", "robust_acc")),
        "he_ens_clean": _pct(get("ENS", "clean_acc")),
        "he_all_clean": _pct(get("all", "clean_acc")),
        "he_best_axis": (f"the largest mean CWA gain at N = {n5} is {best}'s ({_pct(cw.robust_gain[best], True)})"
                         if best is not None else "no axis could be compared"),
        "he_other_attacks": (f"averaged over the axes, the gain under the other attacks is {others}" if others
                             else "no other attack ran"),
    }


def reproduce(run: Run, backend: str | None = None, ray_address: str | None = None) -> pd.DataFrame:
    """The chapter's experiments as its notebook runs them, without Jupyter (``python -m robustnb reproduce
    heterogeneous_ensembles``): the claims table. ``$RAY_ADDRESS`` sends the nodes and tuning trials to a cluster."""
    cfg = HeteroConfig.from_preset(run.preset, run.seed)
    ex = execution(run, backend, ray_address)
    result = run_study(cfg, run, ex)
    frame = result.frame
    return claims(frame, cfg)
