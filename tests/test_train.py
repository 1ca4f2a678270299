
import pytest
import torch
from torch import nn

from robustnb import train
from robustnb.config import ConfigError
from robustnb.data import ImageDataset


def toy_data(n=256, seed=0):
    """Two classes told apart by brightness: any working loop learns it in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = (torch.rand(n, 1, 8, 8, generator=g) * 100 + y.view(-1, 1, 1, 1) * 120).to(torch.uint8)
    return ImageDataset("toy", x, y, ["dark", "bright"], (0.5,), (0.5,))


def toy_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 2))


CFG = train.TrainConfig(epochs=5, batch_size=32, lr=0.1, optimizer="sgd", scheduler="cosine", augment=False)


def test_fit_learns_and_reports_history():
    ds = toy_data()
    model = toy_model()
    hist = train.fit(model, ds, CFG, eval_data=ds)
    assert list(hist["epoch"]) == [1, 2, 3, 4, 5]
    assert hist["loss"].iloc[-1] < hist["loss"].iloc[0]
    assert train.accuracy(model, ds) > 0.9
    assert train.predict(model, ds).shape == (len(ds), 2)


@pytest.mark.parametrize("opt", train.OPTIMIZERS)
@pytest.mark.parametrize("sched", train.SCHEDULERS)
def test_every_optimizer_and_scheduler_runs(opt, sched):
    cfg = CFG.replace(optimizer=opt, scheduler=sched, epochs=2, lr=0.01)
    hist = train.fit(toy_model(), toy_data(64), cfg)
    assert len(hist) == 2 and hist["loss"].notna().all()


def test_bad_names_raise():
    with pytest.raises(ConfigError, match="'lbfgs'"):
        train.TrainConfig(optimizer="lbfgs")
    with pytest.raises(ConfigError, match="'linear'"):
        train.TrainConfig(scheduler="linear")


def test_extra_loss_terms_are_added_and_logged():
    ds = toy_data()
    weight_norm = lambda model, x, y, out: sum(p.pow(2).sum() for p in model.parameters())  # noqa: E731
    plain = train.fit(toy_model(), ds, CFG)
    m = toy_model()
    reg = train.fit(m, ds, CFG, extra_terms={"l2": (1.0, weight_norm)})
    assert "l2" in reg and reg["l2"].iloc[-1] < reg["l2"].iloc[0]
    assert (reg["loss"] > reg["ce"]).all() and "l2" not in plain


def test_dict_and_tuple_outputs():
    assert torch.equal(train.logits_of({"logits": torch.ones(2)}), torch.ones(2))
    assert torch.equal(train.logits_of((torch.zeros(2), "aux")), torch.zeros(2))


def test_training_is_deterministic():
    a, b = toy_model(), toy_model()
    train.fit(a, toy_data(), CFG.replace(augment=True, epochs=2))
    train.fit(b, toy_data(), CFG.replace(augment=True, epochs=2))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_augment_keeps_shape_and_range():
    x = torch.rand(5, 3, 32, 32)
    out = train.augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_batched_augmentation_equals_the_per_image_reference():
    import torch.nn.functional as F

    def reference(x, g, pad=4):
        n, _, h, w = x.shape
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
        out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
        flip = torch.rand(n, generator=g) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), out.flip(3), out)

    x = torch.rand(16, 3, 12, 10)
    assert torch.equal(train.augment_batch(x, torch.Generator().manual_seed(3)),
                       reference(x, torch.Generator().manual_seed(3)))


def test_bf16_and_channels_last_learn_like_fp32():
    """The speed options change the arithmetic, not what is learned: a small CNN reaches the same accuracy,
    its parameters stay float32 and contiguous after training, and the logits come out float32."""
    from robustnb.models import build_classifier

    ds = toy_data(n=512)
    x = ds.images.float().div(255).repeat(1, 3, 4, 4)  # 3 x 32 x 32
    data = (x, ds.labels)
    accs = {}
    for precision, cl in (("fp32", False), ("bf16", True)):
        torch.manual_seed(0)
        m = build_classifier("cnn", 2, 3, 32, width=8)
        cfg = CFG.replace(epochs=3, precision=precision, channels_last=cl, lr=0.05)
        hist = train.fit(m, data, cfg)
        assert hist["loss"].iloc[-1] < hist["loss"].iloc[0]
        assert all(p.dtype == torch.float32 and p.is_contiguous() for p in m.parameters())
        assert train.predict(m, x[:4]).dtype == torch.float32
        accs[precision] = train.accuracy(m, data)
    assert accs["bf16"] > 0.9 and abs(accs["bf16"] - accs["fp32"]) < 0.05, accs


def test_speed_options_are_validated_and_keep_old_cache_keys():
    assert "precision" not in CFG.as_dict() and "channels_last" not in CFG.as_dict()  # old keys still valid
    assert CFG.replace(precision="bf16").as_dict()["precision"] == "bf16"
    assert CFG.replace(precision="fp16").as_dict()["precision"] == "fp16"  # float16 + GradScaler (a T4)
    with pytest.raises(ConfigError, match="'fp8'.*'fp32', 'bf16', 'fp16'"):
        CFG.replace(precision="fp8")
    with pytest.raises(ConfigError, match="channels_last must be True or False"):
        CFG.replace(channels_last="yes")


def test_split_model_rate_stays_float32_under_bf16_autocast():
    from robustnb.split import build_split_model

    torch.manual_seed(0)
    m = build_split_model("resnet", "hyperprior").eval()
    x = torch.rand(2, 3, 32, 32)
    ref = m(x)["likelihoods"]["y"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    assert out["likelihoods"]["y"].dtype == torch.float32 and out["likelihoods"]["z"].dtype == torch.float32
    assert out["logits"].dtype == torch.bfloat16  # the convolutions around it do run in bfloat16
    assert torch.allclose(out["likelihoods"]["y"].log2().sum(), ref.log2().sum(), rtol=0.05)


def test_speed_options_per_preset():
    assert train.TrainConfig(**train.speed_options("cpu")).precision == "bf16"
    assert train.TrainConfig(**train.speed_options("cpu")).channels_last is True
    smoke = train.TrainConfig(**train.speed_options("smoke"))
    assert smoke.as_dict() == train.TrainConfig().as_dict()  # smoke keys (and nbval outputs) unchanged
    with pytest.raises(ConfigError, match="gpu"):
        train.speed_options("gpu")


def test_architectures_slower_in_bf16_train_in_fp32():
    """MobileNetV2's bf16 step was measured slower than fp32 on the CPU: it keeps channels-last but not bf16."""
    cpu = train.speed_options("cpu")
    assert train.speed_for("mobilenet_v2", cpu) == {"precision": "fp32", "channels_last": True}
    assert train.speed_for("vgg11", cpu) == cpu == {"precision": "bf16", "channels_last": True}
    assert train.speed_for("mobilenet_v2", (("precision", "bf16"),)) == {"precision": "fp32"}
    assert train.speed_for("mobilenet_v2", train.speed_options("smoke")) == {}
