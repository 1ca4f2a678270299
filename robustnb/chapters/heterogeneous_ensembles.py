"""Chapter ``book/heterogeneous_ensembles.ipynb``: heterogeneous distributed learning against transfer attacks
(Andreina, Zimmer, Karame).

The grid: for every *instantiation* (an axis of heterogeneity, or none) and every number of nodes N,
node ``i`` has a fixed :class:`robustnb.distributed.NodeSpec` that does not depend on N, so an instantiation
with N nodes is the first N nodes of the largest one and every node is trained once (model cache):

=================  ========================================================================
``ENS``            homogeneous ensemble: same data (shard 0), the small CNN, SGD, cosine, default
                   hyperparameters; nodes differ only by their seed. N = 1 is the *single model*.
``data``           ENS, but node ``i`` trains on its own disjoint IID shard ``i``
``data non-IID``   ENS, but Dirichlet(0.9) non-IID shards
``architecture``   ENS, but node ``i`` uses architecture ``archs[i % len]``
``optimizer``      ENS, but optimizer ``optimizers[i % len]`` (with that optimizer's default hyperparameters)
``scheduler``      ENS, but learning-rate schedule ``schedulers[i % len]``
``tuned HP``       ENS, but each node's lr / momentum / weight decay tuned on its own data
``all``            every axis at once: disjoint shards, architectures, optimizers, schedules, tuned
=================  ========================================================================

Node 0 of most axes equals ENS node 0, so it is trained once. The attacker trains its own surrogates on
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
from robustnb import plots, widgets
from robustnb.attacks import TRANSFER_ATTACKS, make_transfer_attack, perturb
from robustnb.cache import cached_tensors, dataset_fingerprint
from robustnb.config import ConfigError, Run, in_colab, pick
from robustnb.train import TrainConfig, predict

AXES = ("ENS", "data", "data non-IID", "architecture", "optimizer", "scheduler", "tuned HP", "all")


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
    threads: int = 1  # torch threads in this process: 2 threads on 2 *shared* cores ran 40x slower than 1
    seed: int = 0

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

    @property
    def n_max(self) -> int:
        return max(self.n_values)

    @classmethod
    def from_preset(cls, preset: str, seed: int = 0, dataset: str = "cifar10", backend: str | None = None,
                    ray_address: str | None = None, **overrides) -> "HeteroConfig":
        """smoke: 2 nodes of 200 images, in-process; cpu: N in {1, 3, 5}, 1,600 images per node, Ray;
        full: N up to 10, 5,000 images per node, ResNet-18 family, Ray."""
        cfg = cls(
            dataset=dataset,
            n_values=pick(preset, smoke=(1, 2), cpu=(1, 3, 5), full=(1, 3, 5, 7, 10)),
            per_node=pick(preset, smoke=200, cpu=1_600, full=4_000),
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
def _node(cfg: HeteroConfig, splits: Splits, axis: str, i: int, arch=None, optimizer="sgd", scheduler="cosine",
          shard="shared") -> D.NodeSpec:
    arch = arch or "cnn"
    kw = (("width", cfg.node_width),) if arch == "cnn" else ()
    train = D.default_train(optimizer, scheduler, cfg.epochs, cfg.batch_size, cfg.seed + i)
    return D.NodeSpec(arch, train, splits.shards[shard][i], kw, label=f"{axis} #{i}")


def plan(cfg: HeteroConfig, splits: Splits) -> dict[str, list[D.NodeSpec]]:
    """Node specs per axis (``n_max`` each, before tuning); instantiation (axis, N) = the first N."""
    out = {}
    for axis in cfg.axes:
        nodes = []
        for i in range(cfg.n_max):
            a = cfg.archs[i % len(cfg.archs)]
            o = cfg.optimizers[i % len(cfg.optimizers)]
            s = cfg.schedulers[i % len(cfg.schedulers)]
            kw = {"ENS": {}, "tuned HP": {}, "data": {"shard": "disjoint"}, "data non-IID": {"shard": "dirichlet"},
                  "architecture": {"arch": a}, "optimizer": {"optimizer": o}, "scheduler": {"scheduler": s},
                  "all": {"shard": "disjoint", "arch": a, "optimizer": o, "scheduler": s}}[axis]
            nodes.append(_node(cfg, splits, axis, i, **kw))
        out[axis] = nodes
    return out


def build_nodes(cfg: HeteroConfig, run: Run, splits: Splits):
    """Tune (axes ``tuned HP`` and ``all``) and train every node. Returns ``(plan, models, tuning frame)``."""
    nodes = plan(cfg, splits)
    rows = []
    for axis in ("tuned HP", "all"):
        if axis not in nodes:
            continue
        for i, node in enumerate(tqdm(nodes[axis], desc=f"tuning {axis}")):
            best = D.tune_node(node, cfg.tune_trials, cfg.tune_epochs, cfg.backend, cfg.ray_address, cfg.num_cpus)
            nodes[axis][i] = D.tuned(node, best)
            rows.append({"axis": axis, "node": i, "arch": node.arch, "optimizer": node.train.optimizer, **best})
    flat = [n for ns in nodes.values() for n in ns]
    models = D.train_nodes(flat, cfg.backend, run.device, cfg.ray_address, cfg.num_cpus)
    return nodes, models, pd.DataFrame(rows)


def train_surrogates(cfg: HeteroConfig, run: Run, splits: Splits) -> list:
    """The attacker's own models, trained on its own data (through the cache)."""
    specs = []
    for j, (arch, width) in enumerate(cfg.surrogates):
        kw = (("width", width),) if arch == "cnn" else ()
        train = TrainConfig(epochs=cfg.surrogate_epochs, batch_size=cfg.batch_size, optimizer="sgd", lr=0.05,
                            scheduler="cosine", seed=cfg.seed + 1000 + j)
        specs.append(D.NodeSpec(arch, train, splits.attacker, kw, label=f"surrogate {arch}"))
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

        def compute(attack=attack, eps=eps):
            atk = make_transfer_attack(attack, surrogates, eps / 255, steps=cfg.attack_steps)
            return {"x_adv": perturb(atk, x, y, batch_size=128)}

        out[(attack, eps)] = cached_tensors(attack, spec, compute, folder="adversarial")["x_adv"]
    return out


