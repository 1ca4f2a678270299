"""Transfer attacks (robustnb.attacks.transfer): epsilon ball, [0, 1], and that they work white-box."""

import copy

import pytest
import torch
from torch import nn

from robustnb.attacks import check_in_ball
from robustnb.attacks.transfer import CSE, CWA, SAM, LogitEnsemble, make_transfer_attack
from robustnb.registry import TRANSFER_ATTACKS
from robustnb.config import ConfigError
from robustnb.models import Normalize
from robustnb.train import TrainConfig, accuracy, fit

EPS = 8 / 255


def _data(n=256, seed=0):
    """4 classes told apart by a small shift of the mean grey level: 8/255 is enough to cross a boundary."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = (0.42 + 0.04 * y.view(-1, 1, 1, 1) + 0.01 * torch.randn(n, 3, 8, 8, generator=g)).clamp(0, 1)
    return x, y


def _model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(Normalize((0.48,) * 3, (0.06,) * 3), nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(),
                         nn.Linear(16, 4))


@pytest.fixture(scope="module")
def trained():
    x, y = _data()
    m = _model(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is much faster on shared cores
    try:
        fit(m, (x, y), TrainConfig(epochs=30, batch_size=64, optimizer="adam", lr=0.01, weight_decay=0.0,
                                   scheduler="none", augment=False))
    finally:
        torch.set_num_threads(threads)
    return m, _data(128, seed=1)


@pytest.mark.parametrize("name", TRANSFER_ATTACKS.names())
def test_stays_in_ball_and_box(name):
    x = torch.rand(6, 3, 8, 8)
    x[0] = 0.0  # pixels at the box edges must stay inside [0, 1]
    x[1] = 1.0
    y = torch.randint(0, 4, (6,))
    atk = make_transfer_attack(name, [_model(1), _model(2)], EPS, steps=4)
    x_adv = atk(x, y)
    check_in_ball(x_adv, x, EPS)
    assert x_adv.shape == x.shape and not torch.equal(x_adv, x)


@pytest.mark.parametrize("name", TRANSFER_ATTACKS.names())
def test_identical_surrogate_breaks_the_target(trained, name):
    target, (x, y) = trained
    clean = accuracy(target, (x, y))
    assert clean > 0.9
    atk = make_transfer_attack(name, [copy.deepcopy(target)], EPS, steps=10)
    robust = accuracy(target, (atk(x, y), y))
    assert robust < clean - 0.5, (name, clean, robust)


def test_steps_zero_is_identity_and_deterministic():
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 4, (4,))
    models = [_model(1), _model(2)]
    assert torch.equal(CWA(models, EPS, steps=0)(x, y), x)
    assert torch.equal(CWA(models, EPS, steps=3)(x, y), CWA(models, EPS, steps=3)(x, y))


def test_the_halves_differ():
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 4, (4,))
    models = [_model(1), _model(2), _model(3)]
    sam, cse, cwa = (cls(models, EPS, steps=3)(x, y) for cls in (SAM, CSE, CWA))
    assert not torch.equal(sam, cwa) and not torch.equal(sam, cse)
    # with a small inner step the flattening step before the inner pass changes the result
    cse, cwa = (cls(models, EPS, steps=3, inner_step=0.05)(x, y) for cls in (CSE, CWA))
    assert not torch.equal(cse, cwa)


def test_logit_ensemble_is_the_mean():
    models = [_model(1), _model(2)]
    x = torch.rand(3, 3, 8, 8)
    assert torch.allclose(LogitEnsemble(models)(x), (models[0](x) + models[1](x)) / 2)


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="Unknown transfer attack 'pgd'"):
        make_transfer_attack("pgd", [_model(1)])
    with pytest.raises(ConfigError, match="8/255"):
        make_transfer_attack("cwa", [_model(1)], eps=8)
    with pytest.raises(ConfigError, match="at least one model"):
        make_transfer_attack("cwa", [])


def test_steps_equal_the_reference_codes_at_its_own_budget():
    """The module docstring's table: at eps 16/255 on 224x224x3 inputs the book's outer, reverse and CWA inner
    steps are the authors' absolute numbers (16/255/5, 16/255/10 or /15, 250); at 8/255 they halve (the
    authors' code keeps them fixed); CSE takes CWA's inner step, not the authors' 50."""
    eps, models, big = 16 / 255, [_model(1)], torch.zeros(1, 3, 224, 224)
    sam, cwa, cse = (make_transfer_attack(n, models, eps) for n in ("sam", "cwa", "cse"))
    assert sam.alpha == cwa.alpha == cse.alpha == pytest.approx(16 / 255 / 5)
    assert sam.reverse_step == pytest.approx(16 / 255 / 10) and cwa.reverse_step == pytest.approx(16 / 255 / 15)
    assert cwa._beta(big) == pytest.approx(250.0) and cse._beta(big) == pytest.approx(250.0)
    assert make_transfer_attack("cwa", models, eps / 2).alpha == pytest.approx(16 / 255 / 10)
    assert cwa._beta(torch.zeros(1, 3, 32, 32)) == pytest.approx(250 * (3 * 32 * 32 / 150528) ** 0.5)
    doc = " ".join(__import__("robustnb.attacks.transfer", fromlist=["x"]).__doc__.split())
    assert "ksi" in doc and "50 (CSE)" in doc and "mean* logits" in doc


def test_reverse_step_follows_the_reference_code():
    """MI_SAM's reverse (flattening) step is eps/10 in the authors' code; MI_CommonWeakness uses eps/15."""
    models = [_model(1)]
    assert SAM(models, EPS).reverse_step == pytest.approx(EPS / 10)
    assert CWA(models, EPS).reverse_step == pytest.approx(EPS / 15)
    assert make_transfer_attack("sam", models, EPS).reverse_step == pytest.approx(EPS / 10)
    assert SAM(models, EPS, reverse_step=0.01).reverse_step == 0.01
