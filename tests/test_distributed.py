"""Node training through the cache, and tuning (robustnb.distributed)."""

import json
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from robustnb import distributed as E
from robustnb.config import ConfigError
from robustnb.data import ImageDataset


def _tiny_dataset(n=64):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    x = (y.view(-1, 1, 1, 1) * 120 + torch.randint(0, 60, (n, 3, 8, 8), generator=g)).to(torch.uint8)
    return ImageDataset("tiny", x, y, ["a", "b"], (0.5,) * 3, (0.25,) * 3)


def _node(seed=0, **train):
    cfg = E.default_train("sgd", "cosine", epochs=1, batch_size=32, seed=seed).replace(augment=False, **train)
    return E.NodeSpec("cnn", cfg, _tiny_dataset(), (("width", 4),), label=f"n{seed}")


def test_train_nodes_local_uses_the_cache(tmp_env):
    a, b, a_again = _node(0), _node(1), _node(0)
    assert a.key == a_again.key and a.key != b.key and a.key != _node(0, lr=0.01).key
    models = E.train_nodes([a, b, a_again], backend="local")
    assert set(models) == {a.key, b.key}
    assert not models[a.key].robustnb_info["from_cache"]
    again = E.train_nodes([a], backend="local")
    assert again[a.key].robustnb_info["from_cache"]
    with pytest.raises(ConfigError, match="Unknown backend 'spark'"):
        E.train_nodes([a], backend="spark")


def test_training_cost_is_forward_flops_times_images_times_epochs():
    small, wide = _node(0), E.NodeSpec("cnn", _node(0).train, _tiny_dataset(), (("width", 16),), label="wide")
    long = _node(1, epochs=3)
    big_data = E.NodeSpec("cnn", _node(2).train, _tiny_dataset(256), (("width", 4),), label="more data")
    costs = {n.label: E.training_cost(n) for n in (small, wide, long, big_data)}
    assert costs["n1"] == pytest.approx(3 * costs["n0"]) and costs["more data"] == pytest.approx(4 * costs["n0"])
    assert costs["wide"] > 10 * costs["n0"]  # 4x the channels: about 16x the convolutions' work
    jobs = [E.node_job(n, E.training_cost(n)) for n in (small, long, wide, big_data)]
    assert [j.cost for j in jobs] == [costs[n] for n in ("n0", "n1", "wide", "more data")]


