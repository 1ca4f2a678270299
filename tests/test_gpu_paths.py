"""The GPU paths of the training loop, tested on the CPU through the same device-agnostic code.

* the new loop (images resident on the device, augmented there from the CPU's random draws, statistics added up
  on the device) trains the same weights as the loop it replaced (kept here, verbatim, as the reference);
* the host path (images too large for the device: pinned batches) trains the same weights as the resident one;
* no host sync per step: ``item``/``float``/``tolist``... are counted during a whole run, and do not grow with the
  number of steps (on a GPU, a test with ``torch.cuda.set_sync_debug_mode("error")`` runs the steps themselves);
* the precision per (device type, bfloat16 support), with a fake CUDA capability; the float16 + GradScaler path
  runs for real on the CPU (float16 autocast exists there), including a step the scaler must skip;
* ``check_images`` reads no values back from a non-CPU tensor, and keeps its errors on the CPU;
* evaluation: the same logits as the old per-batch loop, whatever the batch size.
"""

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustnb import checks, config, train
from robustnb.config import ConfigError
from robustnb.data import ImageDataset


# ------------------------------------------------------------------------------- the loop it replaced
def _old_augment_batch(x, g, pad=4):
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=g) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)


def _old_batches(data, batch_size, shuffle, g=None):
    if isinstance(data, (tuple, list)):
        x, y = data
        to_float = (lambda t: t.float().div(255)) if x.dtype == torch.uint8 else (lambda t: t)
    else:
        x, y = data.images, data.labels
        to_float = lambda t: t.float().div(255)  # noqa: E731
    n = len(y)
    order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield to_float(x[idx]), y[idx]


