"""The heterogeneous-ensemble study's bookkeeping (robustnb.chapters.heterogeneous_ensembles): labels follow the attacked images."""

from types import SimpleNamespace

import pandas as pd
import torch
from torch import nn

from robustnb.chapters import heterogeneous_ensembles as H
from robustnb.data import ImageDataset

N_CLASSES = 4


class LabelReader(nn.Module):
    """A perfect classifier for images whose pixels all equal ``20 * label`` (uint8)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.robustnb_info = {"history": pd.DataFrame({"train_acc": [1.0]})}

    def forward(self, x):
        label = (x.mean(dim=(1, 2, 3)) * 255 / 20).round().long()
        return nn.functional.one_hot(label, N_CLASSES).float() + 0 * self.dummy


def _sorted_test_set(per_class=10):
    labels = torch.arange(N_CLASSES).repeat_interleave(per_class)  # 0,0,...,1,1,...: first items are all class 0
    images = (labels * 20).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    return ImageDataset("toy", images, labels, [str(c) for c in range(N_CLASSES)], (0.5,) * 3, (0.25,) * 3)


def test_robust_accuracy_uses_the_labels_of_the_attacked_images():
    test = _sorted_test_set()
    cfg = H.HeteroConfig.from_preset("smoke", n_values=(1,), n_test=len(test), n_attack=12)
    splits = H.Splits(pool=test, attacker=test, test=test)
    x, y = H.attack_set(cfg, splits)
    assert len(y) == 12 and len(y.unique()) == N_CLASSES, "the attacked images are a stratified subset"
    # an "attack" that changes nothing: a perfect classifier must keep 100% robust accuracy on it
    adv = {("clean", 0): x, ("mifgsm", 8): x.clone()}
    nodes = {"ENS": [SimpleNamespace(key="node0", arch="cnn")]}
    frame = H.evaluate_grid(cfg, nodes, {"node0": LabelReader()}, splits, adv)
    assert set(frame["vote"]) == set(cfg.votes)
    assert (frame["clean_acc"] == 1.0).all()
    assert (frame["robust_acc"] == 1.0).all(), frame[["vote", "robust_acc"]]
    assert (frame["success_rate"] == 0.0).all()


# ----------------------------------------------------------------------------- the authors' protocol
def _toy_splits(n_nodes=3, per_node=8):
    test = _sorted_test_set()
    shards = {mode: [test.subset(per_node, seed=10 * i + k) for i in range(n_nodes)]
              for k, mode in enumerate(("shared", "disjoint", "dirichlet"))}
    shards["shared"] = [shards["shared"][0]] * n_nodes
    return H.Splits(pool=test, attacker=test, test=test, shards=shards)


def test_ens_and_every_axis_use_disjoint_shards():
    """ENS is N identical nodes on DISJOINT 1/N shards (the old protocol gave ENS one shared shard)."""
    cfg = H.HeteroConfig.from_preset("smoke", n_values=(1, 3))
    splits = _toy_splits()
    nodes = H.plan(cfg, splits)
    assert "data" not in nodes, "the old 'data' axis is the paper's ENS"
    for axis, specs in nodes.items():
        want = splits.shards["dirichlet" if axis == "data non-IID" else "disjoint"]
        assert all(s.data is want[i] for i, s in enumerate(specs)), axis
    ens = nodes["ENS"]
    assert {s.arch for s in ens} == {"cnn"} and {s.train.optimizer for s in ens} == {"sgd"}
    assert len({(s.train.lr, s.train.momentum, s.train.weight_decay) for s in ens}) == 1  # shared default HP


def test_every_axis_but_ens_is_tuned_once_per_node_and_shared_by_the_seeds(monkeypatch):
    """Each heterogeneous flavour = disjoint shards + per-node tuning + its axis (old: only 'tuned HP', 'all');
    a node is tuned once (first seed's spec) and every training seed trains with that node's values."""
    cfg = H.HeteroConfig.from_preset("smoke", n_values=(1, 2), seeds=(0, 1))
    tuned_calls = []

    def fake_tune(node, *a, **k):
        tuned_calls.append((node.label, node.train.seed))
        return {"lr": 0.01 + 0.001 * len(tuned_calls), "momentum": 0.85, "weight_decay": 1e-4, "val_acc": 0.5}

    monkeypatch.setattr(H.D, "tune_node", fake_tune)
    monkeypatch.setattr(H.D, "train_nodes", lambda nodes, *a, **k: {n.key: None for n in nodes})
    plans, models, tuning = H.build_nodes(cfg, SimpleNamespace(device="cpu"), _toy_splits(2))
    n_tuned = len(H.tuned_axes(cfg)) * cfg.n_max
    assert len(tuned_calls) == n_tuned == len(tuning)  # once per node, not once per node and seed
    assert {seed for _, seed in tuned_calls} == {H.node_seed(cfg, i, 0) for i in range(cfg.n_max)}
    assert set(plans) == {0, 1}
    for axis in H.tuned_axes(cfg):
        for i in range(cfg.n_max):
            want = tuning[(tuning.axis == axis) & (tuning.node == i)].lr.item()
            assert plans[0][axis][i].train.lr == plans[1][axis][i].train.lr == want, (axis, i)
    default_lr = plans[0]["ENS"][0].train.lr
    assert {s.train.lr for seed in plans for s in plans[seed]["ENS"]} == {default_lr}  # ENS: never tuned
    assert set(tuning.axis) == set(cfg.axes) - {"ENS"}
    # the training seed is part of every node's cache key: seed 1 trains other models than seed 0
    assert not {s.key for s in plans[0]["ENS"]} & {s.key for s in plans[1]["ENS"]}
    assert not {s.key for s in plans[0]["all"]} & {s.key for s in plans[1]["all"]}


def test_surrogates_train_in_the_nodes_pool_but_are_not_nodes(monkeypatch):
    cfg = H.HeteroConfig.from_preset("smoke", n_values=(1, 2), seeds=(0,))
    splits = _toy_splits(2)
    calls = []
    monkeypatch.setattr(H.D, "tune_node", lambda node, *a, **k: {"lr": 0.01, "momentum": 0.9,
                                                                  "weight_decay": 1e-4, "val_acc": 0.5})
    monkeypatch.setattr(H.D, "train_nodes", lambda nodes, *a, **k: calls.append(nodes) or {n.key: n for n in nodes})
    surrogates = H.surrogate_specs(cfg, splits)
    plans, models, _ = H.build_nodes(cfg, SimpleNamespace(device="cpu"), splits, also=surrogates)
    assert len(calls) == 1 and {s.key for s in surrogates} <= {n.key for n in calls[0]}  # one pool
    assert not {s.key for s in surrogates} & set(models)  # the nodes' predictions never include a surrogate
    assert set(models) == {n.key for ns in plans[0].values() for n in ns}


def test_seeds_per_preset():
    assert H.HeteroConfig.from_preset("smoke").seeds == (0,)
    assert H.HeteroConfig.from_preset("cpu").seeds == (0, 1, 2)
    assert H.HeteroConfig.from_preset("smoke").n_values == (1, 2)


class Fixed(nn.Module):
    """Predicts fixed labels for a whole set, recognised by its size and mean pixel."""

    def __init__(self, table):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.table = table  # n images -> label

    def forward(self, x):
        key = (len(x), round(float(x.mean()), 4))
        return nn.functional.one_hot(self.table[key], N_CLASSES).float() + 0 * self.dummy


def test_robust_accuracy_is_on_clean_correct_images():
    """Headline = accuracy after the attack on the images classified correctly when clean (1 - success rate)."""
    test = _sorted_test_set()
    cfg = H.HeteroConfig.from_preset("smoke", n_values=(1,), n_test=len(test), n_attack=8)
    splits = H.Splits(pool=test, attacker=test, test=test)
    x, y = H.attack_set(cfg, splits)
    x_adv = x.clone() + 0.5  # a different set, told apart by its mean
    wrong_clean = y.clone()
    wrong_clean[:4] = (y[:4] + 1) % N_CLASSES  # 4 of 8 wrong when clean
    after = y.clone()
    after[[0, 4, 5]] = (y[[0, 4, 5]] + 1) % N_CLASSES  # attack: breaks image 0 (already wrong) and 4, 5
    x_test, y_test = test.tensors()
    def key(t):
        return len(t), round(float(t.mean()), 4)

    model = Fixed({key(x): wrong_clean, key(x_adv): after, key(x_test): y_test})
    frame = H.evaluate_grid(cfg, {"ENS": [SimpleNamespace(key="m", arch="cnn")]}, {"m": model}, splits,
                            {("clean", 0): x, ("cwa", 8): x_adv})
    row = frame[frame.vote == "hard"].iloc[0]
    assert row.n_clean_correct == 4
    assert row.robust_acc_cc == 0.5  # of images 4..7 (clean-correct) the attack keeps 6, 7
    assert row.success_rate == 0.5
    assert row.robust_acc == 5 / 8  # unconditional: images 1, 2, 3, 6, 7


# ---------------------------------------------------------------------------------------------- claims
def _synthetic_frame(seeds, gain=0.10, cost=0.0):
    rows = []
    for seed in seeds:
        for axis in H.AXES:
            for n in (1, 3, 5):
                for attack in ("cwa", "mifgsm"):
                    base = 0.3 + 0.01 * seed
                    up = gain + 0.005 * seed if axis != "ENS" else 0.0
                    rows.append({"seed": seed, "dataset": "cifar10", "instantiation": axis, "n_nodes": n,
                                 "vote": "hard", "attack": attack, "eps_255": 8,
                                 "clean_acc": 0.5 - (cost + 0.003 * seed if axis != "ENS" else 0.0),
                                 "robust_acc_cc": base + up, "robust_acc": (base + up) / 2,
                                 "success_rate": 1 - base - up, "n_clean_correct": 100})
    return pd.DataFrame(rows)


def test_claims_table_from_seeds():
    from robustnb import stats

    cfg = H.HeteroConfig.from_preset("cpu", attacks=("mifgsm", "cwa"))
    out = H.claims(_synthetic_frame((0, 1, 2)), cfg)
    assert tuple(out.columns) == stats.CLAIM_COLUMNS
    assert list(out.claim_id) == list(H.PAPER_CLAIMS)
    assert all(c.startswith("he_") for c in out.claim_id)
    row = out.set_index("claim_id").loc["he_gain_all_n5"]
    assert abs(row.value - 0.105) < 1e-9 and row.n == 3 and row.verdict == "reproduced"
    assert out.set_index("claim_id").loc["he_clean_cost_all_n5", "verdict"] == "reproduced"
    costly = H.claims(_synthetic_frame((0, 1, 2), cost=0.2), cfg).set_index("claim_id")
    assert costly.loc["he_clean_cost_all_n5", "verdict"] == "not reproduced"
    # one seed (smoke): no interval, so the rule says inconclusive
    one = H.claims(_synthetic_frame((0,)), cfg)
    assert (one.verdict == "inconclusive at this size").all()
    nums = H.claim_numbers(_synthetic_frame((0, 1, 2)), cfg)
    assert nums["he_seeds"] == "3" and nums["he_n_large"] == "5"
    assert nums["he_best_axis"].startswith("the largest mean CWA gain at N = 5")


def test_claim_n_falls_back_at_smoke():
    assert H.claim_n(H.HeteroConfig.from_preset("smoke"), 5) == 2
    assert H.claim_n(H.HeteroConfig.from_preset("cpu"), 3) == 3


class Shifted(LabelReader):
    """Says ``label + shift`` with logit ``scale``; reports a training accuracy of ``train_acc``."""

    def __init__(self, shift, scale, train_acc):
        super().__init__()
        self.shift, self.scale = shift, scale
        self.robustnb_info = {"history": pd.DataFrame({"train_acc": [train_acc]})}

    def forward(self, x):
        label = (super().forward(x).argmax(1) + self.shift) % N_CLASSES
        return self.scale * nn.functional.one_hot(label, N_CLASSES).float() + 0 * self.dummy


def test_votes_are_per_sample_confidence_not_training_accuracy():
    """One confident, right node (training accuracy 0.01) against two unsure, wrong ones (training accuracy 1):
    the per-sample confidence vote and the unweighted soft vote follow the confident node; the old protocol
    weighted both votes by the final training accuracy and followed the two wrong nodes."""
    test = _sorted_test_set()
    cfg = H.HeteroConfig.from_preset("smoke", n_values=(3,), n_test=len(test), n_attack=8)
    splits = H.Splits(pool=test, attacker=test, test=test)
    x, _ = H.attack_set(cfg, splits)
    models = {"a": Shifted(0, 3.0, 0.01), "b": Shifted(1, 0.1, 1.0), "c": Shifted(1, 0.1, 1.0)}
    nodes = {"ENS": [SimpleNamespace(key=k, arch="cnn") for k in models]}
    frame = H.evaluate_grid(cfg, nodes, models, splits, {("clean", 0): x, ("cwa", 8): x.clone()})
    acc = frame.set_index("vote").clean_acc
    assert acc["hard"] == 0.0 and acc["weighted"] == 1.0 and acc["soft"] == 1.0


def test_nodes_and_surrogates_train_with_the_presets_speed_options():
    """cpu: bfloat16 autocast + channels-last for every node and surrogate; smoke keeps float32."""
    splits = _toy_splits(2)
    for preset, want in (("smoke", ("fp32", False)), ("cpu", ("bf16", True))):
        cfg = H.HeteroConfig.from_preset(preset)
        specs = [H._node(cfg, splits, "ENS", 0), H._node(cfg, splits, "all", 1, arch="vgg11", optimizer="adam"),
                 *H.surrogate_specs(cfg, splits)]
        assert {(s.train.precision, s.train.channels_last) for s in specs} == {want}, preset
