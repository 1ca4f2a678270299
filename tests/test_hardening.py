"""Bad input fails at once with the package's error (naming the value and what is allowed); empty batches come
back empty; the cache is a function of its key. Each test here failed before the hardening."""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from robustnb import cache, compression, config, corruptions, defenses, train
from robustnb import data as rdata
from robustnb.attacks import (CWA, STANDARD, EntropyAttack, SaltAndPepper, make_attack, make_transfer_attack,
                              perturb, robustness_curve)
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


# ------------------------------------------------------------------------------- second pass

SPLIT_BAD = {**BAD_IMAGES, "HWC": lambda: torch.rand(2, 32, 32, 3)}


@pytest.fixture(scope="module")
def factorized_model():
    torch.manual_seed(0)
    m = build_split_model("vgg", "factorized").eval()
    m.update(force=True)
    return m


@pytest.mark.parametrize("name", STANDARD)
@pytest.mark.parametrize("bad", list(BAD_IMAGES))
def test_the_attack_objects_make_attack_returns_check_their_inputs(tiny, name, bad):
    """Called directly, not through ``perturb``: a torchattacks object used to run on anything."""
    x = BAD_IMAGES[bad]()
    atk = make_attack(name, tiny, 4 / 255, **({} if name in ("fgsm", "autoattack") else {"steps": 1}))
    with pytest.raises(ConfigError, match="images"):
        atk(x, torch.zeros(x.shape[0], dtype=torch.long))
    surrogate_atk = make_transfer_attack("mifgsm", [tiny], 4 / 255, steps=1)
    with pytest.raises(ConfigError, match="images"):
        surrogate_atk(x, torch.zeros(x.shape[0], dtype=torch.long))


@pytest.mark.parametrize("em", ["factorized", "hyperprior"])
@pytest.mark.parametrize("bad", list(SPLIT_BAD))
def test_compress_and_decode_agreement_check_their_images(split_model, factorized_model, em, bad):
    """A 2-D image used to be broadcast into one 3-channel image and 'compress' to one bitstream."""
    model = split_model if em == "hyperprior" else factorized_model
    x = SPLIT_BAD[bad]()
    with pytest.raises(ConfigError, match="images"):
        model.compress(x)
    with pytest.raises(ConfigError, match="images"):
        rate.decode_agreement(model, x)
    with pytest.raises(ConfigError, match="images"):
        model(x)


@pytest.mark.parametrize("bad", list(SPLIT_BAD))
def test_defense_helpers_check_their_images(split_model, bad):
    x = SPLIT_BAD[bad]()
    bit_map_fn = defenses.model_bit_map(split_model)
    for fn in (lambda t: defenses.likelihood_mask(bit_map_fn, t), lambda t: defenses.grad_cam(split_model, t),
               lambda t: defenses.apply(defenses.make_defense("jpeg"), t)):
        with pytest.raises(ConfigError, match="images"):
            fn(x)


def test_labels_of_another_length_are_named_with_both_lengths(tiny, split_model):
    x, y3 = torch.rand(4, 3, 8, 8), torch.zeros(3, dtype=torch.long)
    calls = {
        "perturb": lambda: perturb(make_attack("pgd", tiny, 4 / 255, steps=1), x, y3),
        "robustness_curve": lambda: robustness_curve(tiny, x, y3, [4 / 255], attacks="fgsm"),
        "pgd object": lambda: make_attack("pgd", tiny, 4 / 255, steps=1)(x, y3),
        "cwa": lambda: CWA([tiny], eps=4 / 255, steps=1)(x, y3),
        "salt & pepper": lambda: SaltAndPepper(tiny, steps=2, repeats=1)(x, y3),
        "entropy attack": lambda: EntropyAttack(split_model, eps=4 / 255, steps=1, draws=1)(
            torch.rand(4, 3, 32, 32), y3),
        "grad-cam target": lambda: defenses.grad_cam(split_model, torch.rand(4, 3, 32, 32), y3),
    }
    for name, call in calls.items():
        with pytest.raises(ConfigError, match=r"3 (labels|target) for 4 images") as err:
            call()
        assert "same length" in str(err.value), name
    with pytest.raises(ConfigError, match="needs labels"):
        make_attack("pgd", tiny, 4 / 255, steps=1)(x)


@pytest.mark.parametrize("device", ["cpu:x", "cpu:-1", "auto:0", "cuda:", "cpu:0:1"])
def test_malformed_device_strings_raise_the_package_error(device):
    with pytest.raises(ConfigError) as err:
        config.get_device(device)
    assert repr(device) in str(err.value) and "'cpu'" in str(err.value) and "cuda:N" in str(err.value)
    assert config.get_device("cpu:0") == torch.device("cpu:0")