def _old_fit(model, data, cfg, device="cpu", extra_terms=None):
    """``robustnb.train.fit`` before device-resident training (no progress notes, no thread adaptation): the reference."""
    device = torch.device(device)
    extra_terms = dict(extra_terms or {})
    model.to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    n = len(data[1]) if isinstance(data, (tuple, list)) else len(data)
    opts = train._Optimizers.for_model(model, cfg, (n + cfg.batch_size - 1) // cfg.batch_size)
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    rows = []
    for epoch in range(cfg.epochs):
        model.train()
        sums = {"loss": 0.0, "ce": 0.0, **{k: 0.0 for k in extra_terms}}
        correct = seen = 0
        for x, y in _old_batches(data, cfg.batch_size, True, g):
            if cfg.augment:
                x = _old_augment_batch(x, g)
            x, y = x.to(device).contiguous(memory_format=layout), y.to(device)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                out = model(x)
            logits = train.logits_of(out).float()
            ce = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            loss = ce
            for name, (weight, fn) in extra_terms.items():
                term = fn(model, x, y, out)
                sums[name] += float(term.detach()) * len(y)
                loss = loss + weight * term
            opts.opt.zero_grad(set_to_none=True)
            loss.backward()
            opts.opt.step()
            if opts.sched is not None:
                opts.sched.step()
            if opts.aux is not None:
                opts.aux.zero_grad(set_to_none=True)
                model.aux_loss().backward()
                opts.aux.step()
            sums["loss"] += float(loss.detach()) * len(y)
            sums["ce"] += float(ce.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        rows.append({"epoch": epoch + 1, **{k: v / max(seen, 1) for k, v in sums.items()},
                     "train_acc": correct / max(seen, 1)})
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return rows


# ------------------------------------------------------------------------------------------ fixtures
def images(n=100, size=12, channels=3, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = (torch.rand(n, channels, size, size, generator=g) * 160 + y.view(-1, 1, 1, 1) * 40).to(torch.uint8)
    return ImageDataset("toy", x, y, [str(c) for c in range(classes)], (0.5,) * channels, (0.5,) * channels)


class TinyNet(nn.Module):
    """Conv + BatchNorm + a linear head, and (``aux=True``) an entropy-model-like ``quantiles`` parameter with an
    ``aux_loss``, so the auxiliary optimizer runs too; the forward returns a dict like a split model's."""

    def __init__(self, classes=3, aux=False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Linear(6, classes)
        if aux:
            self.quantiles = nn.Parameter(torch.tensor([-1.0, 0.0, 1.0]))
            self.register_buffer("target", torch.tensor([-2.0, 0.0, 2.0]))

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x))).mean((2, 3))
        return {"logits": self.head(h), "h": h}

    def aux_loss(self):
        return (self.quantiles - self.target).pow(2).sum()


def activity(model, x, y, out):
    return out["h"].float().pow(2).mean()


def assert_same_weights(a, b, exact=True):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if exact:
            assert torch.equal(sa[k], sb[k]), k
        else:
            torch.testing.assert_close(sa[k], sb[k], msg=k)


CFG = train.TrainConfig(epochs=2, batch_size=32, lr=0.05, optimizer="sgd", scheduler="cosine", augment=True)
CASES = {
    "fp32, augment, extra term": (CFG, True, False),
    "bf16, channels-last, aux optimizer": (CFG.replace(precision="bf16", channels_last=True), True, True),
    "adam, onecycle, label smoothing, float pairs": (
        CFG.replace(optimizer="adam", scheduler="onecycle", lr=0.01, label_smoothing=0.1, seed=3), False, False),
    "no augmentation": (CFG.replace(augment=False, scheduler="none"), True, False),
}


# ------------------------------------------------------------------------------- same weights as before
@pytest.mark.parametrize("case", list(CASES))
def test_new_loop_trains_the_weights_the_old_loop_trained(case):
    cfg, uint8, aux = CASES[case]
    ds = images()
    data = ds if uint8 else (ds.images.float().div(255), ds.labels)
    old, new = TinyNet(aux=aux), TinyNet(aux=aux)
    terms = {"act": (0.1, activity)}
    ref = _old_fit(old, data, cfg, extra_terms=terms)
    hist = train.fit(new, data, cfg, extra_terms=terms)
    assert_same_weights(old, new)
    for row, want in zip(hist.to_dict("records"), ref):
        for k, v in want.items():
            assert row[k] == pytest.approx(v, rel=1e-12, abs=1e-12), (k, row[k], v)


def test_host_path_trains_the_weights_of_the_resident_path(monkeypatch):
    """Images too large for the device stay in host memory and travel batch by batch: same batches, same weights."""
    ds = images()
    a, b = TinyNet(aux=True), TinyNet(aux=True)
    train.fit(a, ds, CFG)
    seen = []
    real = train.DeviceImages.__init__

    def host_only(self, data, device, resident=None):
        real(self, data, device, resident=False)
        seen.append(self.resident)

    monkeypatch.setattr(train.DeviceImages, "__init__", host_only)
    train.fit(b, ds, CFG)
    assert seen == [False]
    assert_same_weights(a, b)


def test_gathered_augmentation_equals_pad_crop_flip():
    """The one-indexing crop and flip of uint8 images (reflection by index arithmetic, flip folded into the
    columns) equals padding the float images and cropping, for odd shapes and the largest offsets too."""
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(40, 3, 7, 9, generator=g) * 255).to(torch.uint8)
    draws = train.augment_draws(len(x), torch.Generator().manual_seed(1))
    draws[:2, :4] = torch.tensor([[0, 8, 0, 8], [0, 0, 8, 8]])  # the four extreme crops
    got = train.gather_batch(x, torch.arange(len(x)), draws)
    ref = _old_augment_batch(x.float().div(255), torch.Generator().manual_seed(1))
    want = F.pad(x.float().div(255), (4,) * 4, mode="reflect")
    for i in range(4):
        dx, dy, flip = draws[:, i].tolist()
        crop = want[i, :, dy:dy + 7, dx:dx + 9]
        assert torch.equal(got[i], crop.flip(2) if flip else crop)
    assert torch.equal(got[4:], ref[4:])
    assert got.dtype == torch.float32 and got.shape == x.float().shape


