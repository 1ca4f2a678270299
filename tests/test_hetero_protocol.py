"""The heterogeneous chapter's rounds as the authors' rounds (robustnb.chapters.heterogeneous_ensembles): each
round draws its own master configuration (ENS and node 0 of every instantiation), every instantiation is scored
on its own soft vote's clean-correct mask (and, as a sensitivity reading, on the round's shared one), ENS is tuned
with one node's budget, and a round runs end to end at ``smoke``."""

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

from robustnb import distributed as D
from robustnb.chapters import heterogeneous_ensembles as H
from robustnb.data import ImageDataset

N_CLASSES = 4


def _dataset(per_class: int, size: int = 4, name: str = "toy") -> ImageDataset:
    """Images whose pixels all equal ``20 * label`` (uint8), sorted by label."""
    labels = torch.arange(N_CLASSES).repeat_interleave(per_class)
    images = (labels * 20).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, size, size).contiguous()
    return ImageDataset(name, images, labels, [str(c) for c in range(N_CLASSES)], (0.5,) * 3, (0.25,) * 3)


def _splits(pool: int = 80) -> H.Splits:
    return H.Splits(pool=_dataset(pool // N_CLASSES), attacker=_dataset(10), test=_dataset(10))


def _fake_tune(calls):
    """A tuner recording every call (nodes, trials, keywords); its values depend on the node's seed and shard."""
    def tune(nodes, trials, *a, **k):
        calls.append(SimpleNamespace(nodes=list(nodes), trials=trials, args=a, kwargs=k))
        return [{"lr": 0.01 + ((n.train.seed * 7919 + int(n.data.labels.sum())) % 97) * 1e-4, "momentum": 0.85,
                 "weight_decay": 1e-4, "val_acc": 0.5} for n in nodes]
    return tune


def _build(monkeypatch, cfg, device="cpu"):
    calls = []
    monkeypatch.setattr(H.D, "tune_nodes", _fake_tune(calls))
    monkeypatch.setattr(H.D, "train_nodes", lambda nodes, *a, **k: {n.key: None for n in nodes})
    plans, _, tuning = H.build_nodes(cfg, SimpleNamespace(device=device), _splits(cfg.pool))
    return plans, tuning, calls


def _config(node) -> tuple[str, str, str]:
    return node.arch, node.train.optimizer, node.train.scheduler


# ------------------------------------------------------------------------------------- master configurations
@pytest.mark.parametrize("preset", ["smoke", "cpu"])
def test_each_round_draws_its_own_master_configuration_for_ens_and_node_0(preset):
    """Two rounds' ENS differ in architecture / optimizer / scheduler, each drawn from the preset's lists; ENS's
    nodes all share it, and node 0 of every IID instantiation is ENS's node 0 (the authors' master config)."""
    cfg = H.HeteroConfig.from_preset(preset, pool=80)
    splits = _splits(80)
    n = max(cfg.n_values)
    ens = {}
    for seed in (0, 1):
        nodes = H.plan(cfg, splits, seed, n)
        configs = {_config(s) for s in nodes["ENS"]}
        assert len(configs) == 1, configs
        (ens[seed],) = configs
        assert ens[seed] == H.master(cfg, seed)
        arch, optimizer, scheduler = ens[seed]
        assert arch in cfg.archs and optimizer in cfg.optimizers and scheduler in cfg.schedulers
        for axis, specs in nodes.items():
            assert _config(specs[0]) == ens[seed], axis  # node 0 is the master configuration
            if axis != "data non-IID":
                assert specs[0].key == nodes["ENS"][0].key, axis  # the same node (one model, one tuning)
        varied = {"architecture": 0, "optimizer": 1, "scheduler": 2}
        for axis, k in varied.items():  # the other nodes take the preset's other values in turn
            values = [_config(s)[k] for s in nodes[axis]]
            assert len(set(values)) == min(n, len((cfg.archs, cfg.optimizers, cfg.schedulers)[k])), (axis, values)
    assert ens[0] != ens[1]
    rounds = len(cfg.archs) * len(cfg.optimizers) * len(cfg.schedulers)
    assert len({H.master(cfg, r) for r in range(rounds)}) == rounds  # no two rounds alike until all are used
    assert H.master(cfg, 0) == H.master(H.HeteroConfig.from_preset(preset, pool=80), 0)  # seeded: reproducible


# ------------------------------------------------------------------------------------------ tuning budget
def test_ens_is_tuned_once_per_round_with_the_budget_of_each_node(monkeypatch):
    """ENS tunes ONE configuration (the round's master, on a shard of the size its nodes train on) in the same
    call, with the same trials and epochs as every other node; every ENS node trains on it. Trials run on the
    run's device."""
    cfg = H.HeteroConfig.from_preset("smoke", n_values=(1, 2), seeds=(0, 1), pool=80)
    plans, tuning, calls = _build(monkeypatch, cfg, device="cpu")
    assert len(calls) == 1 and calls[0].trials == cfg.tune_trials
    assert str(calls[0].kwargs.get("device")) == "cpu"  # the run's device reaches the trials
    tuned = calls[0].nodes
    for seed in cfg.seeds:
        for n in cfg.n_values:
            ens_tuned = [t for t in tuned if t.label.startswith("ENS") and t.train.seed == H.node_seed(cfg, 0, seed)
                         and len(t.data) == cfg.pool // n]
            assert len(ens_tuned) == 1, (seed, n)
            budget = {(t.train.epochs, len(t.data)) for t in tuned if len(t.data) == cfg.pool // n}
            assert budget == {(cfg.epochs, cfg.pool // n)}, budget  # every node: the same epochs on its shard
            assert _config(ens_tuned[0]) == H.master(cfg, seed)
            ens = plans[seed][n]["ENS"]
            assert len({(s.train.lr, s.train.momentum, s.train.weight_decay) for s in ens}) == 1
    assert len(tuning[tuning.axis == "ENS"]) == len(cfg.seeds) * len(cfg.n_values)


# ------------------------------------------------------------------------------------- clean-correct mask
class WrongOn(nn.Module):
    """Reads the label from the pixels (``20 * label``), but says ``label + 1`` for the labels in ``wrong``."""

    def __init__(self, wrong=()):
        super().__init__()
        self.wrong = set(wrong)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        label = (x.mean(dim=(1, 2, 3)) * 255 / 20).round().long()
        bad = torch.tensor([int(v) in self.wrong for v in label], dtype=torch.bool)
        return nn.functional.one_hot(torch.where(bad, (label + 1) % N_CLASSES, label), N_CLASSES).float() * 5


def test_each_instantiation_is_scored_on_its_soft_vote_mask_and_the_round_on_a_shared_one():
    """The authors' metric: every vote of an instantiation is scored on the images its soft vote gets right when
    clean (a weak instantiation, wrong on class 0, is scored without class 0; a good one with it, and the attack
    that flips class 0 counts against it). The sensitivity reading scores every instantiation on the round's
    shared mask, the images all of them get right."""
    test = _dataset(10)
    cfg = H.HeteroConfig.from_preset("smoke", n_values=(1, 2), n_test=len(test), n_attack=12)
    splits = H.Splits(pool=test, attacker=test, test=test)
    x, y = H.attack_set(cfg, splits)
    flipped = torch.where((y == 0).view(-1, 1, 1, 1), torch.full_like(x, 20 / 255), x)  # class 0 reads as 1
    adv = {("clean", 0): x, ("cwa", 8): flipped}
    models = {"good": WrongOn(), "weak": WrongOn({0})}
    nodes = {1: {"ENS": [SimpleNamespace(key="good", arch="cnn")]},
             2: {"ENS": [SimpleNamespace(key="good", arch="cnn")] * 2,
                 "tuned HP": [SimpleNamespace(key="weak", arch="cnn")] * 2}}
    frame = H.evaluate_grid(cfg, nodes, models, splits, adv).set_index(["instantiation", "n_nodes", "vote"])
    n0 = int((y == 0).sum())
    assert 0 < n0 < len(y)
    good, weak = frame.loc[("ENS", 2)], frame.loc[("tuned HP", 2)]
    assert (good.n_clean_correct == len(y)).all() and (weak.n_clean_correct == len(y) - n0).all()
    assert (good.robust_acc_cc == 1 - n0 / len(y)).all() and (weak.robust_acc_cc == 1.0).all()
    assert (frame.n_shared == len(y) - n0).all() and (frame.robust_acc_shared == 1.0).all()
    masks = H.clean_correct_masks(nodes, {k: {("clean", 0): m(x)} for k, m in models.items()}, y)
    assert torch.equal(masks[2, "ENS"], torch.ones_like(y, dtype=torch.bool))
    assert torch.equal(H.shared_mask(masks), y != 0)


def test_the_mask_sensitivity_reads_every_robustness_primary_under_both_masks():
    cfg = H.HeteroConfig.from_preset("cpu", seeds=(0, 1, 2, 3))
    frame = H.world_frame(cfg, *H.world_gains(cfg, "he_gain_all_n5", 0.2))
    frame["robust_acc_shared"] = frame.robust_acc_cc - 0.5  # the shared mask moves every level, not a difference
    table = H.mask_sensitivity(frame, cfg).set_index("claim")
    primaries = [pc.claim for cid, pc in H.PAPER_CLAIMS.items() if pc.counted and H.TARGETS[cid].kind != "clean_cost"]
    assert list(table.index) == primaries and (table.rounds == 4).all()
    gain = H.PAPER_CLAIMS["he_gain_all_n5"].claim
    assert table.loc[gain, "own masks (authors')"] == table.loc[gain, "shared mask"]
    assert 15 < float(table.loc[gain, "own masks (authors')"].split()[0]) < 25  # the world's +20 points


# ------------------------------------------------------------------------------------------ one round, smoke
@pytest.fixture
def toy_cifar(monkeypatch, tmp_path):
    """An empty model cache and 16 px toy splits in place of CIFAR-10 (the round's code, not the data, is tested)."""
    monkeypatch.setenv("ROBUSTNB_CACHE", str(tmp_path / "cache"))
    def noisy(per_class, name):  # the same images at every call
        d = _dataset(per_class, 16, name)
        g = torch.Generator().manual_seed(len(name))
        noise = torch.randint(0, 12, d.images.shape, generator=g, dtype=torch.uint8)
        return ImageDataset(name, d.images + noise, d.labels, d.classes, d.mean, d.std)

    monkeypatch.setattr(H, "load_splits", lambda cfg: H.Splits(pool=noisy(cfg.pool // N_CLASSES, "toy-pool"),
                                                               attacker=noisy(10, "toy-att"),
                                                               test=noisy(10, "toy-test")))


def test_one_round_at_smoke_tunes_and_trains_every_instantiation(toy_cifar):
    timing = H.one_round("smoke", seed=1, backend="local", pool=80)
    cfg = H.HeteroConfig.from_preset("smoke", pool=80, seeds=(1,))
    assert timing.seed == 1 and timing.master == H.master(cfg, 1) and timing.seconds > 0
    untuned = {n: H.plan(cfg, H.load_splits(cfg), 1, n) for n in cfg.n_values}
    n_tunings = len({s.key for by_axis in untuned.values() for s in
                     (node for specs in D.tuning_jobs(by_axis).values() for node in specs)})
    assert timing.tunings == n_tunings
    # every node (ENS at N = 1, every axis at N = 2; node 0 shared, ENS's other nodes on ENS's one tuning) is now
    # cached: building the round again trains and tunes nothing
    run = H.Run(preset="smoke", seed=0, device=torch.device("cpu"))
    _, models, tuning = H.build_nodes(cfg, run, H.load_splits(cfg), "local", seeds=(1,))
    assert timing.nodes == len(models) > n_tunings
    assert all(m.robustnb_info["from_cache"] for m in models.values())
    assert set(tuning.axis) == set(cfg.axes)


def test_the_cpu_preset_affords_its_rounds():
    """The cpu preset: four architecture families sized for 2 cores, rounds enough to give the claims intervals."""
    from robustnb import registry

    cpu = H.HeteroConfig.from_preset("cpu")
    assert len(cpu.archs) >= 3 and all(a in registry.ARCHITECTURES for a in cpu.archs)
    assert not {"vgg11", "mobilenet_v2"} & set(cpu.archs)  # the 2-core sizes, not the ImageNet ones
    assert len(cpu.seeds) >= 5 and cpu.seeds == tuple(range(len(cpu.seeds)))
    assert isinstance(H.one_round.__doc__, str) and "one_round('cpu')" in H.one_round.__doc__
    assert pd.Series([H.master(cpu, r) for r in cpu.seeds]).nunique() == len(cpu.seeds)
