"""The entropy attack and its frequency analysis judged against a null and at more than one
setting. A random sign-noise perturbation at the attack's epsilon sits beside the attack's rate overhead
(``entropy_attacks``) and its high-frequency shares (``frequency_analysis``); the shares are read at three cutoffs;
the object/border comparison leaves out the latent's outer ring that sees the encoder's zero padding; the page says
how the attack differs from EntropyR's ``pgd.py`` and runs it once at the authors' 20 steps x 16 draws."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robustnb import signal as S
from robustnb import stats
from robustnb.attacks.noise import sign_noise
from robustnb.chapters import entropy_attacks as ea
from robustnb.chapters import frequency_analysis as fa
from conftest import toy_split_models_and_data

ROOT = Path(__file__).resolve().parents[1]


_toy_models_and_data = toy_split_models_and_data


def _markdown(name: str) -> str:
    nb = json.loads((ROOT / "book" / f"{name}.ipynb").read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def _code(name: str) -> str:
    nb = json.loads((ROOT / "book" / f"{name}.ipynb").read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


# ------------------------------------------------------------------------------- entropy attacks: the null
def test_the_noise_null_is_in_the_attack_frame_at_every_epsilon():
    models, data = _toy_models_and_data()
    cfg = dataclasses.replace(ea.EntropyAttacksConfig.from_preset("smoke"), n_attack=6, eps_255=(0, 4, 8),
                              pgd_eps_255=(8,), stealthy_eps_255=(8,))
    images = ea.attack_images(cfg, models, data, cache=False)
    noise = images[images["attack"] == ea.NOISE]
    assert sorted(noise["eps_255"].unique()) == [4.0, 8.0] and len(noise) == 2 * 2 * 6  # models x epsilons x images
    assert np.allclose(noise["linf"], noise["eps_255"] / 255, atol=1e-6)  # a perturbation of the attack's size
    grid = ea.attack_grid(cfg, models, data, images)
    assert set(ea.overhead_table(grid, 8)["attack"]) >= {"entropy", ea.NOISE}
    row = ea.claims(images).set_index("claim_id").loc["ea_entropy_vs_noise"]
    assert row["form"] == "greater" and row["n"] == 6  # measured, on the same images (too few to decide)
    assert {"ea_noise8_hyperprior", "ea_noise8_factorized", "ea_noise_top", "ea_entropy8_vs_noise"} <= set(
        ea.numbers(cfg, images))


def test_the_null_reuses_the_one_sign_noise():
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(ea.attacked(None, "sign_noise", 8, x), sign_noise(x, 8 / 255))
    inputs = fa.make_inputs(dataclasses.replace(fa.FrequencyConfig.from_preset("smoke"), corruptions=()),
                            _toy_models_and_data()[0][("vgg", "hyperprior", 0.01)], x.repeat(1, 1, 4, 4))
    assert torch.equal(inputs["sign noise 8/255"], sign_noise(inputs["clean"], 8 / 255))


def _frame(factors: dict, n=150, seed=0):
    """Per-image rows of the hyperprior at the smallest lambda: bytes x factor per (attack, epsilon)."""
    rng = np.random.default_rng(seed)
    clean = rng.uniform(200, 300, n)
    ok = (rng.random(n) < 0.7).astype(float)
    return pd.concat([pd.DataFrame({"arch": "vgg", "entropy_model": "hyperprior", "lambda": 0.01, "attack": a,
                                    "eps_255": float(e), "image": np.arange(n), "bytes_clean": clean,
                                    "bytes_adv": clean * f * rng.normal(1, 0.03, n), "est_bytes_adv": clean,
                                    "correct_clean": ok, "correct_adv": ok, "linf": e / 255})
                      for (a, e), f in factors.items()], ignore_index=True)


def test_the_attack_is_judged_against_noise_at_the_headline_budget():
    """An attack whose overhead random noise of the same size matches is not reproduced, however large it is."""
    same = _frame({("entropy", 8): 1.5, ("entropy", 16): 1.9, (ea.NOISE, 8): 1.5, (ea.NOISE, 16): 1.9})
    t = ea.claims(same).set_index("claim_id")
    assert t.loc["ea_entropy_inflates_rate", "verdict"] == "reproduced"  # the headline, vs clean
    assert t.loc["ea_entropy_vs_noise", "verdict"] != "reproduced"
    assert t.loc["ea_entropy_vs_noise", "value"] == pytest.approx(0.0, abs=0.03)
    better = _frame({("entropy", 8): 1.5, ("entropy", 16): 1.9, (ea.NOISE, 8): 1.02, (ea.NOISE, 16): 1.05})
    e = ea.claim_estimates(better)["ea_entropy_vs_noise"]
    assert e.value == pytest.approx(0.85, abs=0.03)
    assert ea.PAPER_CLAIMS["ea_entropy_vs_noise"].verdict(e) == "reproduced"
    assert ea.claims(better[better["attack"] != ea.NOISE]).set_index("claim_id").loc[
        "ea_entropy_vs_noise", "verdict"] == stats.INCONCLUSIVE  # no null measured: nothing to compare


# ---------------------------------------------------------------- entropy attacks: the authors' attack and budget
def test_the_authors_budget_row_pairs_with_the_grid():
    models, data = _toy_models_and_data()
    cfg = dataclasses.replace(ea.EntropyAttacksConfig.from_preset("smoke"), n_attack=6, eps_255=(0, 8),
                              pgd_eps_255=(8,), stealthy_eps_255=(8,), n_authors=4, authors_steps=1,
                              authors_draws=2)
    cpu = ea.EntropyAttacksConfig.from_preset("cpu")
    assert (cpu.authors_steps, cpu.authors_draws) == (20, 16)  # EntropyR's pgd.py defaults
    assert cpu.n_authors < cpu.n_attack  # a few images: the chapter's added time stays small
    smoke = ea.EntropyAttacksConfig.from_preset("smoke")
    assert (smoke.authors_steps, smoke.authors_draws) == (smoke.steps, smoke.draws)  # the smoke budget at smoke
    images = ea.attack_images(cfg, models, data, cache=False)
    authors = images[images["attack"] == ea.AUTHORS]
    assert list(authors["image"]) == [0, 1, 2, 3] and set(authors["eps_255"]) == {8.0}
    assert {tuple(k) for k in authors[["arch", "entropy_model", "lambda"]].to_numpy()} == {ea.claims_model(cfg)}
    same = images[(images["attack"] == "entropy") & (images["entropy_model"] == "hyperprior")
                  & (images["eps_255"] == 8)].sort_values("image")
    assert np.array_equal(authors["bytes_clean"], same["bytes_clean"].iloc[:4])  # the same images, paired
    t = ea.budget_table(images, cfg)
    assert list(t["attack"]) == ["entropy", ea.AUTHORS, ea.NOISE, f"{ea.AUTHORS} - entropy"]
    assert t["images"].tolist() == [4, 4, 4, 4] and t["budget"].iloc[1] == "1 step x 2 draws"
    assert ea.AUTHORS in set(ea.overhead_table(ea.attack_grid(cfg, models, data, images), 8)["attack"])
    nums = ea.numbers(cfg, images)
    assert nums["ea_authors_budget"] == "1 step x 2 draws" and nums["ea_authors_n"] == "4"
    assert ea.budget_table(images[images["attack"] != ea.AUTHORS], cfg).empty


def test_the_page_states_how_the_attack_differs_from_entropyr():
    """Step size, mean over draws vs stepped copies, z bits in the objective, 10 vs 20 steps: in the module's
    table, printed on the page, and said in the page's words."""
    aspects = " ".join(" ".join(row) for row in ea.DIFFERENCES_FROM_ENTROPYR)
    for said in ("lr = 0.1", "2.5 epsilon / steps", "stepped copies", "gradient of the mean", "z's bits left out",
                 "n_iter = 20", "n_sample = 16"):
        assert said in aspects, said
    assert list(ea.differences_table().columns) == ["aspect", "EntropyR (pgd.py)", "this book"]
    text = _markdown("entropy_attacks")
    assert "pgd.py" in text and "stepped copies" in text and "ea_authors_overhead" in text
    assert "ea_entropy_vs_noise_verdict" in text and "ea_noise8_hyperprior" in text
    assert "differences_table()" in _code("entropy_attacks") and "budget_table(" in _code("entropy_attacks")


