"""The TV-defense chapter's module (robustnb.chapters.tv_defense): config, tables, claims and the protocol."""

import numpy as np
import pandas as pd
import pytest

from robustnb import stats
from robustnb.chapters import tv_defense as ch
from robustnb.config import PRESETS
from robustnb.defenses import DefenseSettings
from robustnb.registry import DEFENSES


@pytest.mark.parametrize("preset", PRESETS)
def test_config_for_every_preset(preset):
    cfg = ch.DefenseConfig.from_preset(preset)
    assert cfg.n_images > 0 and cfg.eps_255 and 0.0 in cfg.lambda_tv_grid
    assert cfg.n_train > 0 and ch.tuning_grid(cfg) and cfg.claim_eps_255 in cfg.eps_255
    assert cfg.adaptive_restarts >= 1  # the adaptive attacker restarts at least once


def test_larger_evaluation_and_stronger_adaptive_attack_at_cpu():
    cfg = ch.DefenseConfig.from_preset("cpu")
    assert cfg.n_images > 64 and cfg.adaptive_steps > 10 and len(ch.tuning_grid(cfg)) > 1
    for k in ("tune_lambda_tv", "tune_cutoff", "tune_object_factor", "tune_hf_factor"):
        assert len(getattr(cfg, k)) > 1  # every setting is tuned, none fixed by hand


N = 40


def _per_image(defended=-0.10, attack=0.28, adaptive=(-0.05, 0.02), cost=2, seed=0, n=N, attacked_cost=0):
    """Synthetic per-image frame: clean bytes ~100, given relative changes, ``cost`` of ``n`` clean images lost
    to the disentangled defense (negative: gained), ``attacked_cost`` lost on attacked + defended images."""
    g = np.random.default_rng(seed)
    clean = 100 + 10 * g.standard_normal(n)
    correct = (np.arange(n) % 4 != 0).astype(float)
    rows = []

    def add(defense, inp, eps, b, c=correct):
        rows.append(pd.DataFrame({"entropy_model": "hyperprior", "defense": defense, "input": inp, "eps_255": eps,
                                  "image": np.arange(n), "bytes": b, "correct": c}))

    def drop(k):
        out = correct.copy()
        if k >= 0:
            out[np.flatnonzero(correct)[:k]] = 0.0
        else:
            out[np.flatnonzero(correct == 0)[:-k]] = 1.0
        return out

    noise = lambda: 0.01 * clean * g.standard_normal(n)  # noqa: E731
    for d in DEFENSES.names():
        tv = d == "disentangled_tv"
        add(d, "clean", 0.0, clean * (0.9 if d != "none" else 1.0), drop(cost) if tv else correct)
        add(d, "attacked", 2.0, clean * (1 + (defended if d != "none" else attack)) + noise(),
            drop(attacked_cost) if tv else correct)
        add(d, "adaptive", 2.0, clean * (1 + (adaptive[0] if d != "none" else attack)) + noise())
        if tv:
            add(d, "adaptive (BPDA)", 2.0, clean * (1 + adaptive[1]) + noise())
    return pd.concat(rows, ignore_index=True)


def test_summary_tables_and_verdict_read_the_frame():
    t = ch.summary(_per_image())
    assert set(t.columns) >= {"entropy_model", "defense", "input", "eps_255", "bytes", "overhead", "accuracy"}
    wide = ch.overhead_table(t, 2.0)
    assert len(wide) == len(DEFENSES) and "attacked: overhead %" in wide.columns
    (sentence,) = ch.verdict(t)
    assert "hyperprior, eps 2/255" in sentence


def test_claims_frame_has_the_declared_ids_and_computed_verdicts():
    c = ch.claims(_per_image())
    assert list(c.columns) == list(stats.CLAIM_COLUMNS)
    assert list(c["claim_id"]) == list(ch.PAPER_CLAIMS) and all(k.startswith("tv_") for k in ch.PAPER_CLAIMS)
    v = c.set_index("claim_id")["verdict"]
    assert v["tv_defended_vs_clean"] == "reproduced"      # -10% vs the paper's -9%
    assert v["tv_attack_overhead"] == "reproduced"        # +28%
    assert c.set_index("claim_id").loc["tv_accuracy_cost", "unit"] == " points"
    # the same frame with the attack doing nothing: not reproduced, from the rule, not typed
    assert ch.claims(_per_image(attack=0.0, defended=0.05)).set_index("claim_id")["verdict"][
        "tv_attack_overhead"] in ("not reproduced", "inconclusive at this size")


