"""The compressed-models chapter's module (robustnb.chapters.compressed_domain_shift): config and summaries."""

import pandas as pd
import pytest

from robustnb.chapters import compressed_domain_shift as ch
from robustnb.config import PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_config_for_every_preset(preset):
    cfg = ch.StudyConfig.from_preset(preset)
    assert cfg.base_archs and len(cfg.eps_255) == 2 and len(cfg.sp_budgets) == 2


def _results():
    rows = []
    for model, method, base, size in (("r18", "baseline", "r18", 40.0), ("r18 int8", "int8", "r18", 10.0)):
        for dom, role, acc in (("src", "source", 0.8), ("tgt", "target", 0.6)):
            for attack, strength in (("clean", "none"), ("fgsm", "light"), ("salt_pepper", "light")):
                rows.append({"model": model, "method": method, "base": base, "domain": dom, "role": role,
                             "attack": attack, "strength": strength, "budget": 0.0,
                             "accuracy": acc - (0.1 if attack != "clean" else 0), "crafted_on": "-",
                             "params": 1e6, "size_mb": size, "compression": 40.0 / size, "detail": ""})
    return pd.DataFrame(rows)


def test_summaries_read_the_frame():
    df = _results()
    table = ch.results_table(df)
    assert set(table["model"]) == {"r18", "r18 int8"} and "clean" in table.columns
    s = ch.robustness_summary(df).set_index("model")
    assert s.loc["r18", "source_clean"] == pytest.approx(0.8) and s.loc["r18", "shift_retention"] == pytest.approx(0.75)


# ------------------------------------------------------------------------------ claims and protocol fixes
import numpy as np  # noqa: E402
import torch  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from torch import nn  # noqa: E402

from robustnb import stats  # noqa: E402
from robustnb.data import ImageDataset  # noqa: E402

CFG = ch.StudyConfig.from_preset("smoke")
SMALL, LARGE = CFG.base_archs[0], CFG.base_archs[1]
MATCHED = f"{SMALL} pruned {CFG.matched_ratio:.0%}"


def _hits(p, n, rng):
    return (rng.random(n) < p).astype(float)


