"""Chapter ``book/heterogeneous_ensembles.ipynb``: heterogeneous distributed learning against transfer attacks
(Andreina, Zimmer, Karame).

The grid: for every *instantiation* (an axis of heterogeneity, or none) and every number of nodes N,
node ``i`` has a fixed :class:`robustnb.distributed.NodeSpec` that does not depend on N, so an instantiation
with N nodes is the first N nodes of the largest one and every node is trained once (model cache):

=================  ========================================================================
``ENS``            the authors' baseline: node ``i`` trains on its own disjoint IID shard ``i`` (1/N of the
                   pool), all nodes the small CNN, SGD, cosine, the same default hyperparameters.
                   N = 1 is the *single model*.
``tuned HP``       ENS, but each node's lr / momentum / weight decay tuned on its own shard
``data non-IID``   tuned HP, but Dirichlet(0.9) non-IID shards
``architecture``   tuned HP, but node ``i`` uses architecture ``archs[i % len]``
``optimizer``      tuned HP, but optimizer ``optimizers[i % len]`` (tuned in that optimizer's range)
``scheduler``      tuned HP, but learning-rate schedule ``schedulers[i % len]``
``all``            every axis at once: disjoint shards, architectures, optimizers, schedules, tuned
=================  ========================================================================

As in the authors' code, every heterogeneous flavour is disjoint shards + per-node tuning + its axis, so
its gain over ENS is what heterogeneity adds to independently trained nodes on disjoint data. Node 0 of
most axes equals node 0 of ``tuned HP``, so it is tuned and trained once. Every node is trained for each
training seed of ``seeds`` (the seed is part of its cache key); data splits, surrogates and attacked images
are the same for all seeds, so per-seed differences between instantiations are paired. The attacker trains its own surrogates on
a part of the training set that no node sees, crafts MI-FGSM / SAM / CSE / CWA examples on them once per
(attack, epsilon), and every instantiation is evaluated on the same examples.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from robustnb import data as rdata
from robustnb import distributed as D
from robustnb import ensembles as E
from robustnb import plots, stats, widgets
from robustnb.attacks import TRANSFER_ATTACKS, make_transfer_attack, perturb
from robustnb.cache import cached_tensors, dataset_fingerprint, experiment
from robustnb.config import ConfigError, Run, in_colab, pick
from robustnb.train import TrainConfig, predict, speed_options

AXES = ("ENS", "tuned HP", "data non-IID", "architecture", "optimizer", "scheduler", "all")
HEADLINE_ATTACK = "cwa"
CHAPTER = "heterogeneous_ensembles"

# ------------------------------------------------------------------------------------ the paper's claims
_PAPER_GAIN = "up to +40% robust accuracy over ENS (CIFAR-10, CWA among the attacks)"
_PAPER_SOURCE = "abstract; evaluation on CIFAR-10"
_GAIN_MEASURE = ("{axis} minus ENS at N = {n} (the preset's N nearest below if it has no {n}): CWA at 8/255, "
                 "robust accuracy on the images each instantiation classifies correctly when clean (1 - attack "
                 "success rate), majority vote; mean over training seeds of the per-seed difference, t interval "
                 "over seeds (stats.seeds_ci)")
_AXIS_SLUG = {"tuned HP": "tuned_hp", "data non-IID": "non_iid", "architecture": "arch", "optimizer": "optimizer",
              "scheduler": "scheduler", "all": "all"}


def _gain_claim(axis: str, n: int) -> stats.PaperClaim:
    what = "every axis at once" if axis == "all" else f"the {axis} axis"
    return stats.PaperClaim(
        claim=f"heterogeneity ({what}) raises robust accuracy against transfer attacks over ENS, N = {n}",
        paper=_PAPER_GAIN, source=_PAPER_SOURCE, measure=_GAIN_MEASURE.format(axis=axis, n=n), form="increase",
        paper_value=None, unit=" points")  # "up to" is a best case over settings, not a size for every axis


#: claim id -> the claim (the one place where the paper's figures are typed, with QUOTED_NUMBERS)
PAPER_CLAIMS: dict[str, stats.PaperClaim] = {
    **{f"he_gain_{_AXIS_SLUG[a]}_n{n}": _gain_claim(a, n) for n in (3, 5) for a in _AXIS_SLUG},
    **{f"he_clean_cost_{_AXIS_SLUG[a]}_n5": stats.PaperClaim(
        claim=f"the robustness of {'every axis at once' if a == 'all' else 'tuned HP'} costs little clean "
              "accuracy, N = 5",
        paper="a small clean-accuracy cost", source=_PAPER_SOURCE,
        measure=f"ENS clean accuracy minus {a}'s at N = 5 (test subset, majority vote), mean over training seeds "
                "of the per-seed difference, t interval; 'no change' = within 5 points",
        form="no_change", margin=0.05, unit=" points") for a in ("all", "tuned HP")},
}
#: the papers' figures and the book's fixed settings that the prose may type
QUOTED_NUMBERS = ("+40", "+40%", "40%", "5 points", "0.9", "75", "20%", "95%")


@dataclass(frozen=True)
class HeteroConfig:
    dataset: str
    n_values: tuple[int, ...]
    per_node: int
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
    tune_trials: int
    tune_epochs: int
    axes: tuple[str, ...] = AXES
    votes: tuple[str, ...] = ("hard", "soft", "weighted")
    backend: str = "local"
    ray_address: str | None = None
    num_cpus: int | None = None
    dirichlet_alpha: float = 0.9
    batch_size: int = 64
    threads: int = 1  # torch threads here while Ray trains on every core (2 threads on 2 busy cores: 40x slower)
    seed: int = 0
    seeds: tuple[int, ...] = (0,)  # training seeds of the nodes (verdicts: a t interval over them)
    speed: tuple[tuple[str, object], ...] = ()  # train.speed_options of the preset, for nodes and surrogates

    def __post_init__(self):
        unknown = [a for a in self.axes if a not in AXES]
        if unknown:
            raise ConfigError(f"Unknown axes {unknown}: choose from {AXES}.")
        bad = [a for a in self.attacks if a not in TRANSFER_ATTACKS]
        if bad:
            raise ConfigError(f"Unknown attacks {bad}: choose from {TRANSFER_ATTACKS}.")
        if self.backend not in D.BACKENDS:
            raise ConfigError(f"Unknown backend {self.backend!r}: choose one of {D.BACKENDS}.")
        if self.dataset not in ("cifar10", "fashion_mnist"):
            raise ConfigError(f"Unknown dataset {self.dataset!r}: choose 'cifar10' or 'fashion_mnist'.")
        if "ENS" not in self.axes:
            raise ConfigError("the axes must include 'ENS' (the baseline and the single model).")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct training seeds, got {self.seeds!r}.")

    @property
    def n_max(self) -> int:
        return max(self.n_values)

    @classmethod
    def from_preset(cls, preset: str, seed: int = 0, dataset: str = "cifar10", backend: str | None = None,
                    ray_address: str | None = None, **overrides) -> "HeteroConfig":
        """smoke: 2 nodes of 200 images, in-process; cpu: N in {1, 3, 5}, 4,000 images per node, bfloat16 +
        channels-last, Ray; full: N up to 10, 4,000 images per node, ResNet-18 family, Ray."""
        cfg = cls(
            dataset=dataset,
            n_values=pick(preset, smoke=(1, 2), cpu=(1, 3, 5), full=(1, 3, 5, 7, 10)),
            # cpu: the small CNN node reaches 48% on 1,600 images, 58% on 4,000, 63% on 8,000 (6 epochs, bf16,
            # measured); 4,000 keeps the chapter at about an hour from an empty cache on 2 cores
            per_node=pick(preset, smoke=200, cpu=4_000, full=4_000),
            n_attacker=pick(preset, smoke=300, cpu=4_000, full=10_000),
            n_test=pick(preset, smoke=200, cpu=2_000, full=10_000),
            n_attack=pick(preset, smoke=32, cpu=256, full=1_000),
            epochs=pick(preset, smoke=1, cpu=6, full=30),
            node_width=pick(preset, smoke=8, cpu=16, full=32),
            archs=pick(preset, smoke=("cnn", "regnet_x_400mf"),
                       cpu=("cnn", "vgg11", "mobilenet_v2"),  # RegNet does not learn from 1,600 images
                       full=("resnet18", "mobilenet_v2", "vgg11", "regnet_x_400mf", "cnn")),
            optimizers=("sgd", "adam", "adamw", "rmsprop"),
            schedulers=("cosine", "step", "onecycle"),
            surrogates=pick(preset, smoke=(("cnn", 8), ("cnn", 12)), cpu=(("cnn", 24), ("vgg11", 0)),
                            full=(("resnet34", 0), ("densenet121", 0), ("cnn", 64))),
            surrogate_epochs=pick(preset, smoke=1, cpu=8, full=30),
            attacks=TRANSFER_ATTACKS,
            eps_255=8,
            sweep_eps_255=pick(preset, smoke=(4, 8), cpu=(2, 4, 8, 16), full=(2, 4, 8, 16)),
            attack_steps=pick(preset, smoke=2, cpu=10, full=10),
            tune_trials=pick(preset, smoke=2, cpu=4, full=8),
            tune_epochs=pick(preset, smoke=1, cpu=2, full=10),
            backend=backend or pick(preset, smoke="local", cpu="ray", full="ray"),
            ray_address=ray_address,
            seed=seed,
            seeds=pick(preset, smoke=(0,), cpu=(0, 1, 2), full=(0, 1, 2)),
            speed=tuple(speed_options(preset).items()),
        )
        return replace(cfg, **overrides) if overrides else cfg


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Splits:
    pool: rdata.ImageDataset      # the nodes' data (n_max * per_node images)
    attacker: rdata.ImageDataset  # the attacker's own data: no node sees it
    test: rdata.ImageDataset
    shards: dict = field(default_factory=dict)  # mode -> list of ImageDataset


def load_splits(cfg: HeteroConfig) -> Splits:
    """Disjoint node pool and attacker set from the training split; a stratified test subset."""
    train = rdata.load(cfg.dataset, "train")
    test = rdata.load(cfg.dataset, "test").subset(cfg.n_test, cfg.seed)
    need = cfg.n_attacker + cfg.n_max * cfg.per_node
    if need > len(train):
        raise ConfigError(f"{cfg.dataset} has {len(train)} training images; the grid needs {need}.")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
    attacker = train.select(order[:cfg.n_attacker])
    pool = train.select(order[cfg.n_attacker:need])
    shards = {}
    for mode in ("shared", "disjoint", "dirichlet"):
        idx = E.make_shards(pool.labels, cfg.n_max, cfg.per_node, mode, cfg.seed, cfg.dirichlet_alpha)
        shards[mode] = [pool.select(i) for i in idx]
    return Splits(pool, attacker, test, shards)


def fashion_mnist_available(download: bool | None = None) -> bool:
    """Whether Fashion-MNIST can be loaded (downloads only in Colab unless ``download=True``)."""
    download = in_colab() if download is None else download
    try:
        rdata.load_fashion_mnist("test", download=download)
        return True
    except (rdata.DatasetNotFoundError, RuntimeError, OSError) as e:
        print("Fashion-MNIST is not available here, so this part is skipped "
              f"(offline machine; in Colab it downloads).\n  {str(e).splitlines()[0]}")
        return False


# --------------------------------------------------------------------------------------------- nodes
def node_seed(cfg: HeteroConfig, i: int, seed: int = 0) -> int:
    """Training seed of node ``i`` for training seed ``seed`` (seed 0 keeps the historical ``cfg.seed + i``)."""
    return cfg.seed + i + 1000 * seed


def _node(cfg: HeteroConfig, splits: Splits, axis: str, i: int, arch=None, optimizer="sgd", scheduler="cosine",
          shard="disjoint", seed: int = 0) -> D.NodeSpec:
    arch = arch or "cnn"
    kw = (("width", cfg.node_width),) if arch == "cnn" else ()
    train = D.default_train(optimizer, scheduler, cfg.epochs, cfg.batch_size, node_seed(cfg, i, seed)).replace(
        **dict(cfg.speed))
    return D.NodeSpec(arch, train, splits.shards[shard][i], kw, label=f"{axis} #{i}")


def tuned_axes(cfg: HeteroConfig) -> tuple[str, ...]:
    """The axes whose nodes are tuned per node: every one but ENS (authors' protocol)."""
    return tuple(a for a in cfg.axes if a != "ENS")


def plan(cfg: HeteroConfig, splits: Splits, seed: int = 0) -> dict[str, list[D.NodeSpec]]:
    """Node specs per axis (``n_max`` each, before tuning); instantiation (axis, N) = the first N.

    Every axis, ENS included, gives node ``i`` the disjoint shard ``i`` (Dirichlet shards for non-IID)."""
    out = {}
    for axis in cfg.axes:
        nodes = []
        for i in range(cfg.n_max):
            a = cfg.archs[i % len(cfg.archs)]
            o = cfg.optimizers[i % len(cfg.optimizers)]
            s = cfg.schedulers[i % len(cfg.schedulers)]
            kw = {"ENS": {}, "tuned HP": {}, "data non-IID": {"shard": "dirichlet"},
                  "architecture": {"arch": a}, "optimizer": {"optimizer": o}, "scheduler": {"scheduler": s},
                  "all": {"shard": "disjoint", "arch": a, "optimizer": o, "scheduler": s}}[axis]
            nodes.append(_node(cfg, splits, axis, i, seed=seed, **kw))
        out[axis] = nodes
    return out


def build_nodes(cfg: HeteroConfig, run: Run, splits: Splits, seeds=None, also=()):
    """Tune (every axis but ENS) and train every node, for every training seed.

    Each node is tuned once, on its own shard, with the first training seed's spec; its tuned lr, momentum and
    weight decay are then used for every training seed (the hyperparameters belong to the node: its shard,
    architecture, optimizer and schedule; the seeds measure how its training varies). ``also``: more node specs
    (the attacker's surrogates) trained in the same pool, so that the workers stay busy until the last model is
    done. Returns ``(plans, models, tuning frame)`` with ``plans[seed][axis]`` the node specs (tuned)."""
    seeds = tuple(cfg.seeds if seeds is None else seeds)
    first, best, rows = plan(cfg, splits, seeds[0]), {}, []
    for axis in tuned_axes(cfg):
        for i, node in enumerate(tqdm(first[axis], desc=f"tuning {axis}")):
            best[axis, i] = D.tune_node(node, cfg.tune_trials, cfg.tune_epochs, cfg.backend, cfg.ray_address,
                                        cfg.num_cpus)
            rows.append({"axis": axis, "node": i, "arch": node.arch, "optimizer": node.train.optimizer,
                         **best[axis, i]})
    plans = {}
    for seed in seeds:
        nodes = plan(cfg, splits, seed)
        for axis in tuned_axes(cfg):
            nodes[axis] = [D.tuned(node, best[axis, i]) for i, node in enumerate(nodes[axis])]
        plans[seed] = nodes
    flat = [n for nodes in plans.values() for ns in nodes.values() for n in ns]
    trained = D.train_nodes([*flat, *also], cfg.backend, run.device, cfg.ray_address, cfg.num_cpus)
    models = {n.key: trained[n.key] for n in flat}  # the nodes only: ``also`` is loaded by its own caller
    return plans, models, pd.DataFrame(rows)


def surrogate_specs(cfg: HeteroConfig, splits: Splits) -> list[D.NodeSpec]:
    """The attacker's own models: node specs on the attacker's data, which no node sees."""
    specs = []
    for j, (arch, width) in enumerate(cfg.surrogates):
        kw = (("width", width),) if arch == "cnn" else ()
        train = TrainConfig(epochs=cfg.surrogate_epochs, batch_size=cfg.batch_size, optimizer="sgd", lr=0.05,
                            scheduler="cosine", seed=cfg.seed + 1000 + j, **dict(cfg.speed))
        specs.append(D.NodeSpec(arch, train, splits.attacker, kw, label=f"surrogate {arch}"))
    return specs


def train_surrogates(cfg: HeteroConfig, run: Run, splits: Splits) -> list:
    """The attacker's own models, trained on its own data (through the cache)."""
    specs = surrogate_specs(cfg, splits)
    models = D.train_nodes(specs, cfg.backend, run.device, cfg.ray_address, cfg.num_cpus)
    return [models[s.key] for s in specs]


# ---------------------------------------------------------------------------------------- attacking
def attack_set(cfg: HeteroConfig, splits: Splits) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n_attack`` test images every transfer attack perturbs, with *their* labels (a stratified
    subset of the test set, not its first ``n_attack`` items)."""
    return splits.test.tensors(cfg.n_attack)


def craft(cfg: HeteroConfig, surrogates, splits: Splits) -> dict:
    """Adversarial examples ``{(attack, eps_255): x_adv}`` crafted on the surrogates, plus ``("clean", 0)``.

    Cached under ``$ROBUSTNB_CACHE/adversarial`` by surrogates, attack, budget, steps and test images
    (:func:`robustnb.cache.cached_tensors`: verified on load, recomputed when damaged).
    """
    x, y = attack_set(cfg, splits)
    out = {("clean", 0): x}
    eps_values = sorted(set(cfg.sweep_eps_255) | {cfg.eps_255})
    jobs = [(a, e) for e in eps_values for a in cfg.attacks]
    sur_keys = [m.robustnb_info["key"] for m in surrogates]
    for attack, eps in tqdm(jobs, desc="crafting transfer attacks"):
        spec = {"kind": "transfer_examples", "surrogates": sur_keys, "attack": attack, "eps_255": eps,
                "steps": cfg.attack_steps, "test_fp": dataset_fingerprint(splits.test), "n": cfg.n_attack}

        atk = make_transfer_attack(attack, surrogates, eps / 255, steps=cfg.attack_steps)
        spec["reverse_step"] = getattr(atk, "reverse_step", None)  # SAM's changed from eps/15 to eps/10

        def compute(atk=atk):
            return {"x_adv": perturb(atk, x, y, batch_size=128)}

        out[(attack, eps)] = cached_tensors(attack, spec, compute, folder="adversarial")["x_adv"]
    return out


@experiment
def _node_logits(models: dict, splits: Splits, adv: dict, cfg: HeteroConfig) -> dict:
    """Logits of every distinct node on the clean test set and on every adversarial set."""
    x_test, _ = splits.test.tensors()
    out = {}
    for key, model in tqdm(models.items(), desc="node predictions"):
        out[key] = {"test": predict(model, x_test)}
        for k, x in adv.items():
            out[key][k] = predict(model, x)
    return out


def evaluate_grid(cfg: HeteroConfig, nodes: dict, models: dict, splits: Splits, adv: dict, seed: int = 0,
                  logits: dict | None = None) -> pd.DataFrame:
    """Tidy frame: one row per (seed, axis, N, vote, attack, eps) with clean / robust accuracy and success rate.

    ``clean_acc`` is on the ``n_test`` test images. On the ``n_attack`` attacked images: ``robust_acc_cc``,
    the headline (the authors' metric), is the share of the images the instantiation classifies correctly
    when clean that it still classifies correctly after the attack (= 1 - ``success_rate``);
    ``robust_acc`` is the unconditional accuracy on the attacked images; ``n_clean_correct`` the number of
    clean-correct images behind ``robust_acc_cc``. Votes are unweighted (``weighted`` = the per-sample
    softmax-confidence vote of :func:`robustnb.ensembles.vote_scores`).
    """
    logits = _node_logits(models, splits, adv, cfg) if logits is None else logits
    y_test = splits.test.labels
    _, y_att = attack_set(cfg, splits)
    rows = []
    for axis, specs in nodes.items():
        for n in cfg.n_values:
            keys = [s.key for s in specs[:n]]
            for vote in cfg.votes:

                def decide(which):
                    return E.aggregate(torch.stack([logits[k][which] for k in keys]), vote)

                clean_test = float((decide("test") == y_test).float().mean())
                clean_att = decide(("clean", 0)) == y_att
                n_cc = int(clean_att.sum())
                for (attack, eps) in adv:
                    if attack == "clean":
                        continue
                    hit = decide((attack, eps)) == y_att
                    kept = float((clean_att & hit).sum() / n_cc) if n_cc else float("nan")
                    rows.append({"seed": seed, "dataset": cfg.dataset, "instantiation": axis, "n_nodes": n,
                                 "vote": vote, "attack": attack, "eps_255": eps, "clean_acc": clean_test,
                                 "robust_acc_cc": kept, "robust_acc": float(hit.float().mean()),
                                 "success_rate": 1 - kept, "n_clean_correct": n_cc})
    return pd.DataFrame(rows)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch threads (``None``: unchanged), restoring the previous number after."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_study(cfg: HeteroConfig, run: Run):
    """Everything: splits, nodes (tuned and trained, for every training seed), surrogates, attacks, the frame.

    Returns a dict with ``frame`` (see :func:`evaluate_grid`, a ``seed`` column per training seed),
    ``tuning``, ``plans`` (seed -> axis -> node specs), ``nodes`` (the first seed's), ``models``,
    ``surrogates``, ``adv`` and ``splits``.
    """
    splits = load_splits(cfg)
    # while Ray workers train on every core, this process keeps to cfg.threads (2 threads on 2 busy cores ran
    # 40x slower); crafting and evaluating afterwards have the cores to themselves and use all of them
    with torch_threads(cfg.threads if cfg.backend == "ray" else None):
        try:
            # nodes and surrogates in one pool, costliest first (the VGG surrogate last kept one core idle)
            plans, models, tuning = build_nodes(cfg, run, splits, also=surrogate_specs(cfg, splits))
            surrogates = train_surrogates(cfg, run, splits)  # loads them from the model cache
        finally:
            D.ray_shutdown()
    adv = craft(cfg, surrogates, splits)
    logits = _node_logits(models, splits, adv, cfg)
    frame = pd.concat([evaluate_grid(cfg, plans[sd], models, splits, adv, sd, logits) for sd in cfg.seeds],
                      ignore_index=True)
    return {"frame": frame, "tuning": tuning, "plans": plans, "nodes": plans[cfg.seeds[0]], "models": models,
            "surrogates": surrogates, "adv": adv, "splits": splits, "cfg": cfg}


# ------------------------------------------------------------------------------------------- frames
KEYS = ["dataset", "instantiation", "n_nodes", "vote", "attack", "eps_255"]
METRICS = ["clean_acc", "robust_acc_cc", "robust_acc", "success_rate"]


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
        wide = d.pivot_table(index=["instantiation", "n_nodes"], columns="attack", values=metric, sort=False)
        parts.append(wide[attacks].rename(columns=lambda a: f"{a}{suffix}"))
    clean = d.groupby(["instantiation", "n_nodes"], sort=False)["clean_acc"].first()
    out = pd.concat([clean.rename("clean"), *parts], axis=1).reset_index()
    single = out[(out.instantiation == "ENS") & (out.n_nodes == 1)].assign(instantiation="single model")
    rest = out[out.n_nodes > 1]
    return pd.concat([single, rest]).reset_index(drop=True)


def per_seed_diff(frame: pd.DataFrame, axis: str, n_nodes: int, attack: str, eps_255: float,
                  metric: str = "robust_acc_cc", vote: str = "hard") -> np.ndarray:
    """``axis`` minus ENS on ``metric``, one value per training seed (same N, attack, budget and vote).

    Empty when the axis or N is not in the frame."""
    d = frame[(frame.vote == vote) & (frame.attack == attack) & np.isclose(frame.eps_255, eps_255)
              & (frame.n_nodes == n_nodes)]
    a = d[d.instantiation == axis].set_index("seed")[metric]
    b = d[d.instantiation == "ENS"].set_index("seed")[metric]
    both = a.index.intersection(b.index)
    return (a.loc[both] - b.loc[both]).to_numpy(dtype=float)


def gains(frame: pd.DataFrame, cfg: HeteroConfig, vote: str = "hard") -> pd.DataFrame:
    """Every instantiation minus ENS with the same N (main epsilon, every attack), mean over training seeds
    with a t interval over seeds (``stats.seeds_ci``; NaN with one seed): ``robust_gain`` on the
    clean-correct images (headline), ``robust_gain_all`` unconditional, ``clean_cost`` = ENS clean minus
    the instantiation's."""
    rows = []
    for axis in [a for a in cfg.axes if a != "ENS"]:
        for n in [n for n in cfg.n_values if n > 1]:
            for attack in cfg.attacks:
                g = stats.seeds_ci(per_seed_diff(frame, axis, n, attack, cfg.eps_255, "robust_acc_cc", vote))
                ga = stats.seeds_ci(per_seed_diff(frame, axis, n, attack, cfg.eps_255, "robust_acc", vote))
                c = stats.seeds_ci(-per_seed_diff(frame, axis, n, attack, cfg.eps_255, "clean_acc", vote))
                rows.append({"instantiation": axis, "n_nodes": n, "attack": attack, "robust_gain": g.value,
                             "low": g.low, "high": g.high, "robust_gain_all": ga.value, "clean_cost": c.value,
                             "seeds": g.n})
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


def explore(frame: pd.DataFrame, cfg: HeteroConfig):
    """Live explorer: pick epsilon and attack, see robust accuracy per instantiation vs N (reads the frame)."""
    d = seed_mean(frame)
    d = d[d.vote == "hard"]
    eps_values = sorted(d.eps_255.unique())

    def show(epsilon, attack):
        sub = d[(d.attack == attack) & (np.isclose(d.eps_255, epsilon * 255))]
        return plots.line(sub, x="n_nodes", y="robust_acc_cc", color="instantiation",
                          title=f"{attack.upper()} at epsilon {epsilon * 255:.0f}/255: robust accuracy",
                          labels={"n_nodes": "nodes N", "robust_acc_cc": "robust accuracy (clean-correct)"})

    return widgets.explorer(show, epsilon=widgets.epsilon_slider(eps_values, value=cfg.eps_255),
                            attack=widgets.choice(list(cfg.attacks), "attack", value="cwa" if "cwa" in cfg.attacks
                                                  else cfg.attacks[0]))


def at(frame: pd.DataFrame, eps_255: float | None = None, vote: str = "hard",
       n_nodes: int | None = None) -> pd.DataFrame:
    """Rows of the grid frame (mean over training seeds) with one vote, at one epsilon (None: all) and,
    optionally, one N."""
    d = seed_mean(frame)
    d = d[d.vote == vote]
    if eps_255 is not None:
        d = d[np.isclose(d.eps_255, eps_255)]
    return d if n_nodes is None else d[d.n_nodes == n_nodes]


def node_overview(result: dict, axes=("ENS", "architecture", "tuned HP", "all")) -> pd.DataFrame:
    """What each node of the largest instantiation of ``axes`` is (architecture, optimizer, schedule, HP),
    for the first training seed."""
    rows = []
    for axis in axes:
        for i, s in enumerate(result["nodes"].get(axis, [])):
            t = s.train
            rows.append({"instantiation": axis, "node": i, "arch": s.arch, "optimizer": t.optimizer,
                         "scheduler": t.scheduler, "lr": t.lr, "momentum": t.momentum,
                         "weight_decay": t.weight_decay, "shard_size": len(s.data),
                         "train_acc": float(result["models"][s.key].robustnb_info["history"]["train_acc"].iloc[-1])})
    return pd.DataFrame(rows)


def vote_comparison(frame: pd.DataFrame, cfg: HeteroConfig, attack: str = "cwa") -> pd.DataFrame:
    """Robust accuracy of every instantiation with the largest N under each vote (main epsilon)."""
    d = seed_mean(frame)
    d = d[np.isclose(d.eps_255, cfg.eps_255) & (d.attack == attack) & (d.n_nodes == cfg.n_max)]
    return d[["instantiation", "vote", "clean_acc", "robust_acc_cc", "robust_acc"]].reset_index(drop=True)


def fashion_mnist_study(run: Run, backend: str | None = None, ray_address: str | None = None,
                        axes=("ENS", "tuned HP", "optimizer", "all")):
    """The same grid on Fashion-MNIST (fewer axes) when the data is there; else prints why and returns None."""
    if not fashion_mnist_available():
        return None
    cfg = HeteroConfig.from_preset(run.preset, run.seed, dataset="fashion_mnist", backend=backend,
                                   ray_address=ray_address, axes=axes,
                                   archs=("cnn", "regnet_x_400mf", "mobilenet_v2"))
    return main_table(run_study(cfg, run)["frame"], cfg)


# ------------------------------------------------------------------------------------------- claims
def claim_n(cfg: HeteroConfig, n: int) -> int:
    """The N a claim "at N = n" uses: ``n`` if the preset has it, else the largest N > 1 below it (smoke: 2)."""
    below = [m for m in cfg.n_values if 1 < m <= n]
    return max(below) if below else max(cfg.n_values)


def _claim_target(claim_id: str) -> tuple[str, str, int]:
    """(kind, axis, n) of a declared claim id."""
    body, n = claim_id.rsplit("_n", 1)
    slug_axis = {v: k for k, v in _AXIS_SLUG.items()}
    for kind in ("clean_cost", "gain"):
        prefix = f"he_{kind}_"
        if body.startswith(prefix):
            return kind, slug_axis[body[len(prefix):]], int(n)
    raise KeyError(claim_id)


def claim_estimate(frame: pd.DataFrame, cfg: HeteroConfig, claim_id: str) -> stats.Estimate:
    """The estimate behind one claim: a t interval over training seeds of the per-seed difference."""
    kind, axis, n = _claim_target(claim_id)
    n = claim_n(cfg, n)
    if kind == "gain":
        diff = per_seed_diff(frame, axis, n, HEADLINE_ATTACK, cfg.eps_255, "robust_acc_cc")
    else:
        diff = -per_seed_diff(frame, axis, n, HEADLINE_ATTACK, cfg.eps_255, "clean_acc")
    return stats.seeds_ci(diff)


def claims(frame: pd.DataFrame, cfg: HeteroConfig) -> pd.DataFrame:
    """The chapter's claims table (columns ``stats.CLAIM_COLUMNS``, one row per ``PAPER_CLAIMS`` entry);
    verdicts by ``stats.verdict`` (with one training seed every interval is NaN: inconclusive)."""
    return stats.claims_table(CHAPTER, PAPER_CLAIMS, {cid: claim_estimate(frame, cfg, cid) for cid in PAPER_CLAIMS})


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
    g = g[(g.n_nodes == n5)]
    cw = g[g.attack == HEADLINE_ATTACK].set_index("instantiation")
    best = cw.robust_gain.idxmax() if len(cw) and cw.robust_gain.notna().any() else None
    spread = g.groupby("attack").robust_gain.mean()
    others = ", ".join(f"{a.upper()} {_pct(v, True)}" for a, v in spread.items() if a != HEADLINE_ATTACK)
    ens_n = frame[(frame.instantiation == "ENS") & (frame.n_nodes == n5) & (frame.vote == "hard")]
    return {
        "he_seeds": str(len(cfg.seeds)),
        "he_interval_note": ("with a single training seed there is no interval, so every verdict is inconclusive at "
                             "this size and the table shows n/a" if len(cfg.seeds) < 2 else
                             f"the intervals are over {len(cfg.seeds)} training seeds"),
        "he_n_large": str(n5),
        "he_n_small": str(claim_n(cfg, 3)),
        "he_n_attack": f"{cfg.n_attack:,}",
        "he_per_node": f"{cfg.per_node:,}",
        "he_epochs": str(cfg.epochs),
        "he_ens_cwa_cc": _pct(get("ENS", "robust_acc_cc")),
        "he_all_cwa_cc": _pct(get("all", "robust_acc_cc")),
        "he_ens_cwa_all": _pct(get("ENS", "robust_acc")),
        "he_all_cwa_all": _pct(get("all", "robust_acc")),
        "he_ens_clean": _pct(get("ENS", "clean_acc")),
        "he_all_clean": _pct(get("all", "clean_acc")),
        "he_ens_clean_correct": f"{ens_n.n_clean_correct.mean():.0f}" if len(ens_n) else "n/a",
        "he_best_axis": (f"the largest mean CWA gain at N = {n5} is {best}'s ({_pct(cw.robust_gain[best], True)})"
                         if best is not None else "no axis could be compared"),
        "he_other_attacks": (f"averaged over the axes, the gain under the other attacks is {others}" if others
                             else "no other attack ran"),
    }