def test_claims_are_paired_over_the_same_images():
    """A systematic per-image cost with large between-image spread: paired intervals exclude 0."""
    e = ch.estimates(_per_image(cost=10))
    assert e["tv_accuracy_cost"].value == pytest.approx(10 / N) and e["tv_accuracy_cost"].low > 0  # a cost > 0
    assert e["tv_defended_vs_clean"].high < 0 and e["tv_defended_vs_clean"].n == N


def test_adaptive_claim_takes_the_strongest_attack_per_image():
    """The adaptive claim is the per-image worst case of every adaptive attacker (unrolled with restarts,
    BPDA), not the unrolled one only: here BPDA is the stronger one and pushes the rate above clean."""
    pi = _per_image(adaptive=(-0.05, 0.10))
    e = ch.estimates(pi)["tv_adaptive_vs_clean"]
    assert e.value > 0.05 and e.low > 0
    assert ch.claims(pi).set_index("claim_id")["verdict"]["tv_adaptive_vs_clean"] == "not reproduced"


def test_choose_setting_rule():
    f = pd.DataFrame([
        {"lambda_tv": 0.02, "cutoff": 0.15, "object_factor": 0.25, "hf_factor": 4, "accuracy_cost": 0.06,
         "attacked_overhead": -0.20},
        {"lambda_tv": 0.01, "cutoff": 0.15, "object_factor": 0.25, "hf_factor": 4, "accuracy_cost": 0.02,
         "attacked_overhead": -0.05},
        {"lambda_tv": 0.005, "cutoff": 0.25, "object_factor": 0.5, "hf_factor": 2, "accuracy_cost": 0.0,
         "attacked_overhead": 0.01}])
    assert ch.choose_setting(f, 0.02)["lambda_tv"] == 0.01
    assert ch.choose_setting(f, 0.0)["cutoff"] == 0.25
    assert ch.choose_setting(f.iloc[:1], 0.0)["lambda_tv"] == 0.02  # nothing qualifies: the cheapest in accuracy


def test_tuning_runs_on_training_images_only(monkeypatch, tmp_path):
    """The settings are chosen on training images (the old protocol tuned them on the test images of the
    table): tune_settings never touches the test images and caches its grid."""
    import torch

    from robustnb import cache

    cfg = ch.DefenseConfig.from_preset("smoke")
    seen = []
    train = (torch.full((4, 3, 8, 8), 0.5), torch.zeros(4, dtype=torch.long))
    monkeypatch.setattr(ch, "training_images", lambda c, r: seen.append("train") or train)
    monkeypatch.setattr(ch, "cifar_images", lambda c, r: pytest.fail("tuning must not read the test images"))
    monkeypatch.setattr(ch, "entropy_attack", lambda m, x, *a: x + 0.1)
    monkeypatch.setattr(ch, "make", lambda kind, name, bm, s, **kw: s)
    monkeypatch.setattr(ch, "apply", lambda s, x: (s, x))

    def metrics(model, x, y):
        if isinstance(x, tuple):  # defended: cost grows with lambda, rate falls with it
            s, xin = x
            return {"bytes": 100 * (1 + float(xin.mean()) - 0.5) * (1 - 5 * s.lambda_tv),
                    "accuracy": 0.8 - 2 * s.lambda_tv}
        return {"bytes": 100.0, "accuracy": 0.8}

    monkeypatch.setattr(ch, "_metrics", metrics)
    monkeypatch.setattr(cache, "cached_json", lambda name, spec, compute, folder="results": compute())

    class Run:
        preset, seed = "smoke", 0

    tuned, frame = ch.tune_settings(cfg, {"hyperprior": object()}, Run())
    assert seen == ["train"] and len(frame) == len(ch.tuning_grid(cfg)) and frame["chosen"].sum() == 1
    assert isinstance(tuned["hyperprior"], DefenseSettings) and tuned["hyperprior"].lambda_tv == 0.01


# ------------------------------------------------------------------------- the claims' forms
def _verdicts(**kw):
    return ch.claims(_per_image(**kw)).set_index("claim_id")["verdict"]