# ------------------------------------------------------------------ frequency analysis: shares at three cutoffs
def energy_rate(t):
    """A known rate: the (mean-removed) signal energy per image."""
    return (t - t.mean(dim=(-2, -1), keepdim=True)).pow(2).flatten(1).sum(1)


def _study(n=24):
    g = torch.Generator().manual_seed(4)
    x = S.filtered(torch.rand(n, 3, 16, 16, generator=g), 0.15, "low")
    smooth = S.filtered(torch.rand(n, 3, 16, 16, generator=g) - 0.5, 0.1, "low")  # a low-frequency "attack"
    inputs = {"clean": x, "attacked 8/255": (x + 0.5 * smooth).clamp(0, 1), "sign noise 8/255": sign_noise(x, 8 / 255)}
    tag = {"entropy_model": "e", "lam": 1.0, "model": "e, lambda=1"}
    return fa.FrequencyStudy(
        per_image=fa.filter_rates(energy_rate, inputs, fa.CUTOFF).assign(**tag),
        per_cutoff=pd.concat([fa.filter_rates(energy_rate, inputs, c).assign(cutoff=c, **tag)
                              for c in fa.SENSITIVITY_CUTOFFS], ignore_index=True),
        shares=fa.perturbation_shares(inputs).assign(**tag),
        alloc=fa.bit_allocation(lambda t: S.local_energy(t, (4, 4)), inputs).assign(**tag),
        bands=fa.band_shares(energy_rate, inputs).assign(**tag), spectra=fa.spectra(inputs).assign(**tag))


