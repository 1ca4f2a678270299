import pytest
import torch
from torch import nn

from robustnb import attacks
from robustnb.config import ConfigError


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()


def test_check_epsilon():
    assert attacks.check_epsilon(8 / 255) == pytest.approx(8 / 255)
    with pytest.raises(ConfigError, match="8/255"):
        attacks.check_epsilon(8)  # a classic slip: 8 instead of 8/255
    with pytest.raises(ConfigError, match="out of range"):
        attacks.check_epsilon(-0.1)
    with pytest.raises(ConfigError):
        attacks.check_epsilon("big")


@pytest.mark.parametrize("name", ["fgsm", "pgd", "mifgsm", "bim"])
def test_standard_attacks_stay_in_ball_and_box(name):
    m, x = model(), torch.rand(16, 3, 8, 8)
    y = m(x).argmax(1)
    eps = 4 / 255
    x_adv = attacks.perturb(attacks.make_attack(name, m, eps), x, y, batch_size=5)
    attacks.check_in_ball(x_adv, x, eps)
    assert (x_adv - x).abs().max() > 0
    assert torch.equal(attacks.perturb(attacks.make_attack(name, m, 0.0), x, y), x)


def test_unknown_attack():
    with pytest.raises(ConfigError, match="'cw2'"):
        attacks.make_attack("cw2", model(), 0.01)


def test_robustness_curve_frame():
    m, x = model(), torch.rand(32, 3, 8, 8)
    y = m(x).argmax(1)
    df, ex = attacks.robustness_curve(m, x, y, [0, 8 / 255], attacks=("fgsm",), keep_examples=2)
    assert list(df.columns) == ["attack", "epsilon", "eps_255", "accuracy"]
    assert df.loc[df.epsilon == 0, "accuracy"].item() == 1.0  # labels are the model's own predictions
    assert df["accuracy"].iloc[-1] < 1.0 and ex[("fgsm", 8 / 255)].shape == (2, 3, 8, 8)