def test_augmenting_images_smaller_than_the_padding_is_refused():
    ds = images(n=8, size=4)
    with pytest.raises(ConfigError, match="augment=True.*larger than 4 x 4.*augment=False"):
        train.fit(TinyNet(), ds, CFG)
    train.fit(TinyNet(), ds, CFG.replace(augment=False, epochs=1))


# -------------------------------------------------------------------------------------- host syncs
SYNCS = ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__")


def count_syncs(monkeypatch):
    """Count the calls that read a tensor back to the host (each one waits for a GPU), except torch.optim's
    ``_get_value`` of a non-capturable optimizer's step counter (the Adam of an entropy model's quantiles): torch
    keeps that counter in host memory, so reading it waits for nothing on a GPU either."""
    counts = dict.fromkeys(SYNCS, 0)
    for name in SYNCS:
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, _name=name, **k):
            caller = sys._getframe(1).f_code
            if not (caller.co_name == "_get_value" and caller.co_filename.endswith("optimizer.py")):
                counts[_name] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


@pytest.mark.parametrize("precision", train.PRECISIONS)
def test_host_reads_do_not_grow_with_the_steps(monkeypatch, precision):
    """A run of 2 epochs reads the same number of values back whether an epoch has 2 steps or 8: nothing per
    step (the epoch's statistics once, the schedule's and optimizers' own bookkeeping is Python floats)."""
    cfg = CFG.replace(precision=precision, batch_size=16)
    terms = {"act": (0.1, activity)}
    totals = {}
    for n in (32, 128):
        ds = images(n=n)
        model = TinyNet(aux=True)
        with monkeypatch.context() as m:
            counts = count_syncs(m)
            train.fit(model, ds, cfg, extra_terms=terms)
        totals[n] = dict(counts)
    assert totals[32] == totals[128], totals
    assert sum(totals[128].values()) <= 2 * cfg.epochs, totals  # the epoch's tolist, at most one more


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run by .ci/gpu_check.sh)")
@pytest.mark.parametrize("precision", train.PRECISIONS)
def test_cuda_steps_never_wait_for_the_gpu(precision):
    """On a GPU, torch itself raises at any synchronising call inside the steps."""
    device = torch.device("cuda")
    ds = images(n=96)
    cfg = CFG.replace(precision=precision, channels_last=True)
    model = TinyNet(aux=True).to(device).to(memory_format=torch.channels_last)
    opts = train._Optimizers.for_model(model, cfg, 3, device)
    data = train.DeviceImages(ds, device)
    order_host = torch.randperm(len(ds))
    order = order_host.to(device)
    draws = train.augment_draws(len(ds), torch.Generator().manual_seed(0)).to(device)
    stats = torch.zeros(4, dtype=torch.float64, device=device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(0, len(ds), 32):
            x, y = data.batch(order[i:i + 32], order_host[i:i + 32], draws[:, i:i + 32])
            stats += train._train_step(model, x.contiguous(memory_format=torch.channels_last), y, cfg, opts,
                                       {"act": (0.1, activity)})
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert stats[-1].item() <= len(ds)


# ---------------------------------------------------------------------------------------- precision
@pytest.mark.parametrize("preset, device_type, bf16, want", [
    ("smoke", "cpu", True, "fp32"), ("smoke", "cuda", False, "fp32"), ("smoke", "cuda", True, "fp32"),
    ("cpu", "cpu", True, "bf16"), ("cpu", "cpu", False, "fp32"),
    ("cpu", "cuda", True, "bf16"), ("cpu", "cuda", False, "fp16"),
    ("full", "cpu", True, "fp32"), ("full", "cuda", True, "bf16"), ("full", "cuda", False, "fp16"),
    ("cpu", "mps", True, "fp32"), ("full", "mps", False, "fp32"),
])
def test_precision_per_device(preset, device_type, bf16, want):
    assert config.precision_for(preset, device_type, bf16) == want


@pytest.mark.parametrize("capability, gpu, want", [
    ((7, 5), "T4", "fp16"), ((7, 0), "V100", "fp16"), ((8, 0), "A100", "bf16"), ((8, 9), "L4", "bf16"),
    ((9, 0), "H100", "bf16"),
])
def test_speed_options_on_a_fake_cuda_gpu(monkeypatch, capability, gpu, want):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert config.cuda_bf16(capability) == (want == "bf16"), gpu
    assert config.training_precision("cpu", "cuda") == want
    fast = {"precision": want, "channels_last": True}
    assert train.speed_options("cpu", "cuda") == fast and train.speed_options("full", "cuda") == fast
    assert train.speed_options("smoke", "cuda") == {} and train.speed_options("full", "cpu") == {}
    assert train.speed_for("mobilenet_v2", fast, "cuda") == fast  # the CPU's exception is the CPU's
    run = config.Run("cpu", 0, torch.device("cuda"))
    assert f"training in {want}" in str(run)
    if want == "fp16":
        assert "gradient scaler" in str(run)


def test_speed_options_follow_the_device_of_the_run(monkeypatch):
    """Chapters call ``speed_options(preset)``: the device is the last ``setup``'s."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setitem(config._CURRENT, "device", torch.device("cuda"))
    assert train.speed_options("cpu") == {"precision": "fp16", "channels_last": True}
    monkeypatch.setitem(config._CURRENT, "device", torch.device("cpu"))
    monkeypatch.setattr(config.cpus, "native_bf16", lambda: False)
    assert train.speed_options("cpu") == {"channels_last": True}
    assert train.speed_for("mobilenet_v2", {"precision": "bf16"}) == {"precision": "fp32"}


def test_setup_records_its_device(monkeypatch):
    monkeypatch.setitem(config._CURRENT, "device", torch.device("meta"))
    config.setup("smoke", device="cpu", verbose=False)
    assert config.current_device() == torch.device("cpu")


# ------------------------------------------------------------------------------- float16 + GradScaler
def test_fp16_trains_through_a_grad_scaler_with_a_fused_optimizer():
    cfg = CFG.replace(precision="fp16", epochs=4)
    model = TinyNet()
    opts = train._Optimizers.for_model(model, cfg, 4)
    assert isinstance(opts.scaler, torch.amp.GradScaler) and opts.opt.defaults.get("fused") is True
    assert train._Optimizers.for_model(TinyNet(), CFG, 4).scaler is None
    assert train._Optimizers.for_model(TinyNet(), cfg.replace(optimizer="rmsprop"), 4).scaler is not None
    hist = train.fit(model, images(), cfg)
    assert hist["loss"].iloc[-1] < hist["loss"].iloc[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_the_scaler_skips_a_step_with_infinite_gradients():
    """A float16 step whose gradients overflow leaves the weights as they were and halves the scale; the next,
    finite step updates them."""
    cfg = CFG.replace(precision="fp16", scheduler="none")
    model = TinyNet()
    opts = train._Optimizers.for_model(model, cfg, 2)
    ds = images(n=16)
    x, y = ds.images.float().div(255), ds.labels
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    scale = opts.scaler.get_scale()
    blow_up = {"inf": (1.0, lambda m, x, y, out: m.head.weight.sum() * float("inf"))}
    stats = train._train_step(model, x, y, cfg, opts, blow_up)
    assert math.isinf(stats[0].item())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert opts.scaler.get_scale() == scale / 2
    train._train_step(model, x, y, cfg, opts, {})
    assert not torch.equal(model.head.weight, before["head.weight"])


def test_step_statistics_are_batch_sums_on_the_device():
    cfg = CFG.replace(augment=False)
    model = TinyNet()
    opts = train._Optimizers.for_model(model, cfg, 1)
    ds = images(n=20)
    x, y = ds.images.float().div(255), ds.labels
    with torch.no_grad():
        logits = model(x)["logits"]
    stats = train._train_step(model, x, y, cfg, opts, {"act": (0.5, activity)})
    assert stats.shape == (4,) and stats.dtype == torch.float64 and stats.device == x.device
    ce = F.cross_entropy(logits, y).item()
    assert stats[1].item() == pytest.approx(ce * 20, rel=1e-5)
    assert stats[3].item() == (logits.argmax(1) == y).sum().item()


# ------------------------------------------------------------------------------------- check_images
def test_check_images_reads_no_values_from_a_device_tensor():
    """Shape, channels and dtype are checked everywhere; values are not read back from a non-CPU tensor (a meta
    tensor has none: reading them would raise)."""
    x = torch.empty(2, 3, 8, 8, device="meta")
    assert checks.check_images(x) is x
    with pytest.raises(ConfigError, match="channels last"):
        checks.check_images(torch.empty(2, 8, 8, 3, device="meta"))
    with pytest.raises(ConfigError, match="float tensor"):
        checks.check_images(torch.empty(2, 3, 8, 8, dtype=torch.uint8, device="meta"))


def test_check_images_keeps_its_value_errors_on_the_cpu():
    with pytest.raises(ConfigError, match="divide by 255"):
        checks.check_images(torch.full((1, 3, 4, 4), 200.0))
    with pytest.raises(ConfigError, match="NaN"):
        checks.check_images(torch.full((1, 3, 4, 4), float("nan")))
    assert checks.check_images(torch.full((1, 3, 4, 4), 200.0), values=False) is not None  # the caller's choice


def test_check_device_values_is_a_flag():
    with pytest.raises(ConfigError, match="True or False"):
        checks.check_device_values("yes")
    checks.check_device_values(True)
    try:
        assert checks._STATE["device_values"] is True
    finally:
        checks.check_device_values(False)


# ---------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def _old_predict(model, data, batch_size=256):
    model.eval()
    return torch.cat([train.logits_of(model(x)).float() for x, _ in _old_batches(data, batch_size, False)])


def test_predict_and_accuracy_match_the_old_batches():
    ds = images(n=600)
    model = TinyNet()
    ref = _old_predict(model, ds)
    got = train.predict(model, ds)
    assert torch.equal(got, ref) and got.device.type == "cpu"
    torch.testing.assert_close(train.predict(model, ds, batch_size=1024), ref)  # a GPU's batch: same logits
    assert train.accuracy(model, ds) == float((ref.argmax(1) == ds.labels).float().mean())
    x = ds.images[:5].float().div(255)
    assert torch.equal(train.predict(model, x), ref[:5])
    assert math.isnan(train.accuracy(model, (x[:0], ds.labels[:0]))) and train.predict(model, x[:0]).numel() == 0
    assert train.EVAL_BATCH["cpu"] == 256 and train.EVAL_BATCH["other"] >= 1024


# ------------------------------------------------------------------------------------- the GPU check
@pytest.mark.chapters
def test_the_gpu_check_profiles_its_slowest_chapter(tmp_path):
    """.ci/gpu_check.sh at ``smoke`` on the CPU: after the chapters it profiles the slowest one (from a cache with
    only the decoded datasets) and writes the profile's tables and its count of host waits to $OUT; with no time
    left for it, there is no profile and no failure."""
    import json
    import os
    import subprocess

    from robustnb.book import ROOT

    def check(deadline, profile_s):
        out = tmp_path / f"out{deadline}"
        env = dict(os.environ, OUT=str(out), PRESET="smoke", DEVICE="cpu", WHEELS="none", PY=sys.executable,
                   STREAM_A="getting_started", STREAM_B="", PROFILE_S=str(profile_s))
        proc = subprocess.run(["bash", ".ci/gpu_check.sh", str(deadline)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return out, proc.stdout

    out, stdout = check(600, 40)
    rows = [json.loads(line) for line in (out / "times.jsonl").read_text().splitlines()]
    assert [(r["chapter"], r["rc"]) for r in rows] == [("getting_started", 0)]
    profile = (out / "profile.txt").read_text()
    assert profile.startswith("getting_started at smoke on cpu: ") and "profile of getting_started: rc 0" in stdout
    assert "host waits for the device (calls):" in profile and "aten::convolution" in profile
    out, stdout = check(60, 40)  # 60 - 40 - 30 s: no time for the chapter, none left for a profile
    assert not (out / "profile.txt").exists() and "profile of" not in stdout
