"""robustnb.mechanisms.make: every registered name of every kind is built and run at smoke shapes through the one
front door the chapters use (the attacks' own property tests, tests/test_attack_inputs.py, build theirs the same
way); no module binds a registry's name to something else."""

import importlib
import pkgutil

import pytest
import torch

import robustnb
from robustnb import defenses, registry
from robustnb.config import ConfigError
from robustnb.mechanisms import KINDS, SIGNATURES, make, names
from test_attack_properties import split_model  # noqa: F401  (the same untrained smoke split model fixture)


def images(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_every_kind_is_documented_and_unknown_kinds_and_names_fail_clearly():
    assert set(SIGNATURES) == set(KINDS)
    with pytest.raises(ConfigError, match=r"Unknown kind 'attacks'.*'attack'"):
        make("attacks", "pgd")
    with pytest.raises(ConfigError, match=r"Unknown defense 'tv'.*'disentangled_tv'"):
        make("defense", "tv")
    assert names("attack", group="rate") == ("entropy", "adaptive_entropy")


@pytest.mark.parametrize("name", registry.DEFENSES.names())
def test_every_defense_is_built_and_run(name, split_model):
    d = make("defense", name, defenses.model_bit_map(split_model), defenses.DefenseSettings(n_iter=2))
    x = images()
    out = d(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("name", registry.CORRUPTIONS.names())
def test_every_corruption_is_built_and_run(name):
    x = images()
    fn = make("corruption", name, severity=2, seed=1)
    out = fn(x)
    assert out.shape == x.shape and torch.equal(out, robustnb.corruptions.corrupt(x, name, 2, 1))
    with pytest.raises(ConfigError, match="severity"):
        make("corruption", name, severity=7)


@pytest.mark.parametrize("name", registry.ARCHITECTURES.names())
def test_every_architecture_is_built_and_run(name):
    net = make("architecture", name, 10, 3, 32).eval()
    with torch.no_grad():
        assert net(images()).shape == (2, 10)


@pytest.mark.parametrize("name", registry.VOTES.names())
def test_every_vote_is_built_and_run(name):
    logits = torch.randn(3, 4, 10, generator=torch.Generator().manual_seed(0))  # 3 nodes, 4 images, 10 classes
    scores = make("vote", name)(logits)
    assert scores.shape == (4, 10)


def test_no_module_binds_a_registry_name_to_something_else():
    registered = {n for n in vars(registry) if isinstance(getattr(registry, n), registry.Registry)}
    for info in pkgutil.walk_packages(robustnb.__path__, "robustnb."):
        if info.name in ("robustnb.registry", "robustnb.__main__") or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for n in registered & set(vars(module)):
            assert getattr(module, n) is getattr(registry, n), f"{info.name}.{n} shadows robustnb.registry.{n}"


def test_a_registry_get_has_no_default_to_ignore():
    """``Registry.get`` takes a name only: a default would read as a fallback it never applies."""
    assert registry.DEFENSES.get("jpeg") is registry.DEFENSES["jpeg"]
    with pytest.raises(TypeError):
        registry.DEFENSES.get("jpeg", None)
    with pytest.raises(ConfigError, match="'jpgg'.*'jpeg'"):
        registry.DEFENSES.get("jpgg")