def _node_logits(models: dict, splits: Splits, adv: dict, cfg: HeteroConfig) -> dict:
    """Logits of every distinct node on the clean test set and on every adversarial set."""
    x_test, _ = splits.test.tensors()
    out = {}
    for key, model in tqdm(models.items(), desc="node predictions"):
        out[key] = {"test": predict(model, x_test)}
        for k, x in adv.items():
            out[key][k] = predict(model, x)
    return out


def evaluate_grid(cfg: HeteroConfig, nodes: dict, models: dict, splits: Splits, adv: dict) -> pd.DataFrame:
    """Tidy frame: one row per (axis, N, vote, attack, eps) with clean / robust accuracy and success rate.

    ``clean_acc`` is on the ``n_test`` test images; ``robust_acc`` on the ``n_attack`` attacked ones;
    ``success_rate`` = share of the attacked images the instantiation classified correctly when clean that
    it misclassifies after the attack (the authors' metric).
    """
    logits = _node_logits(models, splits, adv, cfg)
    y_test = splits.test.labels
    _, y_att = attack_set(cfg, splits)
    rows = []
    for axis, specs in nodes.items():
        for n in cfg.n_values:
            keys = [s.key for s in specs[:n]]
            weights = [float(models[k].robustnb_info["history"]["train_acc"].iloc[-1])
                       if len(models[k].robustnb_info["history"]) else 1.0 for k in keys]
            for vote in cfg.votes:
                w = weights if vote != "hard" else None

                def decide(which):
                    return E.aggregate(torch.stack([logits[k][which] for k in keys]), vote, w)

                clean_test = float((decide("test") == y_test).float().mean())
                clean_att = decide(("clean", 0)) == y_att
                for (attack, eps) in adv:
                    if attack == "clean":
                        continue
                    hit = decide((attack, eps)) == y_att
                    rows.append({"dataset": cfg.dataset, "instantiation": axis, "n_nodes": n, "vote": vote,
                                 "attack": attack, "eps_255": eps, "clean_acc": clean_test,
                                 "robust_acc": float(hit.float().mean()),
                                 "success_rate": float((clean_att & ~hit).sum() / clean_att.sum().clamp(min=1))})
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
    """Everything: splits, nodes (tuned and trained), surrogates, attacks, the grid frame.

    Returns a dict with ``frame`` (see :func:`evaluate_grid`), ``tuning``, ``nodes``, ``models``,
    ``surrogates``, ``adv`` and ``splits``.
    """
    splits = load_splits(cfg)
    with torch_threads(cfg.threads):
        try:
            nodes, models, tuning = build_nodes(cfg, run, splits)
            surrogates = train_surrogates(cfg, run, splits)
        finally:
            D.ray_shutdown()
        adv = craft(cfg, surrogates, splits)
        frame = evaluate_grid(cfg, nodes, models, splits, adv)
    return {"frame": frame, "tuning": tuning, "nodes": nodes, "models": models, "surrogates": surrogates,
            "adv": adv, "splits": splits, "cfg": cfg}


