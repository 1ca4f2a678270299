"""Property-based tests (hypothesis) of every attack's invariants over random shapes, budgets and steps: the
result stays in the epsilon ball and in [0, 1], epsilon 0 changes nothing, and the same call gives the same
images."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustnb.attacks import EntropyAttack, check_in_ball, make_attack, make_transfer_attack
from robustnb.split import build_split_model

EPS = st.integers(0, 16).map(lambda k: k / 255)
STEPS = st.integers(0, 3)
BATCH = st.integers(1, 3)
SEED = st.integers(0, 2**16)


class Tiny(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def split_model():
    torch.manual_seed(0)
    m = build_split_model("vgg", "factorized").eval()
    m.update(force=True)
    return m


def _images(n, size, seed):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _check(attack_fn, x, eps):
    a, b = attack_fn(x), attack_fn(x)
    check_in_ball(a, x, eps)
    assert torch.equal(a, b), "the same call gave other images"
    if eps == 0:
        assert torch.equal(a, x)


@settings(max_examples=12, deadline=None)
@given(n=BATCH, eps=EPS, steps=STEPS, seed=SEED, draws=st.integers(1, 2), keep=st.booleans())
def test_entropy_attack_invariants(split_model, n, eps, steps, seed, draws, keep):
    x = _images(n, 32, seed)
    _check(lambda t: EntropyAttack(split_model, eps=eps, steps=steps, draws=draws, keep_label=keep)(t), x, eps)


@settings(max_examples=20, deadline=None)
@given(n=BATCH, size=st.sampled_from([4, 8, 13]), eps=EPS, steps=st.integers(1, 3), seed=SEED,
       name=st.sampled_from(["fgsm", "pgd", "bim", "mifgsm"]))
def test_standard_attack_invariants(n, size, eps, steps, seed, name):
    x, y = _images(n, size, seed), torch.arange(n) % 10
    model = Tiny(seed).eval()
    kw = {} if name == "fgsm" else {"steps": steps}
    if name == "pgd":
        kw["random_start"] = False  # torchattacks' random start draws from the global RNG
    _check(lambda t: make_attack(name, model, eps, **kw)(t, y), x, eps)


@settings(max_examples=20, deadline=None)
@given(n=BATCH, size=st.sampled_from([4, 8]), eps=EPS, steps=STEPS, seed=SEED,
       name=st.sampled_from(["mifgsm", "sam", "cse", "cwa"]))
def test_transfer_attack_invariants(n, size, eps, steps, seed, name):
    x, y = _images(n, size, seed), torch.arange(n) % 10
    surrogates = [Tiny(seed).eval(), Tiny(seed + 1).eval()]
    _check(lambda t: make_transfer_attack(name, surrogates, eps, steps=steps)(t, y), x, eps)
