"""The on-disk cache (robustnb.cache): trains once, verifies what it loads, never leaves half-written files."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from robustnb import cache, train
from test_train import CFG, toy_data, toy_model


# ---------------------------------------------------------------------------------------------- cache
def test_cache_trains_once_then_loads(tmp_env):
    calls = []
    spec = {"model": "toy", "epochs": 5}

    def fit_it(model):
        calls.append(1)
        return train.fit(model, toy_data(), CFG)

    m1 = cache.cached("toy", spec, toy_model, fit_it)
    m2 = cache.cached("toy", spec, toy_model, fit_it)
    assert len(calls) == 1 and not m1.robustnb_info["from_cache"] and m2.robustnb_info["from_cache"]
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    assert isinstance(m2.robustnb_info["history"], pd.DataFrame) and len(m2.robustnb_info["history"]) == 5
    # another spec is another key
    cache.cached("toy", {**spec, "epochs": 6}, toy_model, fit_it)
    assert len(calls) == 2
    assert cache.cache_key(spec) != cache.cache_key({**spec, "epochs": 6})
    # checkpoints load with weights_only=True
    payload = torch.load(m2.robustnb_info["path"], weights_only=True)
    assert set(payload) >= {"state_dict", "spec", "history"}


def test_corrupt_checkpoint_is_not_trusted(tmp_env):
    spec = {"model": "toy"}
    path = cache.cache_path("toy", spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half a checkpoint")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m = cache.cached("toy", spec, toy_model, lambda mm: train.fit(mm, toy_data(), CFG))
    assert not m.robustnb_info["from_cache"] and any("retraining" in str(x.message) for x in w)
    assert cache.cached("toy", spec, toy_model, lambda mm: 1 / 0).robustnb_info["from_cache"]


def test_killed_save_leaves_no_checkpoint(tmp_env, monkeypatch):
    spec = {"model": "toy", "crash": True}

    def crash(*a, **k):
        raise KeyboardInterrupt  # the run is killed while writing

    monkeypatch.setattr(cache.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.cached("toy", spec, toy_model, lambda m: None)
    folder = cache.cache_path("toy", spec).parent
    assert list(folder.iterdir()) == []  # neither a target nor a temporary file is left


# --------------------------------------------------------------------------------------------- results
def test_normalised_source_ignores_docstrings_comments_and_formatting():
    a = 'def f(x, y=2):\n    """Doc."""\n    # a comment\n    return x + y  # why\n'
    b = "def f(x,\n      y = 2):\n    'Another docstring.'\n    return (x\n            + y)\n"
    assert cache.normalised_source(a) == cache.normalised_source(b)
    assert cache.normalised_source(a) != cache.normalised_source(a.replace("x + y", "x - y"))
    assert cache.normalised_source('class C:\n    """Only a docstring."""\n') == "class C:\n    pass"


def test_code_fingerprint_follows_the_code_an_experiment_reaches():
    from robustnb.chapters import entropy_attacks, getting_started

    parts = cache.code_parts(entropy_attacks.attack_images.uncached)
    # the function, what it calls, module attribute chains (rate.measure), and the attack chosen by name
    assert {"robustnb.chapters.entropy_attacks:attack_images", "robustnb.chapters.entropy_attacks:attacked",
            "robustnb.split.rate:measure", "registry attack:entropy", "robustnb.attacks.entropy:EntropyAttack",
            "robustnb.attacks.base:CheckedAttack", "robustnb.cache:_seeded"} <= set(parts)
    # not the figures, widgets, progress bars, the rest of the chapter or the keys' own machinery
    assert not [p for p in parts if p.split(":")[0] in cache.NOT_IN_KEYS]
    assert "robustnb.chapters.entropy_attacks:explore" not in parts and "robustnb.cache:code_parts" not in parts
    basics = cache.code_parts(getting_started.robustness.uncached)
    assert "robustnb.attacks.standard:robustness_curve" in basics and "registry attack:pgd" in basics
    assert not {p for p in basics if "entropy" in p}


def test_code_fingerprint_is_memoised():
    from robustnb.chapters import getting_started

    fn = getting_started.robustness.uncached
    first = cache.code_fingerprint(fn)

    def boom(*a, **k):
        raise AssertionError("recomputed")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cache, "code_parts", boom)
        assert cache.code_fingerprint(fn) == first


# toy code for the registry and fallback rules (this module is the experiments' own module here)
def _by_name(model):
    from robustnb.mechanisms import make
    return make("attack", "pgd", model, eps=8 / 255)


def _every_defense():
    from robustnb import registry
    return [n for n in registry.DEFENSES.names()]


def _rate_attacks():
    from robustnb.mechanisms import names
    return names("attack", group="rate")


def _unseen():
    return globals()["_by_name"]


def _from_arguments(attack: str):
    from robustnb.mechanisms import make
    return make("attack", attack, None)


def test_registry_entries_in_the_key():
    """Dispatch by name: the entries whose names the code or the arguments carry; enumeration: every match."""
    from robustnb import registry

    by_name = cache.code_parts(_by_name)
    assert "registry attack:pgd" in by_name and "registry attack:entropy" not in by_name
    every = cache.code_parts(_every_defense)
    assert {f"registry defense:{n}" for n in registry.DEFENSES} <= set(every)
    assert "robustnb.defenses:DisentangledTV" in every
    rate = cache.code_parts(_rate_attacks)
    assert {"registry attack:entropy", "registry attack:adaptive_entropy"} <= set(rate)
    assert "registry attack:pgd" not in rate and "registry attack:salt_pepper" not in rate
    args = cache.code_parts(_from_arguments, {"attack": "salt_pepper"}, {"attack": "salt_pepper"})
    assert "registry attack:salt_pepper" in args and "robustnb.attacks.noise:SaltAndPepper" in args
    assert "registry attack:salt_pepper" not in cache.code_parts(_from_arguments, {"attack": "pgd"}, {"attack": "pgd"})


def test_what_cannot_be_seen_counts_whole():
    """A name looked up at run time (``globals()``) brings its whole module, normalised."""
    assert f"{__name__}:*" in cache.code_parts(_unseen)


def test_arguments_bring_their_classes():
    """Models (with their submodules), configs and datasets passed in: their robustnb classes count."""
    from robustnb.models import build_classifier
    from robustnb.train import TrainConfig

    model = build_classifier("cnn")
    parts = cache.code_parts(_by_name, {"model": model, "cfg": TrainConfig()})
    assert {"robustnb.models:SmallCNN", "robustnb.models:Normalize", "robustnb.train:TrainConfig"} <= set(parts)


CALLS = []


@cache.experiment
def _toy_experiment(cfg, model, x, n: int = 3):
    CALLS.append(n)
    out = model(x).detach()
    frame = pd.DataFrame({"i": range(n), "v": [float(cfg["scale"]) * k for k in range(n)],
                          "hits": [out[0].numpy()] * n})
    return frame, {("pgd", 8 / 255): out, "note": "ok"}, [1.5, None]


def _model():
    m = torch.nn.Linear(2, 2)
    m.robustnb_info = {"key": "abc"}
    return m


def test_experiment_results_are_cached_by_arguments(tmp_env):
    CALLS.clear()
    m, x = _model(), torch.ones(4, 2)
    first = _toy_experiment({"scale": 2}, m, x)
    again = _toy_experiment({"scale": 2}, m, x)
    assert CALLS == [3]
    pd.testing.assert_frame_equal(first[0], again[0])
    assert torch.equal(first[1][("pgd", 8 / 255)], again[1][("pgd", 8 / 255)]) and again[2] == [1.5, None]
    _toy_experiment({"scale": 3}, m, x)  # another config
    _toy_experiment({"scale": 2}, m, x + 1)  # other inputs
    _toy_experiment({"scale": 2}, m, x, n=4)
    m2 = _model()
    m2.robustnb_info = {"key": "another model"}
    _toy_experiment({"scale": 2}, m2, x)
    assert CALLS == [3, 3, 3, 4, 3]
    _toy_experiment({"scale": 2}, m, x, cache=False)
    assert CALLS == [3, 3, 3, 4, 3, 3]


def test_experiment_recomputes_after_a_code_change(tmp_env, monkeypatch):
    CALLS.clear()
    m, x = _model(), torch.ones(4, 2)
    _toy_experiment({"scale": 2}, m, x)
    monkeypatch.setattr(cache, "code_fingerprint", lambda fn, arguments=None, described=None: "edited")
    _toy_experiment({"scale": 2}, m, x)
    assert CALLS == [3, 3]


def test_experiment_never_trusts_a_damaged_or_unfinished_result(tmp_env):
    CALLS.clear()
    m, x = _model(), torch.ones(4, 2)
    _toy_experiment({"scale": 2}, m, x)
    folder = next((tmp_env[1] / "results").iterdir())
    frame_file = folder / "frame0.parquet"
    frame_file.write_bytes(frame_file.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="recomputing"):
        out = _toy_experiment({"scale": 2}, m, x)
    assert CALLS == [3, 3] and len(out[0]) == 3
    (folder / "manifest.json").unlink()  # a run killed before its manifest: its files are not read
    _toy_experiment({"scale": 2}, m, x)
    assert CALLS == [3, 3, 3]


def test_experiment_computes_uncached_when_it_cannot_name_an_input(tmp_env):
    CALLS.clear()
    bare = torch.nn.Linear(2, 2)  # not made by the cache: no key
    _toy_experiment({"scale": 2}, bare, torch.ones(4, 2))
    _toy_experiment({"scale": 2}, bare, torch.ones(4, 2))
    assert CALLS == [3, 3] and not (tmp_env[1] / "results").exists()
    with pytest.raises(cache.Unnameable, match="cannot describe a object"):
        cache.describe(object())


@cache.experiment
def _random_experiment(n: int):
    return {"torch": torch.rand(n), "numpy": torch.from_numpy(np.random.rand(n))}


def test_experiment_randomness_is_a_function_of_its_inputs(tmp_env):
    """The same inputs give the same draws whatever ran before (a test or another chapter), cached or not;
    the caller's generators continue as if nothing had run."""
    torch.manual_seed(1)
    np.random.seed(1)
    a = _random_experiment(5, cache=False)
    after_torch, after_numpy = torch.rand(1), np.random.rand()
    torch.manual_seed(1)
    np.random.seed(1)
    assert torch.rand(1) == after_torch and np.random.rand() == after_numpy  # caller's RNG untouched
    torch.manual_seed(99)
    b = _random_experiment(5)
    assert torch.equal(a["torch"], b["torch"]) and torch.equal(a["numpy"], b["numpy"])
    assert not torch.equal(_random_experiment(6)["torch"][:5], a["torch"])  # other inputs, other draws