# ------------------------------------------------------------------------------------------- frames
def main_table(frame: pd.DataFrame, cfg: HeteroConfig, vote: str = "hard") -> pd.DataFrame:
    """Wide table at the main epsilon: clean accuracy and robust accuracy per attack, per instantiation and N.

    The single model (ENS at N = 1) gets its own first row; N = 1 rows of the other axes are left out
    where their node 0 is the same model.
    """
    d = frame[(frame.vote == vote) & (frame.eps_255 == cfg.eps_255)]
    wide = d.pivot_table(index=["instantiation", "n_nodes"], columns="attack", values="robust_acc", sort=False)
    wide = wide[[a for a in cfg.attacks if a in wide.columns]].add_prefix("robust ")
    clean = d.groupby(["instantiation", "n_nodes"], sort=False)["clean_acc"].first()
    out = pd.concat([clean.rename("clean"), wide], axis=1).reset_index()
    single = out[(out.instantiation == "ENS") & (out.n_nodes == 1)].assign(instantiation="single model")
    rest = out[out.n_nodes > 1]
    return pd.concat([single, rest]).reset_index(drop=True)


def gains(frame: pd.DataFrame, cfg: HeteroConfig, vote: str = "hard") -> pd.DataFrame:
    """Robust and clean accuracy of every instantiation minus ENS with the same N (main epsilon)."""
    d = frame[(frame.vote == vote) & (frame.eps_255 == cfg.eps_255) & (frame.n_nodes > 1)]
    base = d[d.instantiation == "ENS"].set_index(["n_nodes", "attack"])
    rows = []
    for _, r in d[d.instantiation != "ENS"].iterrows():
        b = base.loc[(r.n_nodes, r.attack)]
        rows.append({"instantiation": r.instantiation, "n_nodes": r.n_nodes, "attack": r.attack,
                     "robust_gain": r.robust_acc - b.robust_acc, "clean_cost": b.clean_acc - r.clean_acc})
    return pd.DataFrame(rows)


def pareto(frame: pd.DataFrame, attack: str = "cwa", eps_255: float = 8, vote: str = "hard") -> pd.DataFrame:
    """Clean vs robust accuracy per (instantiation, N) with a ``pareto`` flag (not dominated in both)."""
    d = frame[(frame.attack == attack) & (frame.eps_255 == eps_255) & (frame.vote == vote)].copy()
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


def similarity(models: dict, surrogates, nodes: dict, splits: Splits, n_images: int = 128,
               axes=("ENS", "all")) -> pd.DataFrame:
    """Input-gradient cosine similarity (mean over test images) between surrogates and the nodes of ``axes``.

    High similarity between a node and the surrogates means the attacker's gradients point where the
    node's do, the mechanism that makes transfer attacks work.
    """
    x, y = splits.test.tensors(n_images)
    with torch_threads(1):
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
    d = frame[frame.vote == "hard"]
    eps_values = sorted(d.eps_255.unique())

    def show(epsilon, attack):
        sub = d[(d.attack == attack) & (np.isclose(d.eps_255, epsilon * 255))]
        return plots.line(sub, x="n_nodes", y="robust_acc", color="instantiation",
                          title=f"{attack.upper()} at epsilon {epsilon * 255:.0f}/255: robust accuracy",
                          labels={"n_nodes": "nodes N", "robust_acc": "robust accuracy"})

    return widgets.explorer(show, epsilon=widgets.epsilon_slider(eps_values, value=cfg.eps_255),
                            attack=widgets.choice(list(cfg.attacks), "attack", value="cwa" if "cwa" in cfg.attacks
                                                  else cfg.attacks[0]))


def at(frame: pd.DataFrame, eps_255: float | None = None, vote: str = "hard",
       n_nodes: int | None = None) -> pd.DataFrame:
    """Rows of the grid frame with one vote, at one epsilon (None: all) and, optionally, one N."""
    d = frame[frame.vote == vote]
    if eps_255 is not None:
        d = d[np.isclose(d.eps_255, eps_255)]
    return d if n_nodes is None else d[d.n_nodes == n_nodes]


def node_overview(result: dict, axes=("ENS", "architecture", "tuned HP", "all")) -> pd.DataFrame:
    """What each node of the largest instantiation of ``axes`` is (architecture, optimizer, schedule, HP)."""
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
    d = frame[np.isclose(frame.eps_255, cfg.eps_255) & (frame.attack == attack) & (frame.n_nodes == cfg.n_max)]
    return d[["instantiation", "vote", "clean_acc", "robust_acc"]].reset_index(drop=True)


def fashion_mnist_study(run: Run, backend: str | None = None, ray_address: str | None = None,
                        axes=("ENS", "data", "optimizer", "all")):
    """The same grid on Fashion-MNIST (fewer axes) when the data is there; else prints why and returns None."""
    if not fashion_mnist_available():
        return None
    cfg = HeteroConfig.from_preset(run.preset, run.seed, dataset="fashion_mnist", backend=backend,
                                   ray_address=ray_address, axes=axes,
                                   archs=("cnn", "regnet_x_400mf", "mobilenet_v2"))
    return main_table(run_study(cfg, run)["frame"], cfg)