def _frame(acc: dict, n=400, seed=0):
    """A synthetic evaluate_all frame: ``acc[model] = (method, base, source, target, adversarial, s&p)``
    accuracies; per-image hits drawn independently per model (so differences carry sampling noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, (method, base, src, tgt, adv, sp) in acc.items():
        for dom, role, clean in (("src", "source", src), ("t1", "target", tgt), ("t2", "target", tgt)):
            b = {"model": model, "method": method, "base": base, "domain": dom, "role": role, "params": 1e6,
                 "size_mb": 1.0, "compression": 1.0, "detail": ""}
            h = _hits(clean, n, rng)
            rows.append({**b, "attack": "clean", "strength": "none", "budget": 0.0, "protocol": "clean",
                         "accuracy": h.mean(), "crafted_on": "-", "hits": h})
            for atk in ("fgsm", "pgd"):
                for strength in ("light", "heavy"):
                    for protocol in ("transfer", "white-box"):
                        h = _hits(adv if protocol == "transfer" else adv / 2, n, rng)
                        rows.append({**b, "attack": atk, "strength": strength, "budget": 1 / 255,
                                     "protocol": protocol, "accuracy": h.mean(), "crafted_on": base, "hits": h})
            for strength, bud in (("light", 0.01), ("heavy", 0.05)):
                h = _hits(sp, n, rng)
                rows.append({**b, "attack": "salt_pepper", "strength": strength, "budget": bud, "protocol": "query",
                             "accuracy": h.mean(), "crafted_on": model, "hits": h})
    return pd.DataFrame(rows)


def _zoo_acc(int8=(0.5, 0.45, 0.3, 0.3), pruned=(0.5, 0.35, 0.2, 0.2)):
    return {SMALL: ("baseline", SMALL, 0.5, 0.45, 0.3, 0.3),
            LARGE: ("baseline", LARGE, 0.6, 0.55, 0.35, 0.35),
            MATCHED: ("pruned", SMALL, *pruned),
            f"{LARGE} pruned 60%": ("pruned", LARGE, 0.4, 0.25, 0.15, 0.15),
            f"{SMALL} distilled from {LARGE}": ("distilled", LARGE, 0.5, 0.45, 0.3, 0.3),
            f"{SMALL} int8": ("int8", SMALL, *int8)}


def test_claims_table_has_every_declared_claim_with_intervals():
    out = ch.claims(_frame(_zoo_acc()), CFG)
    assert tuple(out.columns) == stats.CLAIM_COLUMNS
    assert list(out.claim_id) == list(ch.PAPER_CLAIMS)
    assert out.claim_id.str.startswith("cd_").all()
    assert out.verdict.isin(stats.VERDICTS).all()
    assert (out.low <= out.value).all() and (out.value <= out.high).all()
    v = out.set_index("claim_id").verdict
    # int8 clearly keeps more than pruning; the larger base clearly loses more; distilled loses less
    assert v["cd_int8_vs_pruned_target"] == "reproduced"
    assert v["cd_int8_vs_pruned_adv"] == "reproduced" and v["cd_int8_vs_pruned_sp"] == "reproduced"
    assert v["cd_larger_loses_more_target"] == "reproduced"
    assert v["cd_distilled_vs_pruned_shift"] == "reproduced"


def test_a_small_difference_on_few_images_is_inconclusive():
    """Old findings called int8 "best" on 25.9% vs 25.2% over 100 images; the interval must say inconclusive."""
    acc = _zoo_acc(int8=(0.5, 0.259, 0.3, 0.3), pruned=(0.5, 0.252, 0.3, 0.3))
    out = ch.claims(_frame(acc, n=100), CFG).set_index("claim_id")
    r = out.loc["cd_int8_vs_pruned_target"]
    assert r.low < 0 < r.high and r.verdict == "inconclusive at this size"


def test_claims_are_paired_over_the_same_images():
    """Two models with identical per-image hits differ by exactly zero with a zero-width interval."""
    df = _frame(_zoo_acc())
    q, p = f"{SMALL} int8", MATCHED
    df.loc[df.model == q, "hits"] = df.loc[df.model == p, "hits"].values
    e = ch.claim_estimates(df, CFG)["cd_int8_vs_pruned_adv"]
    assert e.value == 0 and e.low == 0 and e.high == 0


def test_adversarial_claims_read_the_transfer_protocol_only():
    """White-box rows (half the accuracy here) must not enter the headline comparison."""
    df = _frame(_zoo_acc())
    a = ch.per_image(df, MATCHED, "adversarial")
    w = ch.per_image(df, MATCHED, "adversarial", protocol="white-box")
    assert a.mean() > w.mean() + 0.05
    s = ch.robustness_summary(df).set_index("model")
    assert s.loc[MATCHED, "adversarial"] == pytest.approx(a.mean())


class _Linear(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _tiny_domains(n=12):
    g = torch.Generator().manual_seed(0)
    def ds(name):
        return ImageDataset(name, torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8),
                            torch.arange(n) % 2, ["a", "b"], (0.5,) * 3, (0.25,) * 3)
    return SimpleNamespace(eval={"src": ds("src"), "tgt": ds("tgt")}, source="src")


def test_every_compressed_model_is_attacked_on_its_fp32_parent():
    """Old protocol: pruned and distilled models were attacked white-box, int8 by transfer. Now the headline
    (transfer) rows are crafted on the fp32 parent for every method, white-box rows are a second protocol."""
    zoo = ch.Zoo()
    for name, method, base in (("s", "baseline", "s"), ("L", "baseline", "L"), ("s pruned 50%", "pruned", "s"),
                               ("s distilled from L", "distilled", "L"), ("s int8", "int8", "s")):
        zoo.add(name, _Linear(len(zoo.models)), method=method, base=base, params=1, size_mb=1.0, compression=1.0,
                detail="")
    zoo.fp32_of["s int8"] = "s"
    cfg = ch.StudyConfig.from_preset("smoke")
    df = ch.evaluate_all(cfg, zoo, _tiny_domains())
    adv = df[df.attack.isin(["fgsm", "pgd"])]
    t = adv[adv.protocol == "transfer"].groupby("model").crafted_on.unique()
    assert {m: list(v) for m, v in t.items()} == {"s": ["s"], "L": ["L"], "s pruned 50%": ["s"],
                                                 "s distilled from L": ["L"], "s int8": ["s"]}
    w = adv[adv.protocol == "white-box"].groupby("model").crafted_on.unique()
    assert set(w.index) == {"s", "L", "s pruned 50%", "s distilled from L"}  # int8: no gradient, no white-box
    assert all(list(v) == [m] for m, v in w.items())
    # per-image correctness is kept for every scored row
    scored = df[df.strength != "median_min_p"]
    assert all(len(h) == 12 for h in scored[scored.attack == "clean"].hits)
    assert all(len(h) == min(12, cfg.n_attack) for h in scored[scored.attack != "clean"].hits)


@pytest.mark.parametrize("preset", PRESETS)
def test_salt_pepper_grid_contains_every_budget(preset):
    cfg = ch.StudyConfig.from_preset(preset)
    grid = ch.salt_pepper_attack(cfg, _Linear(0)).grid(cfg.sp_max_p)[0]
    for b in cfg.sp_budgets:
        assert torch.isclose(grid, torch.tensor(b, dtype=grid.dtype)).any(), (preset, b)