def test_high_frequency_shares_at_three_cutoffs_beside_the_null():
    assert fa.FrequencyConfig.from_preset("cpu").sensitivity_cutoffs == fa.SENSITIVITY_CUTOFFS
    assert len(fa.SENSITIVITY_CUTOFFS) == 3 and fa.CUTOFF in fa.SENSITIVITY_CUTOFFS
    res = _study()
    sens = fa.hf_sensitivity(res)
    assert sorted(sens["cutoff"].unique()) == sorted(fa.SENSITIVITY_CUTOFFS)
    assert set(sens["condition"]) == {"attacked 8/255", "sign noise 8/255", "attack - null"}
    assert set(sens["quantity"]) == {"extra bits removed", "perturbation power above"}
    assert len(sens) == 3 * 2 * 3
    power = sens[sens["quantity"] == "perturbation power above"].set_index(["condition", "cutoff"])
    for c in fa.SENSITIVITY_CUTOFFS:  # the white null has the plane's share; the smooth attack much less
        plane = S.plane_share_above(16, 16, c)
        assert power.loc[("sign noise 8/255", c), "value"] == pytest.approx(plane, abs=0.03)
        assert power.loc[("sign noise 8/255", c), "plane_share"] == pytest.approx(plane)
        assert power.loc[("attack - null", c), "high"] < 0
    nums = fa.numbers(res)
    assert {"fa_null", "fa_null_overhead", "fa_plane_15", "fa_plane_25", "fa_plane_35", "fa_power_25_diff",
            "fa_removed_15_attack", "fa_removed_35_null"} <= set(nums)


def test_a_broadband_attack_does_not_pass_as_high_frequency_against_the_null():
    """'Mostly high-frequency' (the removed share above one half) is what any broadband perturbation shows: judged
    against sign noise of the same size, an attack that is just noise is not more high-frequency than the null."""
    g = torch.Generator().manual_seed(7)
    x = S.filtered(torch.rand(40, 3, 16, 16, generator=g), 0.15, "low")
    inputs = {"clean": x, "attacked 8/255": sign_noise(x, 8 / 255, seed=11), "sign noise 8/255": sign_noise(x, 8 / 255)}
    res = fa.FrequencyStudy(per_image=fa.filter_rates(energy_rate, inputs, fa.CUTOFF).assign(model="m"),
                            shares=fa.perturbation_shares(inputs).assign(model="m"),
                            alloc=fa.bit_allocation(lambda t: S.local_energy(t, (4, 4)), inputs).assign(model="m"))
    t = fa.claims(res).set_index("claim_id")
    assert t.loc["fa_attack_bits_high_frequency", "verdict"] == "reproduced"  # "mostly": it is broadband
    assert t.loc["fa_attack_bits_hf_vs_noise", "verdict"] != "reproduced"
    assert t.loc["fa_attack_power_hf_vs_noise", "verdict"] != "reproduced"
    assert abs(t.loc["fa_attack_power_hf_vs_noise", "value"]) < 0.02


def test_the_null_claims_are_inconclusive_without_the_null():
    res = _study()
    drop = {k: getattr(res, k)[getattr(res, k)["condition"] != "sign noise 8/255"] for k in ("per_image", "alloc")}
    t = fa.claims(dataclasses.replace(res, shares=res.shares[res.shares["condition"] != "sign noise 8/255"], **drop))
    assert (t.set_index("claim_id").loc[list(fa.NULL_CLAIMS), "verdict"] == stats.INCONCLUSIVE).all()


# --------------------------------------------------------- frequency analysis: object vs border, without the ring
def test_a_bit_map_high_only_on_the_padded_ring_gives_no_border_excess():
    """Old protocol: the border was everything outside the central box, including the outer ring of latent
    locations whose receptive fields see the zero padding; a bit map high only there read as the background
    costing more than the object. Now the ring is left out: equal bits on object and border, ratio one."""
    bit_map = torch.ones(3, 8, 8)
    bit_map[:, S.ring_mask(8, 8)] = 5.0
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    df = fa.bit_allocation(lambda t: bit_map[:len(t)], {"clean": x})
    assert np.allclose(df["object_ratio"], 1.0)  # no border excess
    assert np.allclose(df["ring_bits_per_loc"], 5.0)
    assert np.allclose(df["object_ratio_with_ring"], 1 / ((20 + 5 * 28) / 48))  # the earlier reading
    # and a real border excess inside the ring still shows
    bit_map[:, 1:-1, 1:-1] = 3.0
    bit_map[:, S.center_mask(8, 8)] = 1.0
    assert np.allclose(fa.bit_allocation(lambda t: bit_map[:len(t)], {"clean": x})["object_ratio"], 1 / 3)


def test_the_page_reports_the_null_the_cutoffs_and_the_ring():
    text = _markdown("frequency_analysis")
    for key in ("fa_attack_bits_hf_vs_noise_verdict", "fa_attack_power_hf_vs_noise_verdict", "fa_plane_25",
                "fa_null_overhead", "fa_object_ratio_with_ring", "fa_power_15_attack", "fa_power_35_attack"):
        assert key in text, key
    assert "hf_sensitivity" in _code("frequency_analysis")
    assert "padding" in fa.PAPER_CLAIMS["fa_bits_on_object"].measure