def test_accuracy_cost_is_an_upper_bound():
    """"Costs only about 2 points" is an upper bound: a defense that costs nothing, one that
    costs a little and one that improves accuracy all reproduce it; one that costs well above the bound does
    not. (The old rule read it as a point effect of -2 points: no cost came out "not reproduced", an improvement
    "not reproduced", a 10-point cost "reproduced in direction".)"""
    pc = ch.PAPER_CLAIMS["tv_accuracy_cost"]
    assert pc.form == "at_most" and pc.paper_value == pytest.approx(0.02) and 0 < pc.margin <= 0.02
    assert pc.unit == " points" and "about" in pc.measure and pc.role == "primary"
    # no cost at all, with the 2% of images a smoothing flips each way (a change no image shows has no interval)
    assert ch.world_claims("tv_accuracy_cost", 0.0).set_index("claim_id").loc["tv_accuracy_cost", "verdict"] == \
        "reproduced"
    assert _verdicts(cost=20, n=2000)["tv_accuracy_cost"] == "reproduced"         # 1 point
    assert _verdicts(cost=-20, n=2000)["tv_accuracy_cost"] == "reproduced"        # an improvement
    assert _verdicts(cost=40, n=400)["tv_accuracy_cost"] == "not reproduced"      # 10 points
    assert _verdicts(cost=3, n=100)["tv_accuracy_cost"] == "inconclusive at this size"  # straddles the bound


def test_the_new_claims_read_attacked_and_defended_inputs():
    """What the attack still adds through the defense (attacked + defended vs clean + defended), and
    the accuracy on attacked + defended images vs clean undefended ones, are claims of their own."""
    assert {"tv_attack_through_defense", "tv_attacked_accuracy_cost"} <= set(ch.PAPER_CLAIMS)
    through = ch.PAPER_CLAIMS["tv_attack_through_defense"]
    assert through.form == "at_most" and through.addition and through.paper_value > 0
    acc = ch.PAPER_CLAIMS["tv_attacked_accuracy_cost"]
    assert acc.form == "at_most" and acc.paper_value == pytest.approx(0.02)
    assert "choose_setting" in ch.PAPER_CLAIMS["tv_defended_vs_clean"].measure  # said: partly by construction
    # the synthetic defense takes 10% off every input: attacked + defended = clean + defended (no overhead left)
    e = ch.estimates(_per_image(defended=-0.10))
    assert e["tv_attack_through_defense"].value == pytest.approx(0.0, abs=0.01)
    assert _verdicts(defended=-0.10)["tv_attack_through_defense"] == "reproduced"
    # the attack keeps +22% through the defense (1.1 / 0.9 - 1), while still under the clean undefended rate...
    v = _verdicts(defended=0.10)
    assert v["tv_attack_through_defense"] == "not reproduced"
    e = ch.estimates(_per_image(defended=0.10))
    assert e["tv_attack_through_defense"].value == pytest.approx(1.1 / 0.9 - 1, abs=0.01)
    # ...and the attacked accuracy is read on attacked + defended images against clean undefended ones
    e = ch.estimates(_per_image(cost=0, attacked_cost=8))
    assert e["tv_attacked_accuracy_cost"].value == pytest.approx(8 / N) and e["tv_accuracy_cost"].value == 0
    assert _verdicts(cost=0, attacked_cost=40, n=400)["tv_attacked_accuracy_cost"] == "not reproduced"
    c = ch.claims(_per_image())
    assert set(c["form"]) <= set(stats.FORMS) and c["holm"].isin(stats.HOLM + ("",)).all()