def test_a_runtime_memo_is_not_in_a_key():
    """A module-level memo (the rANS coder's per-model CDF tables, ``robustnb.split.model._TABLES``) fills as models
    code images; its contents must not change the key of an experiment that reaches it (a notebook that coded an
    image before the experiment computed what the command line had cached)."""
    import torch

    from robustnb.chapters import split_computing as sc
    from robustnb.data import ImageDataset
    from robustnb.split import build_split_model

    models = {}
    for em in ("factorized", "hyperprior"):
        m = build_split_model("vgg", em).eval()
        m.update(force=True)
        m.robustnb_info = {"key": f"k-{em}"}
        models[("vgg", em, 0.01)] = m
    data = ImageDataset("toy", torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8), torch.arange(4),
                        [str(i) for i in range(10)], (0.5,) * 3, (0.5,) * 3)
    args = dict(cfg=sc.SplitComputingConfig.from_preset("smoke"), models=models, test_set=data)
    described = {k: cache.describe(v) for k, v in args.items()}
    def fresh():  # as a new process computes it (the fingerprints and parts are memoised per process)
        cache._FINGERPRINTS.clear()
        cache._PARTS.clear()
        return cache.code_fingerprint(sc.image_rates.uncached, args, described)

    before = fresh()
    for m in models.values():
        m.compress(data.tensors()[0])  # fills the coder's memo
    assert fresh() == before
