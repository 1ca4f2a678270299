"""Bad input fails at once with the package's error (naming the value and what is allowed); empty batches come
back empty; the cache is a function of its key. Each test here failed before the hardening."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from robustnb import cache, compression, config, corruptions, defenses, train
from robustnb.attacks import (CWA, EntropyAttack, SaltAndPepper, make_attack, make_transfer_attack, perturb,
                              robustness_curve)
from robustnb.config import ConfigError
from robustnb.split import build_split_model, rate
from robustnb.split.zoo import _check_lambda

BAD_IMAGES = {
    "0-255": lambda: torch.rand(2, 3, 8, 8) * 255,
    "HWC": lambda: torch.rand(2, 8, 8, 3),
    "2-D": lambda: torch.rand(8, 8),
    "NaN": lambda: torch.full((1, 3, 8, 8), float("nan")),
    "uint8": lambda: torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8),
}


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.LazyLinear(10))

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def split_model():
    torch.manual_seed(0)
    m = build_split_model("vgg", "hyperprior").eval()
    m.update(force=True)
    return m


@pytest.fixture(scope="module")
def tiny():
    m = Tiny().eval()
    m(torch.rand(1, 3, 8, 8))
    return m


def _entry_points(split_model, tiny):
    bit_map_fn = defenses.model_bit_map(split_model)
    y = lambda x: torch.zeros(len(x), dtype=torch.long)  # noqa: E731
    return {
        "entropy attack": lambda x: EntropyAttack(split_model, eps=4 / 255, steps=1, draws=1)(x),
        "pgd (perturb)": lambda x: perturb(make_attack("pgd", tiny, 4 / 255, steps=1), x, y(x)),
        "cwa": lambda x: CWA([tiny], eps=4 / 255, steps=1)(x, y(x)),
        "salt & pepper": lambda x: SaltAndPepper(tiny, steps=2, repeats=1)(x, y(x)),
        "jpeg corruption": lambda x: corruptions.corrupt(x, "jpeg", 3),
        "fog corruption": lambda x: corruptions.corrupt(x, "fog", 3),
        "jpeg defense": lambda x: defenses.make_defense("jpeg")(x),
        "bit depth": lambda x: defenses.make_defense("bit_depth")(x),
        "disentangled TV": lambda x: defenses.make_defense("disentangled_tv", bit_map_fn)(x),
        "estimated bits": lambda x: rate.estimated_bits(split_model, x),
        "real bytes": lambda x: rate.real_bytes(split_model, x),
        "bit map": lambda x: rate.bit_map(split_model, x),
    }


ENTRIES = ["entropy attack", "pgd (perturb)", "cwa", "salt & pepper", "jpeg corruption", "fog corruption",
           "jpeg defense", "bit depth", "disentangled TV", "estimated bits", "real bytes", "bit map"]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("bad", list(BAD_IMAGES))
def test_bad_images_raise_the_package_error(split_model, tiny, entry, bad):
    fn = _entry_points(split_model, tiny)[entry]
    x = BAD_IMAGES[bad]()
    if entry in ("entropy attack", "estimated bits", "real bytes", "bit map", "disentangled TV") and bad == "HWC":
        x = torch.rand(2, 32, 32, 3)
    with pytest.raises(ConfigError):
        fn(x)


@pytest.mark.parametrize("entry", ENTRIES)
def test_empty_batches_come_back_empty(split_model, tiny, entry):
    size = 32 if entry in ("entropy attack", "estimated bits", "real bytes", "bit map", "disentangled TV") else 8
    out = _entry_points(split_model, tiny)[entry](torch.rand(0, 3, size, size))
    assert len(out) == 0


def test_numeric_settings_are_checked(split_model, tiny):
    with pytest.raises(ConfigError, match="alpha"):
        EntropyAttack(split_model, eps=8 / 255, alpha=float("nan"))
    with pytest.raises(ConfigError, match="alpha"):
        make_transfer_attack("sam", [tiny], 8 / 255, alpha=float("nan"))
    with pytest.raises(ConfigError, match="True"):
        EntropyAttack(split_model, eps=True)
    with pytest.raises(ConfigError, match="bits"):
        defenses.BitDepth(bits=0)
    with pytest.raises(ConfigError, match="quality"):
        defenses.JPEG(quality=0)
    for kw, word in ((dict(lr=float("nan")), "lr"), (dict(batch_size=2.5), "batch_size"),
                     (dict(label_smoothing=2), "label_smoothing"), (dict(epochs="5"), "epochs")):
        with pytest.raises(ConfigError, match=word):
            train.TrainConfig(**kw)
    with pytest.raises(ConfigError, match="lambda"):
        _check_lambda(math.inf)
    with pytest.raises(ConfigError, match="calibration"):
        compression.quantize_int8(nn.Sequential(nn.Identity(), nn.Flatten()), torch.rand(0, 3, 8, 8))


def test_names_and_numpy_integers():
    with pytest.raises(ConfigError, match="Unknown attack None.*'fgsm'"):
        make_attack(None, Tiny(), 8 / 255)
    frame, _ = robustness_curve(Tiny().eval(), torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), [0.0],
                                attacks="fgsm")
    assert frame["attack"].tolist() == ["fgsm"]
    assert config.seed_everything(np.int64(3)) is not None
    assert train.TrainConfig(seed=np.int64(3)).seed == 3
    if not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match="MPS"):
            config.get_device("mps")


# ----------------------------------------------------------------------------------------- the cache
def _toy():
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 2))


def _fit(model):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 3, 2, 2, generator=g), torch.randint(0, 2, (32,), generator=g)
    return train.fit(model, (x, y), train.TrainConfig(epochs=2, batch_size=8, augment=False))


def test_same_key_same_weights_whatever_ran_before(tmp_env):
    a = cache.cached("toy", {"k": 1}, _toy, _fit, verbose=False)
    _, cache_dir = tmp_env
    for f in (cache_dir / "models").iterdir():
        f.unlink()
    torch.rand(5)  # someone used the global RNG in between
    b = cache.cached("toy", {"k": 1}, _toy, _fit, verbose=False)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_flipped_bytes_in_a_checkpoint_are_detected_and_retrained(tmp_env):
    a = cache.cached("toy", {"k": 2}, _toy, _fit, verbose=False)
    path = cache.cache_path("toy", {"k": 2})
    blob = bytearray(path.read_bytes())
    key = a.state_dict()["1.weight"].numpy().tobytes()
    at = bytes(blob).find(key[:16])
    assert at > 0
    blob[at:at + 8] = bytes(8)  # corrupt the stored weights, not the zip structure
    path.write_bytes(bytes(blob))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        b = cache.cached("toy", {"k": 2}, _toy, _fit, verbose=False)
    assert not b.robustnb_info["from_cache"] and any("checksum" in str(x.message) for x in w)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_truncated_cached_tensors_are_recomputed(tmp_env):
    calls = []

    def compute():
        calls.append(1)
        return {"x_adv": torch.arange(6.0)}

    cache.cached_tensors("adv", {"k": 3}, compute, folder="adversarial")
    path = cache.cache_path("adv", {"k": 3}, "adversarial")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.warns(UserWarning, match="unreadable"):
        out = cache.cached_tensors("adv", {"k": 3}, compute, folder="adversarial")
    assert len(calls) == 2 and torch.equal(out["x_adv"], torch.arange(6.0))
    assert torch.equal(cache.cached_tensors("adv", {"k": 3}, compute, folder="adversarial")["x_adv"], out["x_adv"])
    assert len(calls) == 2
