"""Chapter ``book/compressed_domain_shift.ipynb`` (arXiv 2401.12014): train, compress, evaluate, judge.

Every number in the chapter comes from these functions:

* :class:`StudyConfig.from_preset` picks sizes per preset;
* :func:`train_bases` trains the base models (ResNets) through the model cache, and one **attacker** per base
  architecture: the same architecture trained with the same recipe on the same images from another seed
  (:func:`base_spec`, :data:`ATTACKER_SEED_OFFSET`), which no evaluated model descends from;
* :func:`compress_all` makes the compressed models: L1-pruned base models at several rates, larger bases
  pruned to the size of the small one (finding 3), students of the small architecture distilled from each
  larger teacher, and int8-quantized bases (:mod:`robustnb.compression`);
* :func:`evaluate_all` measures every model on every domain (:mod:`robustnb.domains`), clean and under
  FGSM, PGD (torchattacks) and salt & pepper noise (:mod:`robustnb.attacks.noise`), at a light and a heavy
  strength, as one tidy frame;
* :func:`claims` turns that frame into the paper-vs-ours table (:data:`PAPER_CLAIMS`): paired differences
  over the same images with 95% intervals, the verdicts of each claim's form and Holm's reading
  (:func:`robustnb.stats.claims_table`), with ``stand_in`` True on every row of a run on the stand-in;
* :func:`world_claims` builds that frame synthetically at the ``cpu`` preset's shapes, in a world where a claim's
  measured quantity has a chosen true value (``tests/test_claim_worlds.py``).

Attack protocols for FGSM / PGD (:func:`attack_plan`):

``transfer`` (the headline)
    crafted on the attacker of the model's base (:func:`attacker_of`): the base, its pruned versions, the
    students distilled from it and its int8 version all face the *same* adversarial images, crafted on a
    model none of them descends from. (Crafted on the fp32 base itself, the base's own "transfer" row would be
    white-box, int8 would be attacked from its own fp32 weights, nearly white-box, and pruned / distilled models
    from a base they had moved away from by fine-tuning or retraining, so every comparison across methods would
    be biased by how close the attacker was to the model.)
``transfer-arch``
    distilled students only: crafted on the attacker of the student's own architecture, the one yardstick
    shared by students of different teachers (used by the distillation trend claim).
``white-box``
    crafted on the model itself. For int8 models through their own gradient
    (:func:`robustnb.compression.int8_own_gradient`): zero, since every activation is rounded; this attack
    keeps the quantizer's gradient masking.
``bpda``
    int8 models only: int8 forward, fp32 parent backward (:func:`robustnb.compression.int8_bpda`), the
    straight-through attack that removes the masking.

Salt & pepper needs no gradient and attacks every model itself (``query``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy.special import ndtri

from robustnb import compression as C
from robustnb import domains as D
from robustnb import stats
from robustnb.attacks import SaltAndPepper, perturb
from robustnb.attacks.noise import correct_at_budget
from robustnb.cache import cached, data_spec, experiment
from robustnb.config import ConfigError, Run, check_seed, pick
from robustnb.data import OFFICE31_DOMAINS
from robustnb.jobs import Execution, ModelJob, as_execution, ray_session, run_jobs
from robustnb.mechanisms import make
from robustnb.models import count_parameters
from robustnb.progress import tqdm
from robustnb.train import TrainConfig, accuracy, fit, predict, speed_options

#: the size-matched student's method (:func:`compress_all`): distilled, at the pruned model's parameter count
MATCHED = "distilled (size-matched)"
#: the most a size-matched student's parameter count may differ from its pruned counterpart's (Torch-Pruning's
#: counting, :func:`robustnb.compression.parameter_count`)
MATCHED_TOLERANCE = 0.10
METHODS = ("baseline", "pruned", "distilled", MATCHED, "int8")
PROTOCOLS = ("transfer", "transfer-arch", "white-box", "bpda")
#: an attacker trains with its base's recipe and the training seed ``cfg.seed + ATTACKER_SEED_OFFSET``
ATTACKER_SEED_OFFSET = 1000
#: training seeds per preset: every base, attacker, pruned, distilled and int8 model is made once per seed, each
#: seed re-drawing initial weights, data order and augmentation; every method-level claim is a t interval over them
N_SEEDS = 3
#: model names that are a robustnb architecture with keyword arguments (tiny models for the smoke preset)
VARIANTS = {"cnn8": ("cnn", {"width": 8}), "cnn16": ("cnn", {"width": 16})}


def arch_and_kwargs(name: str, cfg: "StudyConfig") -> tuple[str, dict]:
    arch, kw = VARIANTS.get(name, (name, {}))
    if cfg.pretrained:
        return arch, {**kw, "pretrained": True}
    if cfg.zero_init_residual and arch.startswith("resnet"):
        return arch, {**kw, "zero_init_residual": True}
    return arch, dict(kw)


def build(name: str, cfg: "StudyConfig", data):
    """An untrained classifier for ``data``; with ``cfg.imagenet_stem`` torchvision's stride-2 stem and
    max-pool are kept even for 32 px inputs (16x fewer FLOPs than the CIFAR stem)."""
    arch, kw = arch_and_kwargs(name, cfg)
    c, h, _ = data.image_shape
    size = max(h, 65) if cfg.imagenet_stem else h  # build_classifier keeps the ImageNet stem above 64 px
    return make("architecture", arch, data.num_classes, c, size, data.mean, data.std, **kw)


@dataclass(frozen=True)
class StudyConfig:
    base_archs: tuple[str, ...]          # the first is the small base, also the distillation student
    teacher_archs: tuple[str, ...]       # larger bases distilled into the student
    epochs: tuple[tuple[str, int], ...]  # training epochs per base architecture
    prune_ratios: tuple[float, ...]      # fraction of filters removed per layer (small base)
    matched_ratio: float                 # the small base's ratio the larger bases are pruned to match
    quantize_archs: tuple[str, ...]
    n_train: int | None
    n_eval: int | None
    n_attack: int
    image_size: int
    pretrained: bool
    imagenet_stem: bool
    zero_init_residual: bool             # ResNets from scratch: every residual block starts as the identity
    train: TrainConfig
    finetune: TrainConfig
    temperature: float = 4.0
    alpha: float = 0.9
    eps_255: tuple[float, float] = (1.0, 4.0)     # light, heavy L-inf budgets for FGSM / PGD
    pgd_steps: int = 10
    sp_budgets: tuple[float, float] = (0.01, 0.05)  # light, heavy salt & pepper probabilities
    sp_steps: int = 50
    sp_repeats: int = 2
    sp_max_p: float = 0.5
    n_calibration: int = 256
    latency_batch: int = 64
    seed: int = 0                        # data seed: training subset, attacked images, calibration, s&p noise
    #: training seeds of the study (``train.seed`` is the one this config's models train from: :meth:`at_seed`)
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self):
        seeds = tuple(self.seeds)
        if not seeds or len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds must be distinct training seeds, at least one, got {self.seeds!r}.")
        for s in seeds:
            check_seed(s)
        if set(seeds) & {s + ATTACKER_SEED_OFFSET for s in seeds}:
            raise ConfigError(f"training seeds {seeds!r} overlap their attackers' seeds (seed + "
                              f"{ATTACKER_SEED_OFFSET}): choose seeds below {ATTACKER_SEED_OFFSET}.")

    def at_seed(self, seed: int) -> "StudyConfig":
        """This config with its models trained from training seed ``seed`` (one of :attr:`seeds`): the bases,
        pruned fine-tunes and distilled students re-draw initial weights (the model cache seeds a model's
        initialisation from its spec, which holds the seed), data order and augmentation (``robustnb.train.fit``);
        the data seed :attr:`seed` (training subset, evaluation images, calibration) stays."""
        if seed not in self.seeds:
            raise ConfigError(f"training seed {seed!r} is not one of this study's seeds {self.seeds!r}.")
        return dataclasses.replace(self, train=self.train.replace(seed=seed),
                                   finetune=self.finetune.replace(seed=seed))

    @property
    def train_seed(self) -> int:
        """The training seed of this config's models (``train.seed``)."""
        return self.train.seed

    @classmethod
    def from_preset(cls, preset: str, seed: int = 0, n_seeds: int = N_SEEDS) -> "StudyConfig":
        """The preset's sizes. ``seed``: the data seed and the first training seed; the study trains from the
        training seeds ``seed, seed + 1, ...`` (``n_seeds`` of them, :data:`N_SEEDS` by default).

        ``cpu`` is sized for three seeds in about half an hour on two cores: ResNet-18 and -34 (one teacher, so
        no distillation trend), 4,000 training images, 3 epochs per base, 1 of fine-tuning, the small base pruned
        at two ratios (the matched one and a heavier one), 500 test and 150 attacked images per domain, salt &
        pepper with one repeat. One seed of the earlier sizes (ResNet-18/34/50, 16,000 images, 8 epochs, three
        ratios, 1,000 / 300 images) took 3,831 s."""
        p = preset
        if not isinstance(n_seeds, int) or isinstance(n_seeds, bool) or n_seeds < 1:
            raise ConfigError(f"n_seeds must be a positive integer (training seeds), got {n_seeds!r}.")
        # from scratch (smoke, cpu): one-cycle to lr 0.1 (warm-up, then anneal); fine-tuning pretrained
        # ResNets (full): cosine from 0.05
        train = TrainConfig(epochs=1, batch_size=128, lr=pick(p, smoke=0.1, cpu=0.1, full=0.05), optimizer="sgd",
                            scheduler=pick(p, smoke="onecycle", cpu="onecycle", full="cosine"), seed=seed,
                            **speed_options(p))
        return cls(
            base_archs=pick(p, smoke=("cnn8", "cnn16"), cpu=("resnet18", "resnet34"),
                            full=("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")),
            teacher_archs=pick(p, smoke=("cnn16",), cpu=("resnet34",),
                               full=("resnet34", "resnet50", "resnet101", "resnet152")),
            epochs=pick(p, smoke=(("cnn8", 1), ("cnn16", 1)),
                        cpu=(("resnet18", 3), ("resnet34", 3)),
                        full=tuple((a, 20) for a in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"))),
            prune_ratios=pick(p, smoke=(0.3, 0.5, 0.7), cpu=(0.5, 0.7), full=(0.3, 0.5, 0.7)),
            matched_ratio=0.5,
            quantize_archs=pick(p, smoke=("cnn8",), cpu=("resnet18", "resnet34"),
                                full=("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")),
            n_train=pick(p, smoke=256, cpu=4_000, full=None),
            n_eval=pick(p, smoke=48, cpu=500, full=None),
            n_attack=pick(p, smoke=16, cpu=150, full=500),
            image_size=pick(p, smoke=32, cpu=64, full=224),
            pretrained=pick(p, smoke=False, cpu=False, full=True),
            imagenet_stem=pick(p, smoke=False, cpu=True, full=True),
            zero_init_residual=pick(p, smoke=True, cpu=True, full=False),
            train=train,
            finetune=train.replace(epochs=pick(p, smoke=1, cpu=1, full=5), lr=0.01),
            pgd_steps=pick(p, smoke=3, cpu=5, full=10),
            sp_steps=pick(p, smoke=8, cpu=20, full=100),
            sp_repeats=pick(p, smoke=1, cpu=1, full=3),
            n_calibration=pick(p, smoke=32, cpu=256, full=512),
            latency_batch=pick(p, smoke=16, cpu=64, full=64),
            seed=seed,
            seeds=tuple(seed + k for k in range(n_seeds)),
        )

    def epochs_for(self, arch: str) -> int:
        return dict(self.epochs)[arch]


# ---------------------------------------------------------------------------------------------- data
def load_domains(cfg: StudyConfig, root=None) -> D.Domains:
    """Office-31 when present, else the CIFAR-10 camera-shift stand-in (``image_size`` is for Office-31).

    Office-31's domains hold different photos in different numbers (the source's held-out fifth of amazon, 498
    dslr, 795 webcam): every evaluation set is cut to the smallest one's size (a stratified subset), so that
    each domain gives :func:`per_image` arrays of one length (the stand-in's are one size already)."""
    doms = D.load_domains(cfg.image_size, cfg.n_train, cfg.n_eval, cfg.seed, root)
    if not doms.stand_in:
        n = min(len(ds) for ds in doms.eval.values())
        doms.eval = {dom: ds.subset(n, cfg.seed) for dom, ds in doms.eval.items()}
    return doms


# -------------------------------------------------------------------------------------------- models
@dataclass
class Zoo:
    """The trained models and what each one is: ``info`` has one row per model."""
    models: dict = field(default_factory=dict)
    info: list = field(default_factory=list)
    fp32_of: dict = field(default_factory=dict)  # int8 model -> its fp32 counterpart (the BPDA gradient)
    attackers: dict = field(default_factory=dict)  # base architecture -> its independently trained attacker

    def add(self, name, model, **info):
        self.models[name] = model
        self.info.append({"model": name, **info})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.info)


def base_spec(arch: str, cfg: StudyConfig, data, seed: int | None = None) -> tuple[str, dict, TrainConfig]:
    """Cache name, spec and training config of a base of ``arch`` trained with the chapter's recipe from the
    training seed ``seed`` (``cfg.seed`` by default: the base itself; an attacker uses another seed)."""
    tcfg = cfg.train.replace(epochs=cfg.epochs_for(arch), seed=cfg.train.seed if seed is None else seed)
    spec = {"kind": "classifier", "arch": arch_and_kwargs(arch, cfg), "imagenet_stem": cfg.imagenet_stem,
            **data_spec(data), "train": tcfg.as_dict()}
    return f"{data.name.replace('/', '_')}-{arch}-c3", spec, tcfg


def attacker_seed(cfg: StudyConfig) -> int:
    return cfg.train.seed + ATTACKER_SEED_OFFSET


def attacker_name(arch: str) -> str:
    return f"{arch} attacker"


def _train_base(arch: str, cfg: StudyConfig, device, data, seed: int | None = None, desc: str = "training"):
    name, spec, tcfg = base_spec(arch, cfg, data, seed)
    return cached(name, spec, build=lambda: build(arch, cfg, data),
                  train=lambda m: fit(m, data, tcfg, device=device, desc=f"{desc} {arch}"), device=device)


def base_jobs(cfg: StudyConfig, data) -> list[ModelJob]:
    """The bases and their attackers of every training seed of ``cfg.seeds`` as :class:`robustnb.jobs.ModelJob`
    objects (on the CPU), the largest first."""
    jobs = []
    for train_seed in cfg.seeds:
        c = cfg.at_seed(train_seed)
        for seed in (None, attacker_seed(c)):
            for size_rank, arch in enumerate(c.base_archs):  # the small base first, then the larger ones
                name, spec, _ = base_spec(arch, c, data, seed)
                jobs.append(ModelJob(name, spec, functools.partial(_train_base, arch, c, "cpu", data, seed),
                                     cost=float(size_rank * c.epochs_for(arch))))
    return jobs


def train_bases(cfg: StudyConfig, run: Run, doms: D.Domains, ex: Execution | None = None) -> Zoo:
    """Train (or load from the cache) every base architecture on the source domain from the training seed
    ``cfg.train.seed``, and its attacker: the same architecture, recipe and training images from the training
    seed :func:`attacker_seed` (other initial weights, other data order), kept in ``zoo.attackers`` and never
    evaluated. With ``ex`` on Ray (the default at ``cpu`` and ``full`` on the CPU:
    :meth:`robustnb.jobs.Execution.for_run`) the ones not cached yet, of every seed of ``cfg.seeds``, train first as
    parallel Ray tasks (:func:`base_jobs`); ``ex=Execution("local")`` trains this seed's here, one by one."""
    ex = as_execution(ex, run)
    if ex.backend == "ray":
        with ray_session(ex):
            run_jobs(base_jobs(cfg, doms.train), ex, desc="bases and attackers")
    zoo = Zoo()
    for arch in tqdm(cfg.base_archs, desc="base models"):
        m = _train_base(arch, cfg, run.device, doms.train)
        zoo.add(arch, m, method="baseline", base=arch, arch=arch, detail="fp32", params=count_parameters(m),
                size_mb=C.state_dict_bytes(m) / 1e6)
    for arch in tqdm(cfg.base_archs, desc="attackers"):
        zoo.attackers[arch] = _train_base(arch, cfg, run.device, doms.train, attacker_seed(cfg),
                                          "training the attacker")
    return zoo


def train_seeds(cfg: StudyConfig, run: Run, doms: D.Domains, ex: Execution | None = None) -> dict[int, Zoo]:
    """:func:`train_bases` for every training seed of ``cfg.seeds``: ``{seed: Zoo}``. On Ray the bases and
    attackers of all seeds train as one batch of parallel tasks; the zoos then load them from the cache."""
    ex = as_execution(ex, run)
    zoos = {}
    for i, s in enumerate(cfg.seeds):
        zoos[s] = train_bases(cfg.at_seed(s), run, doms, ex if i == 0 else Execution("local"))
    return zoos


def compress_seeds(cfg: StudyConfig, run: Run, doms: D.Domains, zoos: dict[int, Zoo]) -> dict[int, Zoo]:
    """:func:`compress_all` for every training seed: each seed's pruned, distilled and int8 models come from that
    seed's bases and train from that seed."""
    return {s: compress_all(cfg.at_seed(s), run, doms, zoo) for s, zoo in tqdm(list(zoos.items()), desc="seeds")}


def evaluate_seeds(cfg: StudyConfig, zoos: dict[int, Zoo], doms: D.Domains) -> pd.DataFrame:
    """:func:`evaluate_all` for every training seed, one frame (its column ``seed`` says which): the same test
    and attacked images for every seed."""
    return pd.concat([evaluate_all(cfg.at_seed(s), zoo, doms) for s, zoo in zoos.items()], ignore_index=True)


def attackers_table(cfg: StudyConfig, zoos: dict[int, Zoo], doms: D.Domains) -> pd.DataFrame:
    """:func:`attacker_accuracy` of every seed, one frame with a ``seed`` column."""
    return pd.concat([attacker_accuracy(cfg.at_seed(s), zoo, doms).assign(seed=s) for s, zoo in zoos.items()],
                     ignore_index=True)


def one_model(cfg: StudyConfig, zoo: Zoo, doms: D.Domains, n: int = 64) -> pd.DataFrame:
    """The protocol on one model before the grid: the small base and its int8 copy, quantized here as
    :func:`compress_all` does (same calibration images), on ``n`` images of every domain, clean and under FGSM
    at the heavy budget crafted on the base's attacker (the transfer protocol, the same adversarial images for
    both). Columns ``model, size_mb, domain, role, clean, fgsm`` (accuracies in [0, 1])."""
    arch = cfg.base_archs[0]
    base = zoo.models[arch]
    calib = doms.train.tensors(cfg.n_calibration, cfg.seed + 1)[0]
    pair = {f"{arch} fp32": base, f"{arch} int8": C.quantize_int8(base, calib)}
    fgsm = make("attack", "fgsm", zoo.attackers[arch], eps=cfg.eps_255[-1] / 255)
    rows = []
    for dom, ds in doms.eval.items():
        x, y = ds.tensors(min(n, len(ds)), cfg.seed)
        adv = perturb(fgsm, x, y)
        for name, m in pair.items():
            rows.append({"model": name, "size_mb": C.state_dict_bytes(m) / 1e6, "domain": dom,
                         "role": "source" if dom == doms.source else "target",
                         "clean": float(_hits(m, (x, y)).mean()), "fgsm": float(_hits(m, (adv, y)).mean())})
    return pd.DataFrame(rows)


def matched_student_name(cfg: StudyConfig) -> str:
    """The size-matched student's model name: the small architecture at the width the matched pruning ratio
    leaves, distilled from the small base (:func:`compress_all`, step 3b)."""
    small = cfg.base_archs[0]
    return f"{small} width {1 - cfg.matched_ratio:g} distilled from {small}"


def compress_all(cfg: StudyConfig, run: Run, doms: D.Domains, zoo: Zoo) -> Zoo:
    """Add pruned, distilled and int8 models to ``zoo`` (trained through the cache, from ``cfg.train.seed``).

    Distillation comes twice: students of the small architecture from every larger teacher (method
    ``distilled``, the paper's set-up), and one **size-matched** student (method :data:`MATCHED`): the small
    architecture at the width the matched pruning ratio leaves (:func:`robustnb.compression.slim_student`),
    distilled from the small base itself, so that it and the small base pruned at that ratio are two compressions
    of the same network to the same parameter count (checked with Torch-Pruning's counting within
    :data:`MATCHED_TOLERANCE`)."""
    small = cfg.base_archs[0]
    x0 = doms.train.images[:2].float().div(255)
    base_size = {a: zoo.models[a] for a in cfg.base_archs}

    def add(name, m, method, base, detail, arch):
        size = C.state_dict_bytes(m) / 1e6
        ref = [i for i in zoo.info if i["model"] == base][0]
        zoo.add(name, m, method=method, base=base, arch=arch, detail=detail, params=count_parameters(m),
                size_mb=size, compression=ref["size_mb"] / size)

    for i in zoo.info:
        i["compression"] = 1.0
    # 1. L1 filter pruning of the small base at every rate
    for r in tqdm(cfg.prune_ratios, desc="pruning"):
        base = base_size[small]
        m = C.prune_and_finetune(base, {"base_key": base.robustnb_info["key"]}, r, doms.train, cfg.finetune,
                                 device=run.device, name=f"{small}-l1prune{int(r * 100)}")
        add(f"{small} pruned {r:.0%}", m, "pruned", small, f"ratio {r:g}", small)
    # 2. larger bases pruned to the size of the small base at the matched ratio (finding 3)
    target = count_parameters(zoo.models[f"{small} pruned {cfg.matched_ratio:.0%}"])
    for arch in cfg.base_archs[1:]:
        base = base_size[arch]
        r = C.ratio_for_parameters(lambda: build(arch, cfg, doms.train), target, x0)
        m = C.prune_and_finetune(base, {"base_key": base.robustnb_info["key"]}, r, doms.train, cfg.finetune,
                                 device=run.device, name=f"{arch}-l1prune{int(r * 100)}")
        add(f"{arch} pruned {r:.0%}", m, "pruned", arch, f"ratio {r:g} (size-matched)", arch)
    # 3. distillation into the small architecture from every teacher
    for t in tqdm(cfg.teacher_archs, desc="distillation"):
        teacher = base_size[t]
        m = C.distill(lambda: build(small, cfg, doms.train), teacher,
                      {"base_key": teacher.robustnb_info["key"]}, small, doms.train,
                      cfg.train.replace(epochs=cfg.epochs_for(small)), cfg.temperature, cfg.alpha,
                      device=run.device, name=f"{small}-kd-from-{t}")
        add(f"{small} distilled from {t}", m, "distilled", t, f"T={cfg.temperature:g}, alpha={cfg.alpha:g}", small)
    # 3b. the size-matched student: the pruned small base's layer widths, distilled from the small base
    r = cfg.matched_ratio
    m = C.distill(lambda: C.slim_student(lambda: build(small, cfg, doms.train), r, x0), base_size[small],
                  {"base_key": base_size[small].robustnb_info["key"]}, f"{small} width {1 - r:g}", doms.train,
                  cfg.train.replace(epochs=cfg.epochs_for(small)), cfg.temperature, cfg.alpha, device=run.device,
                  name=f"{small}-w{int(round(100 * (1 - r)))}-kd-from-{small}")
    pruned = zoo.models[f"{small} pruned {r:.0%}"]
    C.check_matched(C.parameter_count(m, x0), C.parameter_count(pruned, x0), MATCHED_TOLERANCE,
                    f"the size-matched student vs {small} pruned {r:.0%}")
    add(matched_student_name(cfg), m, MATCHED, small, f"width {1 - r:g}, T={cfg.temperature:g}, "
        f"alpha={cfg.alpha:g}", small)
    # 4. int8 post-training static quantization
    calib = doms.train.tensors(cfg.n_calibration, cfg.seed + 1)[0]
    for arch in tqdm(cfg.quantize_archs, desc="int8 quantization"):
        q = C.quantize_int8(zoo.models[arch].cpu(), calib)
        add(f"{arch} int8", q, "int8", arch, "static, onednn qconfig", arch)
        zoo.info[-1]["params"] = count_parameters(zoo.models[arch])  # same weights, stored as int8
        zoo.fp32_of[f"{arch} int8"] = arch
        zoo.models[arch].to(run.device)
    return zoo


# ------------------------------------------------------------------------------------ int8 evidence
def int8_report(cfg: StudyConfig, zoo: Zoo, doms: D.Domains) -> pd.DataFrame:
    """fp32 vs int8 per quantized architecture: state-dict size, CPU latency, source accuracy."""
    x = doms.eval[doms.source].tensors(cfg.latency_batch, cfg.seed)[0]
    src = doms.eval[doms.source]
    rows = []
    for qname, fname in zoo.fp32_of.items():
        q, f = zoo.models[qname], zoo.models[fname]
        fcpu = f.cpu()
        rows.append({
            "model": fname, "fp32_mb": C.state_dict_bytes(f) / 1e6, "int8_mb": C.state_dict_bytes(q) / 1e6,
            "fp32_ms": 1e3 * C.latency(fcpu, x), "int8_ms": 1e3 * C.latency(q, x),
            "fp32_acc": accuracy(fcpu, src), "int8_acc": accuracy(q, src),
        })
    df = pd.DataFrame(rows)
    df["size_ratio"] = df.fp32_mb / df.int8_mb
    df["speedup"] = df.fp32_ms / df.int8_ms
    df["acc_drop_points"] = 100 * (df.fp32_acc - df.int8_acc)
    return df


# --------------------------------------------------------------------------------------- evaluation
def parent_of(name: str, zoo: "Zoo") -> str:
    """The fp32 model ``name`` descends from (its lineage, not its attacker): the unpruned base for pruned
    models, the teacher for distilled students, the fp32 model for int8; a base model is its own parent."""
    info = zoo.frame().set_index("model")
    return str(info.loc[name, "base"])


def attacker_of(name: str, zoo: "Zoo") -> str:
    """The attacker the headline (``transfer``) FGSM / PGD on ``name`` are crafted on: that of its base
    (:func:`parent_of`), shared by the base and every model derived from it (its key in ``zoo.attackers``)."""
    base = parent_of(name, zoo)
    if base not in zoo.attackers:
        raise ValueError(f"no attacker for base {base!r} (train_bases trains one per base architecture); have "
                         f"{sorted(zoo.attackers)}")
    return base


def attack_plan(name: str, zoo: "Zoo") -> dict[str, tuple[str, object]]:
    """FGSM / PGD sources for ``name``: protocol -> (``crafted_on`` label, the model the gradients come from).
    See the module docstring for the four protocols."""
    info = zoo.frame().set_index("model")
    model = zoo.models[name]
    base = attacker_of(name, zoo)
    plan = {"transfer": (attacker_name(base), zoo.attackers[base])}
    arch = info.loc[name, "arch"] if "arch" in info else base
    if info.loc[name, "method"] == "distilled" and arch != base and arch in zoo.attackers:
        plan["transfer-arch"] = (attacker_name(arch), zoo.attackers[arch])
    if name in zoo.fp32_of:
        fp32 = zoo.fp32_of[name]
        plan["white-box"] = (f"{name} (own gradient)", C.int8_own_gradient(model))
        plan["bpda"] = (f"{name} (BPDA through {fp32})", C.int8_bpda(model, zoo.models[fp32]))
    else:
        plan["white-box"] = (name, model)
    return plan


def salt_pepper_attack(cfg: StudyConfig, model) -> SaltAndPepper:
    """The chapter's salt & pepper search: its grid contains every reported budget (``cfg.sp_budgets``)."""
    return make("attack", "salt_pepper", model, steps=cfg.sp_steps, repeats=cfg.sp_repeats, max_p=cfg.sp_max_p,
                seed=cfg.seed, budgets=cfg.sp_budgets)


def _hits(model, data) -> np.ndarray:
    """Per-image 0/1 correctness of ``model`` on an ImageDataset or an ``(x, y)`` pair."""
    y = data[1] if isinstance(data, (tuple, list)) else data.labels
    return (predict(model, data).argmax(1) == y.cpu()).numpy().astype(float)


@experiment
def evaluate_all(cfg: StudyConfig, zoo: Zoo, doms: D.Domains) -> pd.DataFrame:
    """Accuracy of every model on every domain: clean, FGSM, PGD (light/heavy), salt & pepper (light/heavy).

    Tidy columns: ``model, method, base, domain, role, attack, strength, budget, protocol, accuracy,
    crafted_on, hits, seed`` (``seed``: the training seed of every model here, ``cfg.train.seed``). ``hits`` holds the per-image 0/1 correctness (the same images, in the same order, for
    every model: paired comparisons read it). FGSM / PGD rows come in the protocols of :func:`attack_plan`:
    ``transfer`` (the headline: crafted on the attacker of the model's base, shared by the base and every
    model derived from it), ``transfer-arch`` (distilled students: the attacker of their own architecture),
    ``white-box`` (crafted on the model itself; int8 through its own, zero, gradient) and ``bpda`` (int8:
    int8 forward, fp32 parent backward). Salt & pepper queries the model itself (``query``).
    """
    info = zoo.frame().set_index("model")
    eps = dict(zip(("light", "heavy"), cfg.eps_255))
    sp = dict(zip(("light", "heavy"), cfg.sp_budgets))
    adv_cache: dict = {}
    rows = []
    for name in tqdm(list(zoo.models), desc="evaluating models"):
        model = zoo.models[name]
        meta = info.loc[name]
        plan = attack_plan(name, zoo)
        for dom, ds in doms.eval.items():
            base = {"model": name, "method": meta["method"], "base": meta["base"], "domain": dom,
                    "role": "source" if dom == doms.source else "target"}
            h = _hits(model, ds)
            rows.append({**base, "attack": "clean", "strength": "none", "budget": 0.0, "protocol": "clean",
                         "accuracy": float(h.mean()) if len(h) else np.nan, "crafted_on": "-", "hits": h})
            x, y = ds.tensors(cfg.n_attack, cfg.seed)
            for protocol, (crafted_on, source) in plan.items():
                for atk in ("fgsm", "pgd"):
                    for strength, e in eps.items():
                        key = (crafted_on, dom, atk, strength)
                        if key not in adv_cache:
                            kw = {"steps": cfg.pgd_steps} if atk == "pgd" else {}
                            adv_cache[key] = perturb(make("attack", atk, source, eps=e / 255, **kw), x, y)
                        h = _hits(model, (adv_cache[key], y))
                        rows.append({**base, "attack": atk, "strength": strength, "budget": e / 255,
                                     "protocol": protocol, "accuracy": float(h.mean()), "crafted_on": crafted_on,
                                     "hits": h})
            spa = salt_pepper_attack(cfg, model)
            perturb(spa, x, y, batch_size=len(x))
            for strength, b in sp.items():
                h = correct_at_budget(spa.last_min_p, b).numpy().astype(np.float64)
                rows.append({**base, "attack": "salt_pepper", "strength": strength, "budget": b, "protocol": "query",
                             "accuracy": float(h.mean()), "crafted_on": name, "hits": h})
    df = pd.DataFrame(rows).assign(seed=cfg.train.seed)
    return df.merge(info[["params", "size_mb", "compression", "detail"]], left_on="model", right_index=True)


@experiment
def attacker_accuracy(cfg: StudyConfig, zoo: Zoo, doms: D.Domains) -> pd.DataFrame:
    """Clean accuracy of each attacker next to its base, per domain (columns ``arch, domain, base, attacker``):
    the attackers are trained like the bases, so they should be about as accurate."""
    rows = []
    for arch, att in zoo.attackers.items():
        for dom, ds in doms.eval.items():
            rows.append({"arch": arch, "domain": dom, "base": float(_hits(zoo.models[arch], ds).mean()),
                         "attacker": float(_hits(att, ds).mean())})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ summaries
def _scored(df: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Rows with an accuracy: clean, salt & pepper, and FGSM / PGD of one ``protocol``."""
    d = df
    if "protocol" not in d:  # a frame with a single protocol
        return d
    return d[~d.attack.isin(["fgsm", "pgd"]) | (d.protocol == protocol)]


def results_table(df: pd.DataFrame, protocol: str = "transfer") -> pd.DataFrame:
    """Wide table: one row per model and domain; columns clean / fgsm / pgd / salt&pepper per strength.
    ``protocol``: one of :data:`PROTOCOLS` for FGSM / PGD (``"transfer"``, the headline: crafted on the
    attacker of the model's base; ``"white-box"``: on the model itself)."""
    d = _scored(df, protocol).copy()
    if protocol in ("bpda", "transfer-arch"):  # only some models have these rows
        d = d[d.model.isin(d[d.protocol == protocol].model)]
    d["column"] = np.where(d.attack == "clean", "clean", d.attack + " " + d.strength)
    wide = d.pivot_table(index=["method", "model", "domain"], columns="column", values="accuracy", sort=False)
    cols = ["clean"] + [c for a in ("fgsm", "pgd", "salt_pepper") for c in (f"{a} light", f"{a} heavy")]
    return (100 * wide[[c for c in cols if c in wide]]).round(1).reset_index()


def robustness_summary(df: pd.DataFrame, protocol: str = "transfer") -> pd.DataFrame:
    """Per model: source clean accuracy, mean target clean accuracy, and mean accuracy under attack
    (FGSM / PGD in one ``protocol``, the transfer one by default); means over training seeds too."""
    d = _scored(df, protocol)
    g = d.groupby("model", sort=False)
    first = g.first()[["method", "base", "params", "size_mb", "compression"]]
    src = d[(d.role == "source") & (d.attack == "clean")].groupby("model").accuracy.mean().rename("source_clean")
    tgt = d[(d.role == "target") & (d.attack == "clean")].groupby("model").accuracy.mean().rename("target_clean")
    adv = d[d.attack.isin(["fgsm", "pgd"])].groupby("model").accuracy.mean().rename("adversarial")
    spn = d[d.attack == "salt_pepper"].groupby("model").accuracy.mean().rename("salt_pepper")
    out = first.join([src, tgt, adv, spn])
    out["shift_retention"] = out.target_clean / out.source_clean
    return out.reset_index()


def int8_attack_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per int8 model and its fp32 base: mean accuracy (%) under FGSM / PGD (over domains, attacks, budgets) in
    each protocol: white-box (for int8: its own, zero, gradient: the masked attack), BPDA (int8 forward, fp32
    backward: unmasked) and the shared transfer attacker."""
    d = df[df.attack.isin(["fgsm", "pgd"])]
    rows = []
    for q in d[d.method == "int8"].model.unique():
        base = d[d.model == q].base.iloc[0]
        for model, kind in ((q, "int8"), (base, "fp32")):
            m = d[d.model == model]
            rows.append({"base": base, "model": model, "precision": kind,
                         **{p: 100 * m[m.protocol == p].accuracy.mean() for p in ("white-box", "bpda", "transfer")}})
    return pd.DataFrame(rows).round(1)


# -------------------------------------------------------------------------------------------- claims
CHAPTER = "compressed_domain_shift"
_S = "summary of arXiv 2401.12014 (../shared/papers/002_76fed1676e7b1cc7.txt)"
_NO_FIGURE = "no figure in the summary"
_PTS = dict(unit=" points")
#: "no change" margins (accuracy, the book's): int8 against its fp32 base on clean target images, and int8 under
#: BPDA against its fp32 base under a white-box attack ("the robustness largely disappears"; see that claim)
KEEP_MARGIN = 0.02
MASKING_MARGIN = 0.05
#: the paper's findings as this chapter tests them, each quoted from the summary the project has (not the full
#: paper: where it gives no figure, there is no ``paper_value``). Every value is, per training seed, a paired
#: difference of accuracies over the same images, in points, and the estimate their mean over the seeds with a t
#: interval over the seeds (:func:`claim_estimates`). Primary (counted): int8 against pruning and against
#: distillation under domain shift (key results, 1st bullet), int8 against pruning under transfer FGSM / PGD (3rd
#: bullet, read where the attack gets a gradient), distilled against pruned at the same size under shift
#: (abstract), the larger base losing more when pruned to the small one's size (abstract), pruned models losing
#: adversarial robustness as the ratio grows (4th bullet, open question 3). The rest is exploratory, and
#: int8's white-box row is true by construction. ``worlds``: the claim's true value in a world built to the paper
#: (``right``: an effect of :data:`robustnb.stats.DEFAULT_EFFECT`, the summary giving none) and in one where it
#: is wrong (:func:`world_claims`).
_UP, _DOWN = (0.10, -0.05), (-0.10, 0.05)
PAPER_CLAIMS: dict[str, stats.PaperClaim] = {
    "cd_int8_vs_pruned_target": stats.PaperClaim(
        claim="int8 quantization retains more target-domain accuracy than L1 pruning of the same base",
        paper='"Post-training quantization maintains higher accuracy than pruned or distilled models under domain '
              'shifts, even at 25% compression ratio"',
        source=f"{_S}, key results (1st bullet); {_NO_FIGURE}",
        measure="target-domain clean accuracy, small base: int8 minus pruned at the matched ratio, per test image "
                "(mean over target domains)", form="increase", role="primary", worlds=_UP,
        **_PTS),
    "cd_int8_vs_distilled_target": stats.PaperClaim(
        claim="int8 quantization retains more target-domain accuracy than distillation of the same base",
        paper='"Post-training quantization maintains higher accuracy than pruned or distilled models under domain '
              'shifts, even at 25% compression ratio"',
        source=f"{_S}, key results (1st bullet); {_NO_FIGURE}",
        measure="target-domain clean accuracy, per teacher that has an int8 version: the teacher quantized to int8 "
                "minus the student distilled from it (two compressions of the same base: int8 keeps its weights in "
                "a quarter of the bytes, the student is the small architecture), per test image (mean over target "
                "domains and teachers); needs an int8 teacher (none at smoke)",
        form="increase", role="primary", worlds=_UP, **_PTS),
    "cd_int8_vs_pruned_adv": stats.PaperClaim(
        claim="int8 quantization keeps more accuracy under FGSM / PGD than L1 pruning of the same base, both "
              "facing the same attacker",
        paper='"Quantized models show greater robustness to gradient-based adversarial attacks"; "post-training '
              'quantization maintains superior accuracy under both domain shifts and adversarial attacks"',
        source=f"{_S}, key results (3rd bullet) and executive summary; {_NO_FIGURE}",
        measure="accuracy under FGSM and PGD crafted on the small base's attacker (an independently trained model "
                "of the same architecture: the same adversarial images for both), int8 minus pruned at the matched "
                "ratio, per attacked image (mean over domains, attacks, budgets); the transfer "
                "protocol, where the attack gets a gradient (the white-box reading is true by construction: "
                "cd_int8_robust_whitebox)", form="increase", role="primary", worlds=_UP, **_PTS),
    "cd_int8_vs_pruned_sp": stats.PaperClaim(
        claim="int8 quantization keeps more accuracy under salt & pepper noise than L1 pruning of the same base",
        paper='"Post-training quantization outperforms pruning and distillation for robustness to distribution '
              'shifts"; but the summary also reports quantized models "vulnerable to non-gradient-based attacks '
              'like Salt&Pepper"',
        source=f"{_S}, one-line primary result; open question 1; {_NO_FIGURE}",
        measure="accuracy under salt & pepper at the two budgets, int8 minus pruned, per attacked image (mean over "
                "domains and budgets)", form="increase", worlds=_UP, **_PTS),
    "cd_int8_keeps_target": stats.PaperClaim(
        claim="int8 quantization does not change target-domain accuracy",
        paper='"post-training quantization is a reliable method for achieving significant robustness to '
              'distribution shifts"',
        source=f"{_S}, abstract (quoted under mechanism 1); {_NO_FIGURE}",
        measure="target-domain clean accuracy, int8 minus its fp32 base, per test image (mean over target domains "
                "and quantized bases); no change = within 2 points (the book's margin)",
        form="no_change", margin=KEEP_MARGIN, worlds=(0.0, -0.06), **_PTS),
    "cd_distilled_vs_pruned_shift": stats.PaperClaim(
        claim="a distilled model loses less accuracy under domain shift than a pruned one of the same size",
        paper='"compact networks obtained by knowledge distillation are much more robust to distribution shifts '
              'than pruned networks"',
        source=f"{_S}, abstract (quoted under mechanism 2); {_NO_FIGURE}",
        measure="per test image, shift loss = mean target hit minus source hit; the size-matched student (the small "
                "architecture at the width the matched pruning ratio leaves, distilled from the small base: the "
                "pruned model's parameter count within 10%, Torch-Pruning's counting) minus the small base pruned at "
                "that ratio: two compressions of the same base to the same size", form="increase",
        role="primary", worlds=_UP, **_PTS),
    "cd_larger_loses_more_target": stats.PaperClaim(
        claim="a larger base pruned to the small base's size loses more target-domain accuracy than the small base",
        paper='"larger networks are more vulnerable to losing robustness than smaller ones, even when they are '
              'compressed to a similar size"',
        source=f"{_S}, abstract (quoted under mechanism 3); {_NO_FIGURE}",
        measure="per test image, loss = pruned minus own base on the target domains; larger bases (mean) minus the "
                "small base at the matched size (about the same parameter count)", form="decrease",
        role="primary", worlds=_DOWN, **_PTS),
    "cd_larger_loses_more_adv": stats.PaperClaim(
        claim="a larger base pruned to the small base's size loses more accuracy under FGSM / PGD than the small base",
        paper='"larger networks are more vulnerable to losing robustness than smaller ones, even when they are '
              'compressed to a similar size"',
        source=f"{_S}, abstract (quoted under mechanism 3); {_NO_FIGURE}",
        measure="as above under FGSM / PGD crafted on the attacker of each base (a base and its pruned version face "
                "the same adversarial images), per attacked image (mean over domains, attacks, budgets)",
        form="decrease", worlds=_DOWN, **_PTS),
    "cd_int8_robust_whitebox": stats.PaperClaim(
        claim="under white-box gradient attacks, an int8 model keeps more accuracy than its fp32 base",
        paper='"Quantized models show greater robustness to gradient-based adversarial attacks"',
        source=f"{_S}, key results (3rd bullet); {_NO_FIGURE}; the summary does not say how the paper took "
               "gradients of its quantized models",
        measure="accuracy under FGSM / PGD crafted on the model itself, int8 (through its own gradient, zero: the "
                "masked attack) minus its fp32 base, per attacked image (mean over quantized bases, domains, "
                "attacks, budgets)", form="increase", role="construction",
        why="int8's own input gradient is exactly zero (robustnb.compression.int8_own_gradient: every activation is "
            "rounded), so its white-box FGSM returns the clean image and PGD stays at its random start: the int8 "
            "model keeps its accuracy on clean or randomly perturbed images by how the attack is built, whatever "
            "the paper's models do", **_PTS),
    "cd_int8_gradient_masking": stats.PaperClaim(
        claim="the int8 model's robustness to gradient attacks is gradient masking: once the gradient goes around "
              "the quantizer (BPDA), int8 keeps no more than its fp32 base under a white-box attack",
        paper='"Quantized models show greater robustness to gradient-based adversarial attacks due to gradient '
              'masking effects"; "adversarial attacks can be specifically designed to overcome gradient masking"',
        source=f"{_S}, key results (3rd bullet) and mechanism 1; {_NO_FIGURE}",
        measure="int8 accuracy under FGSM / PGD with BPDA (int8 forward, fp32-parent gradient backward: the masking "
                "removed) minus its fp32 base's under white-box FGSM / PGD on the fp32 base, per attacked image "
                "(mean over quantized bases, domains, attacks, budgets). \"The robustness largely "
                "disappears\" = no change within 5 points (the book's margin: wider than the 2 points within which "
                "int8 and fp32 agree on clean images, since adversarial images sit near the decision boundary where "
                "rounding flips more predictions; far below what the masked attack leaves int8, about its clean "
                "accuracy). Not masked minus BPDA: the masked attack's gradient is zero, so that difference is "
                "positive whenever BPDA does anything", form="no_change", margin=MASKING_MARGIN, worlds=(0.0, 0.20),
        **_PTS),
    "cd_pruned_adv_trend": stats.PaperClaim(
        claim="pruned models lose adversarial robustness as the pruning ratio grows",
        paper='"Pruned and distilled models degrade more severely in adversarial robustness as compression ratios '
              'increase"; "the average adversarial robustness of pruned models decreases as the pruning rate '
              'increases"',
        source=f"{_S}, key results (4th bullet) and open question 3; {_NO_FIGURE}",
        measure="accuracy under FGSM / PGD crafted on the small base's attacker (the same adversarial images at every "
                "ratio, pooled over domains, attacks, budgets) over clean accuracy on the same domains: robustness "
                "with the clean accuracy divided out (a transfer attack rarely fixes an image the model gets wrong, "
                "so about the accuracy under attack of the images it classifies correctly); small base pruned at the "
                "largest ratio minus at the smallest, in points of that ratio", form="decrease", role="primary",
        worlds=_DOWN,
        **_PTS),
    "cd_distilled_adv_trend": stats.PaperClaim(
        claim="distilled students lose adversarial robustness as the compression ratio (teacher size / student "
              "size) grows",
        paper='"Pruned and distilled models degrade more severely in adversarial robustness as compression ratios '
              'increase"; but the same summary says ResNet-18 students of teachers of different sizes keep '
              '"roughly the same" adversarial robustness',
        source=f"{_S}, key results (4th bullet); open question 3 contradicts it for distillation; {_NO_FIGURE}",
        measure="accuracy under FGSM / PGD crafted on the attacker of the students' own architecture (the same "
                "adversarial images for every student), student of the largest teacher minus of the smallest, per "
                "attacked image (mean over domains, attacks, budgets); needs two teachers",
        form="decrease", worlds=_DOWN, **_PTS),
}
#: the paper's arXiv id; the "no change" margins; key results; the power line's power and the effect it compares
#: where the paper states none (robustnb.stats.POWER, DEFAULT_EFFECT)
QUOTED_NUMBERS = ("2401.12014", "2 points", "5 points", "25%", "80%", "10 points", "10%")


def per_image(df: pd.DataFrame, model: str, kind: str, role: str | None = None,
              protocol: str = "transfer") -> np.ndarray:
    """Per-image correctness of ``model`` averaged over the matching rows (domains, attacks, budgets):
    ``kind`` is ``"clean"``, ``"adversarial"`` (FGSM and PGD of ``protocol``) or ``"salt_pepper"``; ``role``
    restricts to ``"source"`` or ``"target"`` domains. The same image index is the same test image in every
    domain (target images are shifted copies of the source ones), so the result has one value per image; on
    Office-31 index i is the i-th photo of each domain, every domain cut to one size by :func:`load_domains`."""
    d = df[df.model == model]
    if role is not None:
        d = d[d.role == role]
    if kind == "clean":
        d = d[d.attack == "clean"]
    elif kind == "adversarial":
        d = d[d.attack.isin(["fgsm", "pgd"]) & (d.protocol == protocol)]
    elif kind == "salt_pepper":
        d = d[d.attack == "salt_pepper"]
    else:
        raise ValueError(f"kind must be clean, adversarial or salt_pepper, got {kind!r}")
    if d.empty:
        return np.full(0, np.nan)
    return np.mean(np.stack([np.asarray(h, dtype=float) for h in d.hits]), axis=0)


def _group(df: pd.DataFrame, models, kind, role=None, protocol: str = "transfer") -> np.ndarray:
    arrs = [per_image(df, m, kind, role, protocol) for m in models]
    arrs = [a for a in arrs if len(a)]
    return np.mean(np.stack(arrs), axis=0) if arrs else np.full(0, np.nan)


def _adv_over_clean(df: pd.DataFrame, model: str) -> tuple[float, int]:
    """``(ratio, n)``: ``model``'s accuracy under FGSM / PGD crafted on its base's attacker (transfer protocol,
    pooled over domains, attacks and budgets) over its clean accuracy on the same domains (every test image of
    each; the attacked images are a stratified subset of them), and the fewest attacked images behind one row.
    A transfer attack rarely fixes an image the model gets wrong, so this is about the accuracy under attack on
    the images the model classifies correctly: robustness with the clean accuracy divided out."""
    d = df[df.model == model]
    adv = d[d.attack.isin(["fgsm", "pgd"]) & (d.protocol == "transfer")]
    clean = d[(d.attack == "clean") & d.domain.isin(set(adv.domain))]
    if adv.empty or clean.empty:
        return float("nan"), 0
    a = np.mean([np.mean(h) for h in adv.hits])
    c = np.mean([np.mean(h) for h in clean.hits])
    return (float(a / c) if c > 0 else float("nan")), int(min(len(h) for h in adv.hits))


def seed_values(df: pd.DataFrame, cfg: StudyConfig) -> dict[str, tuple[float, int]]:
    """The value of every claim of :data:`PAPER_CLAIMS` this frame (one training seed's :func:`evaluate_all` rows)
    can measure, with the number of images behind it: ``claim id -> (value, images)``. Each value is a mean paired
    difference over the same images (or, for the pruning trend, a difference of adversarial / clean accuracy
    ratios, :func:`_adv_over_clean`). A claim whose models are missing (the distillation trend with a single
    teacher) is left out."""
    info = df.groupby("model", sort=False)[["method", "base", "compression"]].first()
    small = cfg.base_archs[0]
    matched = f"{small} pruned {cfg.matched_ratio:.0%}"
    int8 = [m for m in info.index if info.loc[m, "method"] == "int8"]
    small_int8 = [m for m in int8 if info.loc[m, "base"] == small]
    small_pruned = [m for m in info.index if info.loc[m, "method"] == "pruned" and info.loc[m, "base"] == small]
    larger_pruned = [m for m in info.index if info.loc[m, "method"] == "pruned" and info.loc[m, "base"] != small]
    distilled = [m for m in info.index if info.loc[m, "method"] == "distilled"]
    students = [m for m in info.index if info.loc[m, "method"] == MATCHED]
    protocols = set(df.protocol.dropna()) if "protocol" in df else set()
    out: dict[str, tuple[float, int]] = {}

    def put(cid, a, b):  # mean(b - a) over the shared images
        a, b = np.asarray(a, float), np.asarray(b, float)
        if len(a) and len(b):
            keep = np.isfinite(a) & np.isfinite(b)
            if keep.any():
                out[cid] = (float(np.mean(b[keep] - a[keep])), int(keep.sum()))

    if small_int8 and matched in info.index:
        q = small_int8[0]
        put("cd_int8_vs_pruned_target", per_image(df, matched, "clean", "target"), per_image(df, q, "clean", "target"))
        put("cd_int8_vs_pruned_adv", per_image(df, matched, "adversarial"), per_image(df, q, "adversarial"))
        put("cd_int8_vs_pruned_sp", per_image(df, matched, "salt_pepper"), per_image(df, q, "salt_pepper"))
    if int8:
        fp32 = [info.loc[m, "base"] for m in int8]
        put("cd_int8_keeps_target", _group(df, fp32, "clean", "target"), _group(df, int8, "clean", "target"))
        if "white-box" in protocols:
            put("cd_int8_robust_whitebox", _group(df, fp32, "adversarial", protocol="white-box"),
                _group(df, int8, "adversarial", protocol="white-box"))
        if {"white-box", "bpda"} <= protocols:  # int8 under BPDA vs its fp32 base under white-box
            put("cd_int8_gradient_masking", _group(df, fp32, "adversarial", protocol="white-box"),
                _group(df, int8, "adversarial", protocol="bpda"))
        int8_of = {info.loc[m, "base"]: m for m in int8}
        kd = [(s, int8_of[info.loc[s, "base"]]) for s in distilled if info.loc[s, "base"] in int8_of]
        if kd:  # each teacher's int8 version vs the student distilled from it
            put("cd_int8_vs_distilled_target", _group(df, [s for s, _ in kd], "clean", "target"),
                _group(df, [q for _, q in kd], "clean", "target"))
    if students and matched in info.index:  # the size-matched student vs the pruned small base of its size
        def shift(m):
            return per_image(df, m, "clean", "target") - per_image(df, m, "clean", "source")
        put("cd_distilled_vs_pruned_shift", shift(matched), shift(students[0]))
    if larger_pruned and matched in info.index:
        for cid, kind, role in (("cd_larger_loses_more_target", "clean", "target"),
                                ("cd_larger_loses_more_adv", "adversarial", None)):
            small_loss = per_image(df, matched, kind, role) - per_image(df, small, kind, role)
            large_loss = np.mean(np.stack([per_image(df, m, kind, role) - per_image(df, info.loc[m, "base"], kind,
                                                                                   role) for m in larger_pruned]), 0)
            put(cid, small_loss, large_loss)
    by_ratio = [f"{small} pruned {r:.0%}" for r in sorted(cfg.prune_ratios)]
    by_ratio = [m for m in by_ratio if m in info.index]
    if len(by_ratio) >= 2:
        (lo, n_lo), (hi, n_hi) = _adv_over_clean(df, by_ratio[0]), _adv_over_clean(df, by_ratio[-1])
        if np.isfinite(lo) and np.isfinite(hi):
            out["cd_pruned_adv_trend"] = (hi - lo, min(n_lo, n_hi))
    students_kd = sorted(distilled, key=lambda m: info.loc[m, "compression"])
    if len(students_kd) >= 2 and "transfer-arch" in protocols:
        put("cd_distilled_adv_trend", per_image(df, students_kd[0], "adversarial", protocol="transfer-arch"),
            per_image(df, students_kd[-1], "adversarial", protocol="transfer-arch"))
    return out


def per_seed(df: pd.DataFrame, cfg: StudyConfig) -> pd.DataFrame:
    """Every claim's value per training seed (:func:`seed_values` on each seed's rows): columns ``seed, claim_id,
    value, images``. A frame without a ``seed`` column is one seed."""
    groups = df.groupby("seed", sort=True) if "seed" in df else [(cfg.train.seed, df)]
    rows = [{"seed": int(sd), "claim_id": cid, "value": v, "images": n}
            for sd, d in groups for cid, (v, n) in seed_values(d, cfg).items()]
    return pd.DataFrame(rows, columns=["seed", "claim_id", "value", "images"])


def claim_estimates(df: pd.DataFrame, cfg: StudyConfig) -> dict[str, stats.Estimate]:
    """The estimate behind every claim of :data:`PAPER_CLAIMS` that this frame can measure: the mean over training
    seeds of the seed's value (:func:`per_seed`: a paired difference over the same images, within the seed) with
    Student's t interval over the seeds (:func:`robustnb.stats.seeds_ci`), ``support`` the fewest images behind
    one seed's value. One seed gives no interval (inconclusive): a comparison of methods that rests on one
    training of each model says nothing about the next training. A claim whose models this run lacks
    (:func:`seed_values` leaves it out) is :func:`robustnb.stats.unmeasured`."""
    ps = per_seed(df, cfg)
    measured = {cid: stats.seeds_ci(g.value.to_numpy(), support=int(g.images.min()))
                for cid, g in ps.groupby("claim_id", sort=False)}
    return {**{cid: stats.unmeasured() for cid in PAPER_CLAIMS}, **measured}


def on_stand_in(df: pd.DataFrame) -> bool:
    """Whether ``df`` (an :func:`evaluate_all` frame) was measured on a stand-in for the paper's data: its domains
    are not Office-31's (the offline CIFAR-10 camera-shift stand-in, :attr:`robustnb.domains.Domains.stand_in`)."""
    return not set(df["domain"].dropna()) <= set(OFFICE31_DOMAINS)


def claims(df: pd.DataFrame, cfg: StudyConfig) -> pd.DataFrame:
    """The paper-vs-ours table: one row per :data:`PAPER_CLAIMS` entry this run measured, in accuracy points
    with a 95% interval, the verdict of its form and Holm's reading over the chapter's primary claims
    (:func:`robustnb.stats.claims_table`, columns :data:`robustnb.stats.CLAIM_COLUMNS`), and ``stand_in``: True on
    every row when the frame was measured on the stand-in (:func:`on_stand_in`), which the ledger lists apart and
    never counts (:func:`robustnb.ledger.ledger_rows`)."""
    return stats.claims_table(CHAPTER, PAPER_CLAIMS, claim_estimates(df, cfg)).assign(stand_in=on_stand_in(df))


# ------------------------------------------------------------------------------------ constructed worlds
#: training seeds with which every claim reads "inconclusive at this size": one seed gives no t interval
TOO_FEW = 1
#: training seeds of a constructed world (:func:`world_claims`): enough for every claim to read its world right
#: at the worlds' spread. The chapter's own runs have :data:`N_SEEDS`; which claims that decides is the power
#: line of each primary claim (from the run's own spread over seeds, :func:`robustnb.stats.power_note`).
WORLD_SEEDS = 10
#: the worlds' noise: the latent correlation of two rows' hits on the same image (easy images are easy for every
#: model, in every domain, clean or attacked) and, for an int8 model, the share of its fp32 parent's per-row noise it
#: does not keep (rounding changes few predictions)
WORLD_IMAGE_CORRELATION = 0.6
WORLD_INT8_OWN_NOISE = 0.05
#: the worlds' spread from one training to the next: every accuracy of a trained model (a base, a student) moves by
#: a draw of this SD per training seed; a pruned model keeps half its base's draw's variance (it is fine-tuned from
#: it), an int8 model its parent's draw. Two trainings of one configuration then differ by about 3 points in a
#: difference of two independently trained models, as two trainings of this chapter's cpu models did (salt &
#: pepper: +1.8 vs +5.2 points; distilled vs pruned: -1.3 vs -2.7)
WORLD_SEED_SD = 0.02


def world_config(n_seeds: int = WORLD_SEEDS) -> StudyConfig:
    """The constructed worlds' config: the ``cpu`` preset's sizes (images per domain, ratios, budgets) with
    ``n_seeds`` training seeds and, where the cpu preset has a single teacher, a second one (ResNet-50, a base,
    teacher and int8 model as at ``full``), so that the distillation trend, which needs two teachers, has a world
    too."""
    cfg = StudyConfig.from_preset("cpu", n_seeds=n_seeds)
    if len(cfg.teacher_archs) < 2:
        extra = "resnet50"
        cfg = dataclasses.replace(cfg, base_archs=(*cfg.base_archs, extra), teacher_archs=(*cfg.teacher_archs, extra),
                                  quantize_archs=(*cfg.quantize_archs, extra),
                                  epochs=(*cfg.epochs, (extra, cfg.epochs_for(cfg.base_archs[0]))))
    return cfg


def world_accuracies(cfg: StudyConfig) -> dict[str, dict]:
    """The paper's world on ``cfg``'s grid, as :func:`compress_all` names its models: per model its ``method``,
    ``base``, ``compression`` and true accuracies, ``source`` / ``target`` (clean) and ``salt_pepper``, and under
    FGSM / PGD per protocol of :func:`attack_plan` (the same on every domain). Pruning costs more the higher the
    ratio, a larger base pruned to the small one's size loses more than the small base, students lose less under
    shift than pruned models (the size-matched one than the pruned model of its size) and less under attack the
    smaller their teacher, int8 keeps its base's accuracy (under its own, zero, gradient: its clean accuracy) and,
    under BPDA, no more than its base under white-box."""
    small, teachers = cfg.base_archs[0], cfg.teacher_archs
    acc = {a: dict(method="baseline", base=a, compression=1.0, source=0.80 + 0.01 * k, target=0.62 + 0.01 * k,
                   transfer=0.40, **{"white-box": 0.08}, salt_pepper=0.35) for k, a in enumerate(cfg.base_archs)}
    for j, r in enumerate(sorted(cfg.prune_ratios)):
        acc[f"{small} pruned {r:.0%}"] = dict(method="pruned", base=small, compression=1 / (1 - r) ** 2,
                                              source=0.78 - 0.04 * j, target=0.57 - 0.06 * j,
                                              transfer=0.36 - 0.05 * j, **{"white-box": 0.06}, salt_pepper=0.30)
    for a in cfg.base_archs[1:]:
        acc[f"{a} pruned 60%"] = dict(method="pruned", base=a, compression=4.0, source=0.72, target=0.46,
                                      transfer=0.28, **{"white-box": 0.06}, salt_pepper=0.28)
    for k, t in enumerate(teachers):
        acc[f"{small} distilled from {t}"] = dict(method="distilled", base=t, compression=2.0 + k, source=0.80,
                                                  target=0.60, transfer=0.36, **{"transfer-arch": 0.38 - 0.04 * k},
                                                  **{"white-box": 0.06}, salt_pepper=0.33)
    m = acc[f"{small} pruned {cfg.matched_ratio:.0%}"]
    acc[matched_student_name(cfg)] = dict(method=MATCHED, base=small, compression=m["compression"],
                                          source=m["source"], target=m["target"] + 0.05, transfer=m["transfer"],
                                          **{"white-box": 0.06}, salt_pepper=m["salt_pepper"])
    for a in cfg.quantize_archs:
        b = acc[a]
        acc[f"{a} int8"] = dict(method="int8", base=a, compression=4.0, fp32=a, source=b["source"] - 0.005,
                                target=b["target"] - 0.005, transfer=b["transfer"],
                                **{"white-box": (b["source"] + 2 * b["target"]) / 3, "bpda": b["white-box"]},
                                salt_pepper=b["salt_pepper"] - 0.02)
    return acc


def _seed_offsets(acc: dict[str, dict], rng: np.random.Generator) -> dict[str, float]:
    """One training seed's accuracy offsets per model (:data:`WORLD_SEED_SD`): trained models draw their own,
    pruned ones half of their base's variance and half their own, int8 ones their parent's."""
    own = {m: float(rng.normal(0, WORLD_SEED_SD)) for m in acc}
    out = {}
    for m, spec in acc.items():
        if spec["method"] == "int8":
            out[m] = own[spec["fp32"]]
        elif spec["method"] == "pruned":
            out[m] = np.sqrt(0.5) * (own[spec["base"]] + own[m])
        else:
            out[m] = own[m]
    return out


def world_frame(cfg: StudyConfig, acc: dict[str, dict], n_eval: int, n_attack: int, seed: int = 0,
                noise: bool = True) -> pd.DataFrame:
    """An :func:`evaluate_seeds` frame (its columns, one block per training seed of ``cfg.seeds``, domains of the
    stand-in, hits per image) in which each row's true accuracy is that of ``acc`` (:func:`world_accuracies`)
    moved by the model's draw for the seed (:func:`_seed_offsets`). Hits are Bernoulli with a latent per image
    shared by every row and seed (:data:`WORLD_IMAGE_CORRELATION`: the same test images), so models agree on easy
    and hard images; an int8 model's rows share its fp32 parent's noise (its BPDA rows the parent's white-box ones:
    the same gradient) but for :data:`WORLD_INT8_OWN_NOISE`. ``noise=False``: no seed offsets, and every hit is
    its accuracy (the claims' true values)."""
    rng = np.random.default_rng(seed)
    rho, q = WORLD_IMAGE_CORRELATION, WORLD_INT8_OWN_NOISE
    z = rng.standard_normal(n_eval)
    domains = ["cifar10", *D.STAND_IN_DOMAINS]
    eps = dict(zip(("light", "heavy"), cfg.eps_255))
    sp = dict(zip(("light", "heavy"), cfg.sp_budgets))
    rows = []
    for train_seed in cfg.seeds:
        shared: dict = {}
        offset = _seed_offsets(acc, rng) if noise else {m: 0.0 for m in acc}

        def hits(p, model, key, n):
            if not 0 <= p <= 1:
                raise ValueError(f"world accuracy {p:.3f} of {model} {key} is not in [0, 1]")
            if not noise:
                return np.full(n, float(p))
            p = float(np.clip(p + offset[model], 0.0, 1.0))
            spec = acc[model]
            parent = spec.get("fp32", model)
            key = (parent, *key[:-1], "white-box" if key[-1] == "bpda" else key[-1])
            e = shared.setdefault(key, rng.standard_normal(n))
            if parent != model:
                e = np.sqrt(1 - q) * e + np.sqrt(q) * rng.standard_normal(n)
            return (np.sqrt(rho) * z[:n] + np.sqrt(1 - rho) * e < ndtri(p)).astype(float)

        for model, spec in acc.items():
            for dom in domains:
                role = "source" if dom == domains[0] else "target"
                base = {"model": model, "method": spec["method"], "base": spec["base"], "domain": dom, "role": role,
                        "params": 1e6, "size_mb": 1.0, "compression": spec["compression"], "detail": "",
                        "seed": train_seed}
                rows.append({**base, "attack": "clean", "strength": "none", "budget": 0.0, "protocol": "clean",
                             "crafted_on": "-", "hits": hits(spec[role], model, (dom, "clean", "none", "clean"),
                                                             n_eval)})
                for protocol in [p for p in PROTOCOLS if p in spec]:
                    for atk in ("fgsm", "pgd"):
                        for strength, e in eps.items():
                            rows.append({**base, "attack": atk, "strength": strength, "budget": e / 255,
                                         "protocol": protocol, "crafted_on": protocol,
                                         "hits": hits(spec[protocol], model, (dom, atk, strength, protocol), n_attack)})
                for strength, b in sp.items():
                    rows.append({**base, "attack": "salt_pepper", "strength": strength, "budget": b,
                                 "protocol": "query", "crafted_on": model,
                                 "hits": hits(spec["salt_pepper"], model, (dom, "sp", strength, "query"), n_attack)})
    df = pd.DataFrame(rows)
    return df.assign(accuracy=[h.mean() for h in df.hits])


def world_levers(cfg: StudyConfig) -> dict[str, tuple[list[str], str]]:
    """Per claim (all but the construction row), the accuracies a world moves to give it its true value: the
    models and the field of :func:`world_accuracies`, all moved by the same amount."""
    small, acc = cfg.base_archs[0], world_accuracies(cfg)
    of = {m: [n for n, s in acc.items() if s["method"] == m] for m in METHODS}
    small_int8 = [f"{small} int8"]
    return {
        "cd_int8_vs_pruned_target": (small_int8, "target"),
        "cd_int8_vs_distilled_target": (of["distilled"], "target"),
        "cd_int8_vs_pruned_adv": (small_int8, "transfer"),
        "cd_int8_vs_pruned_sp": (small_int8, "salt_pepper"),
        "cd_int8_keeps_target": (of["int8"], "target"),
        "cd_distilled_vs_pruned_shift": (of[MATCHED], "target"),
        "cd_larger_loses_more_target": ([m for m in of["pruned"] if acc[m]["base"] != small], "target"),
        "cd_larger_loses_more_adv": ([m for m in of["pruned"] if acc[m]["base"] != small], "transfer"),
        "cd_int8_gradient_masking": (of["int8"], "bpda"),
        "cd_pruned_adv_trend": ([f"{small} pruned {max(cfg.prune_ratios):.0%}"], "transfer"),
        "cd_distilled_adv_trend": ([f"{small} distilled from {cfg.teacher_archs[-1]}"], "transfer-arch"),
    }


def world_claims(claim_id: str, truth: float, replicates: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The chapter's claims table (:func:`claims`) on a constructed :func:`evaluate_seeds` frame at the ``cpu``
    preset's shapes (:func:`world_config`: its models, ``n_eval`` test and ``n_attack`` attacked images per
    domain) with ``replicates`` training seeds (default :data:`WORLD_SEEDS`), the paper's world
    (:func:`world_accuracies`) with the claim's lever (:func:`world_levers`) moved so that the claim's measured
    quantity has the true value ``truth`` (read off the noise-free frame: the claim's quantity is linear in the
    lever)."""
    cfg = world_config(WORLD_SEEDS if replicates is None else replicates)
    models, field_ = world_levers(cfg)[claim_id]

    def moved(by):
        acc = world_accuracies(cfg)
        for m in models:
            acc[m] = {**acc[m], field_: acc[m][field_] + by}
        return acc

    one = dataclasses.replace(cfg, seeds=cfg.seeds[:1])

    def value(by):
        return claim_estimates(world_frame(one, moved(by), 1, 1, noise=False), one)[claim_id].value

    v0, v1 = value(0.0), value(0.1)
    df = world_frame(cfg, moved(0.1 * (truth - v0) / (v1 - v0)), cfg.n_eval, cfg.n_attack, seed)
    return claims(df, cfg)


def decidable(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """``(decided, not decided)``: the primary claims of a :func:`claims` table whose effect (the paper's, or
    :data:`robustnb.stats.DEFAULT_EFFECT`) is above the smallest effect the run detects with 80% power from its own
    spread over seeds (its ``power`` line, :func:`robustnb.stats.power_note`), and the others (below it, or no
    interval: one seed, too few images)."""
    rows = table[table.role == "primary"]
    above = [c for c, p in zip(rows.claim_id, rows.power) if " is above it" in p]
    return above, [c for c in rows.claim_id if c not in above]


def claim_numbers(df: pd.DataFrame, cfg: StudyConfig) -> dict[str, str]:
    """Formatted numbers for the prose (glued by :func:`robustnb.book.record`): evaluation sizes, training seeds,
    clean accuracies of the bases with intervals (the first seed's models), the size-matched pair's parameter
    counts, which primary claims this run's seeds can decide (:func:`decidable`), and which data the frame was
    measured on (``cd_data``)."""
    seeds = sorted(df.seed.unique()) if "seed" in df else [cfg.train.seed]
    first = df[df.seed == seeds[0]] if "seed" in df else df
    decided, undecided = decidable(claims(df, cfg))
    info = first.groupby("model", sort=False)[["method", "base", "params"]].first()
    matched, student = f"{cfg.base_archs[0]} pruned {cfg.matched_ratio:.0%}", matched_student_name(cfg)
    clean = df[(df.attack == "clean")]
    out = {"cd_data": "the offline CIFAR-10 stand-in, not Office-31" if on_stand_in(df) else "Office-31",
           "cd_n_eval": str(len(clean.hits.iloc[0])),
           "cd_n_attack": str(len(df[df.attack == "fgsm"].hits.iloc[0])),
           "cd_n_domains": str(df.domain.nunique()), "cd_n_seeds": str(len(seeds)),
           "cd_decided": ", ".join(decided) or "none",
           "cd_undecided": ", ".join(undecided) or "none"}
    if {matched, student} <= set(info.index):
        out["cd_matched_params"] = (f"{int(info.loc[student, 'params']):,} parameters for the student, "
                                    f"{int(info.loc[matched, 'params']):,} for {matched}")
    for i, arch in enumerate(cfg.base_archs):
        if arch in info.index:
            out[f"cd_base{i}_source"] = stats.mean_ci(per_image(first, arch, "clean", "source")).fmt(unit="%")
            out[f"cd_base{i}_target"] = stats.mean_ci(per_image(first, arch, "clean", "target")).fmt(unit="%")
    out["cd_bases_source"] = "; ".join(f"{arch} {out[f'cd_base{i}_source']}" for i, arch in enumerate(cfg.base_archs)
                                       if f"cd_base{i}_source" in out)
    return out


def accuracy_vs_compression(df: pd.DataFrame) -> pd.DataFrame:
    """Clean accuracy per model and domain (mean over training seeds) with its compression ratio (for the
    line/scatter figures)."""
    d = df[(df.attack == "clean")]
    keys = ["model", "method", "base", "domain", "role"]
    return d.groupby(keys, sort=False)[["accuracy", "compression", "params", "size_mb"]].mean().reset_index()


def robustness_vs_compression(df: pd.DataFrame) -> pd.DataFrame:
    """Source-domain accuracy under each attack and strength (mean over protocols and training seeds), with the
    compression ratio."""
    d = df[(df.role == "source") & (df.attack != "clean")].copy()
    d["attack_strength"] = d.attack + " " + d.strength
    keys = ["model", "method", "base", "attack_strength"]
    return d.groupby(keys, sort=False)[["accuracy", "compression", "size_mb"]].mean().reset_index()


def domain_examples(doms: D.Domains, n: int = 6):
    """The same ``n`` test images in every domain, stacked, with titles (for ``plots.image_grid``)."""
    xs, titles = [], []
    for dom, ds in doms.eval.items():
        x, y = ds.tensors(n, 0)
        xs.append(x)
        titles += [f"{dom}: {ds.classes[int(c)]}" for c in y]
    return torch.cat(xs), titles


# ------------------------------------------------------------------------------------------ without Jupyter
def reproduce(run: Run) -> pd.DataFrame:
    """The chapter's claims table without Jupyter (:func:`claims`, columns
    :data:`robustnb.stats.CLAIM_COLUMNS`): the calls ``book/compressed_domain_shift.ipynb`` makes on its way to
    it (bases, then their compressed versions, then every evaluation).

    ``python -m robustnb reproduce compressed_domain_shift`` runs this (:mod:`robustnb.cli`). It makes the notebook's
    own calls, in its order and with its config, so the book and the command read and fill the same experiment
    cache (``ROBUSTNB_CACHE``) and give the same table at the same preset and seed."""
    cfg = StudyConfig.from_preset(run.preset, run.seed)
    doms = load_domains(cfg)
    zoos = train_seeds(cfg, run, doms)
    zoos = compress_seeds(cfg, run, doms, zoos)
    results = evaluate_seeds(cfg, zoos, doms)
    return claims(results, cfg)