def _toy_cifar(n_per_class=250):
    """A stand-in CIFAR-10 training split sorted by class (as the offline archive is decoded), every image
    unique (its index written into its pixels)."""
    import torch

    from robustnb.data import ImageDataset

    n = 10 * n_per_class
    idx = torch.arange(n)
    images = torch.zeros(n, 3, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = (idx // 256).to(torch.uint8), (idx % 256).to(torch.uint8)
    labels = idx // n_per_class
    return ImageDataset("cifar10", images, labels, [str(c) for c in range(10)], (0.5,) * 3, (0.5,) * 3)


def _ids(images) -> set:
    import torch

    x = torch.as_tensor(images)
    x = (x * 255).round().long() if x.is_floating_point() else x.long()
    return set((x[:, 0, 0, 0] * 256 + x[:, 0, 0, 1]).tolist())


@pytest.mark.parametrize("preset", PRESETS)
def test_tuning_images_are_disjoint_from_the_split_models_training_images(monkeypatch, preset):
    """The defense is tuned on training images no split model trained on (the split zoo's tuning
    hold-out), at every preset; the hold-out is class-balanced even though the archive is sorted by class."""
    from robustnb import data
    from robustnb.split import zoo

    toy = _toy_cifar()
    monkeypatch.setattr(data, "load_cifar10", lambda split="train", **kw: toy)

    class Run:
        seed = 0

    Run.preset = preset
    cfg = ch.DefenseConfig.from_preset(preset)
    assert cfg.n_train <= 10 * zoo.TUNING_HOLDOUT_PER_CLASS
    x, y = ch.training_images(cfg, Run())
    trained = zoo._train_set(zoo.SplitTrainConfig.from_preset(preset), 0)
    assert len(x) == cfg.n_train and _ids(x)
    assert not _ids(x) & _ids(trained.images), "the defense would be tuned on images the split models fitted"
    hold = zoo.tuning_holdout()
    assert len(hold) == 10 * zoo.TUNING_HOLDOUT_PER_CLASS and hold.labels.bincount().tolist() == [
        zoo.TUNING_HOLDOUT_PER_CLASS] * 10
    assert len(zoo.training_pool()) + len(hold) == len(toy) and not _ids(hold.images) & _ids(zoo.training_pool().images)


# ------------------------------------------------------------------------ the paper's claims as made
def test_the_primary_claims_are_the_abstracts_three_statements():
    """The primary claims are the abstract's and TL;DR's statements about the defense, as made: the attacked
    and defended input about 9% below the clean rate (the only size, from the abstract), about 2% accuracy loss
    (an upper bound) and robustness to adaptive attacks; the +28% of the undefended attack (not in our summary) is
    exploratory and judged for direction only, the attack through the defense is the book's addition."""
    primary = {cid for cid, pc in ch.PAPER_CLAIMS.items() if pc.role == "primary"}
    assert primary == {"tv_defended_vs_clean", "tv_accuracy_cost", "tv_adaptive_vs_clean"}
    assert ch.PAPER_CLAIMS["tv_defended_vs_clean"].paper_value == pytest.approx(-0.09)
    assert "about 9%" in ch.PAPER_CLAIMS["tv_defended_vs_clean"].paper
    over = ch.PAPER_CLAIMS["tv_attack_overhead"]
    assert over.paper_value is None and over.role == "exploratory" and "not in our summary" in over.paper
    assert ch.PAPER_CLAIMS["tv_attack_through_defense"].role == "addition"
    assert ch.PAPER_CLAIMS["tv_attacked_accuracy_cost"].role == "exploratory"


def test_about_is_the_books_size_tolerance_and_says_so():
    """Finding 5: the 50% tolerance was unexplained; the slack "about" adds to the 2-point bound is the book's size
    tolerance (stats.SIZE_TOLERANCE), and the claims that use it name it."""
    assert ch.ABOUT_SLACK == pytest.approx(stats.SIZE_TOLERANCE * ch.PAPER_COST)
    for cid in ("tv_accuracy_cost", "tv_defended_vs_clean"):
        assert "SIZE_TOLERANCE" in ch.PAPER_CLAIMS[cid].measure, cid
    # "about 9%" of the paper's size: -5% is within half of 9%, -3% is not
    for value, verdict in ((-0.05, "reproduced"), (-0.03, "reproduced in direction")):
        row = ch.world_claims("tv_defended_vs_clean", value).set_index("claim_id").loc["tv_defended_vs_clean"]
        assert row["verdict"] == verdict, (value, row["ours"])


def test_the_closing_sections_name_the_primary_claims():
    """Finding 5: each chapter's closing section names its primary claims and says the rest is not counted."""
    import json
    from pathlib import Path

    nb = json.loads((Path(__file__).parents[2] / "book" / "tv_defense.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "primary" in text and "not counted" in text and "power" in text
    assert "under a fifth of the paper's undefended" not in text  # a bound measured against an untraced figure
