"""Property tests (hypothesis): every registered attack, called directly as the object the package hands out,
refuses bad images and labels with the package's error (naming the bad value and what is allowed) and runs on
good ones, whatever the shape and dtype. The attacks are looked up in the registries, so a new registration
without a factory here fails the test instead of going unchecked."""

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustnb import registry
from robustnb.attacks import budget, check_in_ball
from robustnb.config import ConfigError
from robustnb.mechanisms import make
from robustnb.split import build_split_model
from test_attack_properties import Tiny  # the same small classifier as the attack property tests


@functools.lru_cache(maxsize=None)
def _tiny(seed=0):
    return Tiny(seed).eval()


@functools.lru_cache(maxsize=None)
def _split():
    torch.manual_seed(0)
    m = build_split_model("vgg", "factorized").eval()
    m.update(force=True)
    return m


EPS = 4 / 255


def _standard(name):
    """A standard (torchattacks) attack from its registry entry alone: iterative ones with one step and no
    random start, so a new entry is tested without a line here."""
    meta = registry.ATTACKS.meta(name)
    kw = {"steps": 1} if meta["iterative"] else {}
    if "random_start" in (registry.ATTACKS.settings(name) or ()):
        kw["random_start"] = False
    return make("attack", name, _tiny(), eps=EPS, **kw)


#: name -> a factory of the attack object the package hands out for it, built by name through the one front door
#: (robustnb.mechanisms.make; one optimizer step: fast): every standard attack from its entry, the others here
ATTACK_FACTORIES = {
    **{name: functools.partial(_standard, name) for name in registry.ATTACKS.names(group="standard")},
    "entropy": lambda: make("attack", "entropy", _split(), eps=EPS, steps=1, draws=1),
    "adaptive_entropy": lambda: make("attack", "adaptive_entropy", _split(), defense=make("defense", "bit_depth"),
                                     eps=EPS, steps=1, draws=1),
    "salt_pepper": lambda: make("attack", "salt_pepper", _tiny(), steps=2, repeats=1),
}
TRANSFER_FACTORIES = {name: functools.partial(make, "transfer attack", name, [_tiny(0), _tiny(1)], EPS, steps=1)
                      for name in ("mifgsm", "sam", "cse", "cwa")}
NEEDS_SPLIT_MODEL = {"entropy", "adaptive_entropy"}  # image sizes a split model takes (multiples of 8)
SLOW_ON_GOOD_INPUT = {"autoattack"}  # thousands of queries: only its input checks are exercised

ALL = [("attack", n) for n in registry.ATTACKS.names()] + [("transfer", n) for n in registry.TRANSFER_ATTACKS.names()]


def _make(kind, name):
    factories = ATTACK_FACTORIES if kind == "attack" else TRANSFER_FACTORIES
    assert name in factories, f"registered {kind} {name!r} has no factory in this test: add one"
    return factories[name]()


def test_every_registered_attack_has_a_factory():
    assert set(ATTACK_FACTORIES) == set(registry.ATTACKS.names())
    assert set(TRANSFER_FACTORIES) == set(registry.TRANSFER_ATTACKS.names())


# ----------------------------------------------------------------------------------------------- strategies
SIDE = st.integers(4, 9)
BATCH = st.integers(1, 3)
BAD_KINDS = ("0-255", "HWC", "2-D", "3-D", "5-D", "integer dtype", "non-finite")


@st.composite
def bad_images(draw):
    """``(kind, images)``: a batch that is wrong in one way."""
    kind = draw(st.sampled_from(BAD_KINDS))
    n, h, w = draw(BATCH), draw(SIDE), draw(SIDE)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    if kind == "0-255":
        x = torch.rand(n, 3, h, w, generator=g) * 254 + 1
        x[0, 0, 0, 0] = 255.0
    elif kind == "HWC":
        x = torch.rand(n, h, w, draw(st.sampled_from([1, 3])), generator=g)
    elif kind == "2-D":
        x = torch.rand(h, w, generator=g)
    elif kind == "3-D":
        x = torch.rand(draw(st.sampled_from([1, 3])), h, w, generator=g)
    elif kind == "5-D":
        x = torch.rand(1, n, 3, h, w, generator=g)
    elif kind == "integer dtype":
        dtype = draw(st.sampled_from([torch.uint8, torch.int32, torch.int64, torch.bool]))
        x = torch.randint(0, 2 if dtype == torch.bool else 256, (n, 3, h, w), generator=g).to(dtype)
    else:
        x = torch.rand(n, 3, h, w, generator=g)
        bad = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = bad
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16]))
    if torch.is_floating_point(x) and kind != "0-255":  # float16 holds 0-255 only approximately: keep float32
        x = x.to(dtype)
    return kind, x


def _labels(x):
    n = x.shape[0] if x.dim() >= 1 else 1
    return torch.arange(n) % 10


SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("kind,name", ALL)
@SETTINGS
@given(case=bad_images())
def test_bad_images_raise_the_package_error(kind, name, case):
    what, x = case
    attack = _make(kind, name)
    with pytest.raises(ConfigError) as err:
        attack(x, _labels(x))
    message = str(err.value)
    assert "images" in message
    if what == "non-finite":
        assert "[0, 1]" in message and ("NaN" in message or "infinite" in message)
    if what == "integer dtype":
        assert str(x.dtype) in message


@pytest.mark.parametrize("kind,name", ALL)
@SETTINGS
@given(n=BATCH, wrong=st.integers(0, 5), side=st.sampled_from([8, 16]),
       dtype=st.sampled_from([torch.int64, torch.float32, torch.bool]))
def test_labels_of_another_length_or_dtype_raise_naming_both(kind, name, n, wrong, side, dtype):
    x = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(n))
    attack = _make(kind, name)
    if wrong != n:
        with pytest.raises(ConfigError, match=f"got {wrong} labels for {n} images"):
            attack(x, torch.zeros(wrong, dtype=torch.long))
    if dtype != torch.int64:
        with pytest.raises(ConfigError, match=str(dtype)):
            attack(x, torch.zeros(n, dtype=dtype))


@pytest.mark.parametrize("kind,name", [k for k in ALL if k[1] not in SLOW_ON_GOOD_INPUT])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 3), side=SIDE, seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_good_images_of_any_small_shape_run(kind, name, n, side, seed, dtype):
    if name in NEEDS_SPLIT_MODEL and kind == "attack":
        side = 8 * (1 + side % 2)
    x = torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    attack = _make(kind, name)
    if dtype != torch.float32:  # the models compute in float32: a clear error, not torch's dtype mismatch
        with pytest.raises(ConfigError, match=f"images are {dtype}"):
            attack(x, torch.arange(n) % 10)
        return
    out = attack(x, torch.arange(n) % 10)
    assert out.shape == x.shape and (n == 0 or (out.min() >= 0 and out.max() <= 1))
    if n and name != "salt_pepper":
        check_in_ball(out, x, EPS, norm=budget(name)[0] if kind == "attack" else "Linf")


#: the attacks that need no labels (they attack the rate, not the prediction); every other one does
LABEL_FREE = {("attack", "entropy"), ("attack", "adaptive_entropy")}


@pytest.mark.parametrize("kind,name", [k for k in ALL if k not in LABEL_FREE])
def test_attacks_on_true_labels_need_labels(kind, name):
    with pytest.raises(ConfigError, match="needs labels"):
        _make(kind, name)(torch.rand(2, 3, 8, 8))