def test_severities_are_one_number_or_a_sequence():
    x = torch.rand(2, 3, 8, 8)
    for severities, expected in ((3, [3]), (np.int64(2), [2]), ((1, 5), [1, 5]), ([4], [4])):
        assert [s for _, s, _ in corruptions.corruption_grid(x, "jpeg", severities)] == expected
    with pytest.raises(ConfigError, match=r"1\.\.5"):
        corruptions.corruption_grid(x, "jpeg", 6)


def test_nan_errors_of_salt_and_pepper_and_corrupt_say_the_allowed_range(tiny):
    x, y = torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long)
    xn = x.clone()
    xn[0, 0, 0, 0] = float("nan")
    nan = float("nan")
    for call in (lambda: SaltAndPepper(tiny)(xn, y), lambda: corruptions.corrupt(xn, "jpeg", 3)):
        with pytest.raises(ConfigError, match=r"finite with values in \[0, 1\], got 1 NaN"):
            call()
    for call in (lambda: corruptions.corrupt(x, "gaussian_noise", 3, seed=nan),
                 lambda: SaltAndPepper(tiny, seed=nan),
                 lambda: SaltAndPepper(tiny, steps=nan),
                 lambda: SaltAndPepper(tiny, repeats=nan)):
        with pytest.raises(ConfigError, match=r"in \[\d, inf\), got nan"):
            call()
    for call in (lambda: SaltAndPepper(tiny, max_p=nan), lambda: SaltAndPepper(tiny, budgets=[nan])):
        with pytest.raises(ConfigError, match=r"in \(0, 1\], got nan"):
            call()
    with pytest.raises(ConfigError, match=r"1\.\.5.*got nan"):
        corruptions.corrupt(x, "jpeg", nan)


@pytest.mark.parametrize("folder", ["office31", "my_office"])
def test_office31_fetch_hint_names_the_root_the_user_gave(tmp_env, tmp_path, folder):
    root = tmp_path / "elsewhere" / folder
    with pytest.raises(rdata.DatasetNotFoundError) as err:
        rdata.load_office31("amazon", root=root)
    message = str(err.value)
    assert f"get_data.py office31 --root {root.parent}" in message
    assert f"you gave root={str(root)!r}" in message and "point ROBUSTNB_DATA" not in message
    assert str(tmp_env[0]) not in message  # not the data folder the user did not ask for
    assert (f"load with root={str(root.parent / 'office31')!r}" in message) == (folder != "office31")
    with pytest.raises(rdata.DatasetNotFoundError, match="point ROBUSTNB_DATA"):  # no root given: as before
        rdata.load_office31("amazon")


NUMBERS_CALLS = []


@cache.experiment
def _numbers_experiment(n: int):
    NUMBERS_CALLS.append(n)
    return {"accuracy": 0.8125, "n": n, "label": "pgd", "curve": [0.5, 0.25]}


@pytest.mark.parametrize("edit", [("0.8125", "0.8126"), ("0.25", "0.75"), ('"pgd"', '"fgsm"')])
def test_a_changed_digit_in_a_manifest_is_detected_and_recomputed(tmp_env, edit):
    NUMBERS_CALLS.clear()
    first = _numbers_experiment(7)
    manifest = next((tmp_env[1] / "results").iterdir()) / "manifest.json"
    text = manifest.read_text()
    assert text.count(edit[0]) == 1
    manifest.write_text(text.replace(*edit))
    with pytest.warns(UserWarning, match="checksum"):
        again = _numbers_experiment(7)
    assert again == first and NUMBERS_CALLS == [7, 7]
    assert _numbers_experiment(7) == first and NUMBERS_CALLS == [7, 7]  # the replaced entry is read back


def test_a_changed_digit_in_a_cached_json_is_detected_and_recomputed(tmp_env):
    calls = []

    def compute():
        calls.append(1)
        return {"lambda_tv": 0.0125, "accuracy": [0.5, 0.625]}

    spec = {"k": "json"}
    first = cache.cached_json("tuning", spec, compute)
    path = cache.cache_path("tuning", spec, "results", suffix=".json")
    path.write_text(path.read_text().replace("0.0125", "0.0126"))
    with pytest.warns(UserWarning, match="checksum"):
        assert cache.cached_json("tuning", spec, compute) == first
    assert len(calls) == 2 and cache.cached_json("tuning", spec, compute) == first and len(calls) == 2


def test_a_dataset_of_images_and_labels_of_other_lengths_names_both():
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="got 3 labels for 4 images"):
        rdata.ImageDataset("toy", images, torch.zeros(3, dtype=torch.long), ["a"], (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ConfigError, match="uint8"):
        rdata.ImageDataset("toy", images.float(), torch.zeros(4, dtype=torch.long), ["a"], (0.5,) * 3, (0.5,) * 3)
