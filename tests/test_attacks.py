import pytest
import torch
from torch import nn

from robustnb import attacks, registry
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


def test_each_attack_of_a_curve_has_its_own_radii():
    m, x = model(), torch.rand(16, 3, 8, 8)
    y = m(x).argmax(1)
    df, _ = attacks.robustness_curve(m, x, y, {"fgsm": [0, 8 / 255], "pgd": [4 / 255]})
    assert list(zip(df.attack, df.eps_255)) == [("fgsm", 0.0), ("fgsm", 8.0), ("pgd", 4.0)]
    with pytest.raises(ConfigError, match="not for the attacks \\['bim'\\]"):
        attacks.robustness_curve(m, x, y, {"fgsm": [0]}, attacks=("fgsm", "bim"))
    with pytest.raises(ConfigError, match="L-inf"):  # each radius in its attack's norm
        attacks.robustness_curve(m, x, y, {"pgd": [0.5]})


def test_radii_are_labelled_and_balls_checked_in_their_norm():
    assert attacks.eps_label(8 / 255) == "8/255" and attacks.eps_label(0.0) == "0"
    assert attacks.eps_label(0.5, "L2") == "0.5"
    x = torch.full((2, 3, 4, 4), 0.5)
    step = x.clone()
    step[:, 0, 0, 0] += 0.3  # L-inf 0.3, L2 0.3
    spread = x + 0.05  # L-inf 0.05, L2 0.05 * sqrt(48) = 0.35
    attacks.check_in_ball(step, x, 0.3, norm="L2")
    attacks.check_in_ball(spread, x, 0.05)
    with pytest.raises(AssertionError, match="L2 ball"):
        attacks.check_in_ball(spread, x, 0.3, norm="L2")
    with pytest.raises(ValueError, match="L1"):
        attacks.check_in_ball(step, x, 0.3, norm="L1")


@pytest.mark.parametrize("name", registry.ATTACKS.names(group="standard", norm="L2"))
def test_an_l2_attack_runs_in_a_curve_beside_l_inf_ones(name):
    """Every registered L2 attack: its radii are L2 radii (above the L-inf cap), its rows carry no 1/255 value,
    and its examples stay in the L2 ball."""
    m, x = model(), torch.rand(16, 3, 8, 8)
    y = m(x).argmax(1)
    df, ex = attacks.robustness_curve(m, x, y, {"fgsm": [0, 8 / 255], name: [0, 1.0]}, keep_examples=16)
    assert df.loc[df.attack == name, "eps_255"].isna().all() and df.loc[df.attack == "fgsm", "eps_255"].notna().all()
    attacks.check_in_ball(ex[(name, 1.0)], x, 1.0, norm="L2")
    assert df.loc[(df.attack == name) & (df.epsilon == 1.0), "accuracy"].item() < 1.0


def test_an_attacks_budget_is_its_registry_entrys():
    """Norm and largest radius come from the entry (``norm=`` at registration), not from one L-inf rule: every
    standard attack is registered under its own row, and an L2 class checks epsilon as an L2 radius."""
    import torchattacks

    from robustnb import registry
    from robustnb.attacks.base import NORMS, budget, checked
    from robustnb.attacks.standard import STANDARD_ATTACKS

    assert attacks.STANDARD == registry.ATTACKS.names(group="standard") == tuple(STANDARD_ATTACKS)
    for name in registry.ATTACKS.names(group="standard") + ("entropy", "adaptive_entropy"):
        assert registry.ATTACKS.meta(name)["norm"] in NORMS
    assert budget("pgd") == ("Linf", attacks.EPS_MAX)
    L2PGD = checked(torchattacks.PGDL2, norm="L2")
    m, x = model(), torch.rand(6, 3, 8, 8)
    atk = L2PGD(m, eps=0.5, alpha=0.1, steps=3)
    x_adv = atk(x, m(x).argmax(1))
    assert float((x_adv - x).flatten(1).norm(dim=1).max()) <= 0.5 + 1e-5
    with pytest.raises(ConfigError, match="L2 radius.*0 to 8"):
        L2PGD(m, eps=9.0)
    with pytest.raises(ConfigError, match="L-inf radius"):
        checked(torchattacks.PGD)(m, eps=1.0)
    with pytest.raises(ConfigError, match="'Linf', 'L2', got 'L1'"):
        attacks.check_epsilon(0.1, norm="L1")