def test_tune_node_local_is_cached_and_in_range(tmp_env):
    _, cache = tmp_env
    node = _node(0)
    best = E.tune_node(node, trials=2, tuner="random")
    lo, hi = E.LR_RANGES["sgd"]
    assert lo <= best["lr"] <= hi and 0.8 <= best["momentum"] <= 0.95 and 0.0 <= best["val_acc"] <= 1.0
    files = list((cache / "tuning").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["value"] == best
    assert E.tune_node(node, trials=2, tuner="random") == best
    assert E.tuned(node, best).train.lr == best["lr"]


def test_tuning_is_redrawn_by_the_nodes_seed_and_momentum_only_where_used(tmp_env):
    """Each round re-draws the tuning (samples from the node's seed); Adam / one-cycle nodes get no momentum."""
    a, b = E.tune_node(_node(0), trials=2, tuner="random"), E.tune_node(_node(1), trials=2, tuner="random")
    assert a["lr"] != b["lr"]
    adam = E.tune_node(_node(0, optimizer="adam", lr=2e-3), trials=2, tuner="random")
    assert set(adam) == {"lr", "weight_decay", "val_acc"}
    lo, hi = E.LR_RANGES["adam"]
    assert lo <= adam["lr"] <= hi


def test_a_nodes_samples_come_from_its_seed_alone():
    """Tuning samples depend on the node's seed only, not on which nodes are tuned beside it."""
    a, b = _node(0), _node(1)
    assert E.trial_configs(a, 3) == E.trial_configs(_node(0), 3) != E.trial_configs(b, 3)
    assert E.trial_configs(a, 2) == E.trial_configs(a, 3)[:2]


def test_asha_tunes_several_nodes_in_one_experiment_each_on_its_own_samples(tmp_env):
    """tuner="asha": one Ray Tune experiment for all nodes, ASHA per node; each node's result is one of its own
    samples, cached under its own spec (a second call trains nothing), and a node alone gets the same result."""
    nodes = [_node(0, epochs=2), _node(1, epochs=2, optimizer="adam", lr=2e-3)]
    try:
        best = E.tune_nodes(nodes, trials=2, tuner="asha", num_cpus=2)
        for node, b in zip(nodes, best):
            sample = {k: v for k, v in b.items() if k != "val_acc"}
            assert sample in E.trial_configs(node, 2) and 0.0 <= b["val_acc"] <= 1.0
        assert set(best[1]) == {"lr", "weight_decay", "val_acc"}
        assert E.tune_nodes(nodes[::-1], trials=2, tuner="asha") == best[::-1]  # from the cache, per node
    finally:
        E.ray_shutdown()
    _, cache = tmp_env
    assert len(list((cache / "tuning").glob("*.json"))) == 2


def test_per_node_asha_compares_a_trial_only_with_its_own_nodes_trials():
    from ray.tune.schedulers import TrialScheduler

    sched = E._per_node_asha([4, 4])
    trial = lambda tid, node: SimpleNamespace(trial_id=tid, config={"trial": {"node": node}})  # noqa: E731
    a, b, c = trial("a", 0), trial("b", 1), trial("c", 0)
    for t in (a, b, c):
        sched.on_trial_add(None, t)
    assert sched.on_trial_result(None, a, {"epoch": 1, "val_acc": 0.9}) == TrialScheduler.CONTINUE
    # node 1's first trial is not compared with node 0's better one
    assert sched.on_trial_result(None, b, {"epoch": 1, "val_acc": 0.1}) == TrialScheduler.CONTINUE
    # node 0's second trial is, and stops below it
    assert sched.on_trial_result(None, c, {"epoch": 1, "val_acc": 0.2}) == TrialScheduler.STOP


def test_nodes_trained_on_a_two_node_ray_cluster_equal_local_ones(tmp_path, monkeypatch):
    """A real Ray cluster (a head and a second node, separate processes on loopback) joined through
    RAY_ADDRESS: the trained checkpoints come back through the object store into the driver's own cache (the
    workers cache in their own folder), and the nodes equal the same nodes trained locally."""
    from ray.cluster_utils import Cluster

    nodes = [_node(seed) for seed in range(3)]
    monkeypatch.setenv("ROBUSTNB_CACHE", str(tmp_path / "local"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a Ray worker: same kernels, same numbers
    try:
        local = E.train_nodes(nodes, backend="local")
    finally:
        torch.set_num_threads(threads)
    driver = tmp_path / "driver"
    monkeypatch.setenv("ROBUSTNB_CACHE", str(driver))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    try:
        ray = E.ray_init()
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        remote = E.train_nodes(nodes, backend="ray")
    finally:
        E.ray_shutdown()
        cluster.shutdown()
    assert E.WORKER_CACHE != driver and len(list((driver / "models").glob("*.pt"))) == len(nodes)
    for key, model in local.items():
        a, b = model.state_dict(), remote[key].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), key


def test_a_checkpoint_from_elsewhere_is_verified_on_load(tmp_env):
    node = _node(0)
    E.train_nodes([node], backend="local")
    blob = E.cache_path(*node.cache_name_spec()).read_bytes()
    E.cache_path(*node.cache_name_spec()).unlink()
    E.adopt_checkpoint(node, blob[:-50] + bytes(50))  # damaged on the way
    with pytest.warns(UserWarning, match="could not be used"):
        again = E.train_nodes([node], backend="local")
    assert not again[node.key].robustnb_info["from_cache"]  # retrained, not read from a damaged file


def test_execution_is_apart_from_what_is_computed():
    """Where jobs run (backend, Ray address, CPUs, threads) is an Execution, never part of a key; the tuning
    strategy (random search or ASHA) is a science setting and is."""
    assert E.Execution.from_preset("smoke").backend == "local" and E.Execution.from_preset("cpu").backend == "ray"
    assert E.Execution.from_preset("cpu", address="ray://head:10001").address == "ray://head:10001"
    with pytest.raises(ConfigError, match="Unknown backend 'spark'"):
        E.Execution(backend="spark")
    with pytest.raises(ConfigError, match="Unknown tuner 'grid'"):
        E.tune_node(_node(0), trials=1, tuner="grid")


def test_tuning_trials_train_on_the_runs_device_without_it_entering_the_key(tmp_env, monkeypatch):
    """A trial trains where its node will (the run's device reaches ``fit``); Ray Tune trials ask
    for a share of a GPU when the device is one; the device, like the backend, is not part of the cached result."""
    seen = []

    def fake_fit(model, data, cfg, device="cpu", **kw):
        seen.append(str(device))
        return pd.DataFrame({"epoch": [1], "eval_acc": [0.5]})

    monkeypatch.setattr(E, "fit", fake_fit)
    node = _node(0)
    best = E.tune_nodes([node], trials=2, tuner="random", device="cuda:1")  # fit is faked: nothing runs on a GPU
    assert seen == ["cuda:1", "cuda:1"]
    assert E.tune_nodes([node], trials=2, tuner="random", device="cpu") == best and len(seen) == 2  # cached
    assert E.trial_resources("cpu") == {"cpu": 1}
    assert E.trial_resources(torch.device("cuda", 0)) == {"cpu": 1, "gpu": E.TRIAL_GPU_FRACTION}
    assert 0 < E.TRIAL_GPU_FRACTION <= 1
