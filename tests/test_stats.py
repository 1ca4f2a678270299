"""robustnb.stats: intervals cover what they should, and the verdict rule on hand-made intervals."""

import numpy as np
import pytest
from scipy import stats as sps

from robustnb import stats as S


def test_mean_ci_of_a_proportion_brackets_it_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = S.mean_ci(rng.random(50) < 0.7), S.mean_ci(rng.random(2000) < 0.7)
    assert small.low < 0.7 < small.high and large.low < 0.7 < large.high
    assert (large.high - large.low) < (small.high - small.low) / 4


def test_paired_difference_is_tighter_than_unpaired():
    rng = np.random.default_rng(1)
    base = rng.normal(100, 20, 200)
    a, b = base, base * 1.1 + rng.normal(0, 1, 200)
    d = S.paired_diff_ci(a, b)
    assert d.low > 0 and abs(d.value - (b - a).mean()) < 1e-9
    r = S.ratio_ci(a, b)
    assert r.low < 0.1 < r.high or abs(r.value - 0.1) < 0.01
    with pytest.raises(ValueError):
        S.paired_diff_ci(a, b[:-1])


def test_seeds_ci_is_a_t_interval():
    e = S.seeds_ci([1.0, 2.0, 3.0])
    assert e.value == 2.0 and e.method == "t" and e.low == pytest.approx(2 - 4.303 * 1 / 3 ** 0.5, rel=1e-3)
    assert np.isnan(S.seeds_ci([1.0]).low)


@pytest.mark.parametrize("interval, form, paper, expected", [
    ((0.4, 0.3, 0.5), "increase", 0.468, "reproduced"),              # contains the paper's +46.8 %
    ((0.1, 0.05, 0.15), "increase", 0.468, "reproduced in direction"),  # clearly positive, clearly smaller
    ((0.02, -0.03, 0.07), "increase", 0.468, "not reproduced"),       # no effect possible, the paper's size excluded
    ((0.2, -0.1, 0.5), "increase", 0.468, "inconclusive at this size"),
    ((-0.2, -0.3, -0.1), "increase", None, "not reproduced"),
    ((-0.09, -0.12, -0.06), "decrease", -0.09, "reproduced"),       # a decrease claimed and found
    ((0.2, 0.1, 0.3), "increase", None, "reproduced"),
    ((0.2, 0.1, 0.3), "greater", 0.9, "reproduced"),                 # ours vs ours: no size
    ((0.2, 0.1, 0.3), "less", None, "not reproduced"),
    ((-0.02, -0.05, 0.01), "less", None, "inconclusive at this size"),
])
def test_verdict_rule(interval, form, paper, expected):
    assert S.verdict(S.Estimate(*interval, n=100), form, paper) == expected


# "the defense costs only about 2 points": an upper bound on the cost (cost = clean - defended accuracy)
@pytest.mark.parametrize("interval, expected", [
    ((0.0, -0.01, 0.01), "reproduced"),            # no cost at all
    ((-0.03, -0.05, -0.01), "reproduced"),         # the defense even helps
    ((0.01, 0.0, 0.02), "reproduced"),             # a small cost, within the bound
    ((0.10, 0.08, 0.12), "not reproduced"),        # well above the bound
    ((0.02, 0.0, 0.04), "inconclusive at this size"),  # straddles the bound
])
def test_an_upper_bound_reads_no_cost_and_a_small_cost_as_reproduced(interval, expected):
    assert S.verdict(S.Estimate(*interval, n=100), "at_most", 0.02) == expected
    # the same claim stated on the accuracy change (defended - clean) is a lower bound of -2 points
    lo_hi = (-interval[0], -interval[2], -interval[1])
    assert S.verdict(S.Estimate(*lo_hi, n=100), "at_least", -0.02) == expected


def test_a_bound_stated_as_about_takes_its_slack():
    e = S.Estimate(0.026, 0.022, 0.03, 100)
    assert S.verdict(e, "at_most", 0.02) == "not reproduced"
    assert S.verdict(e, "at_most", 0.02, margin=0.01) == "reproduced"


def test_forms_need_their_parameters_and_unknown_forms_are_named():
    with pytest.raises(ValueError, match="bound"):
        S.verdict(S.Estimate(0, -1, 1, 30), "at_most")
    with pytest.raises(ValueError, match="increase"):
        S.verdict(S.Estimate(0, -1, 1, 30), "up")
    with pytest.raises(ValueError, match="bound"):
        S.PaperClaim("c", "p", "s", "m", form="at_least")


def test_no_change_claims_use_a_margin():
    assert S.verdict(S.Estimate(0.005, -0.01, 0.02, 100), "no_change", margin=0.03) == "reproduced"
    assert S.verdict(S.Estimate(-0.08, -0.1, -0.05, 100), "no_change", margin=0.03) == "not reproduced"
    assert S.verdict(S.Estimate(-0.02, -0.06, 0.01, 100), "no_change", margin=0.03) == "inconclusive at this size"
    with pytest.raises(ValueError):
        S.verdict(S.Estimate(0, -1, 1, 3), "no_change")


def test_claim_row_has_every_column():
    pc = S.PaperClaim("attack raises the rate", "+46.8 %", "Table 2", "real bytes", paper_value=0.468)
    row = S.judge("ch", "c1", pc, S.Estimate(0.4, 0.3, 0.5, 32))
    assert tuple(row) == S.CLAIM_COLUMNS and row["ours"] == "+40.0% [+30.0, +50.0]" and row["verdict"] == "reproduced"
    points = S.PaperClaim("c", "p", "s", "m", unit=" points", digits=2)
    assert S.judge("ch", "c2", points, S.Estimate(0.0123, 0.01, 0.02, 32))["ours"] == "+1.23 points [+1.00, +2.00]"


def test_a_handful_of_images_decides_nothing():
    assert S.verdict(S.mean_ci([1.0] * 6), "increase") == "inconclusive at this size"
    assert S.verdict(S.mean_ci([1.0] * 40), "increase") == "reproduced"


def test_identical_seeds_give_no_interval():
    e = S.seeds_ci([0.1, 0.1, 0.1])
    assert e.value == pytest.approx(0.1) and np.isnan(e.low) and np.isnan(e.high)
    assert S.verdict(e, "increase") == "inconclusive at this size"


def test_a_robust_accuracy_on_few_clean_correct_images_decides_nothing():
    many = S.seeds_ci([0.2, 0.25, 0.3], support=500)
    few = S.seeds_ci([0.2, 0.25, 0.3], support=5)
    assert S.verdict(many, "increase") == "reproduced"
    assert S.verdict(few, "increase") == "inconclusive at this size" and np.isnan(S.p_value(few))


def test_ratio_ci_drops_a_nan_pair():
    a = np.array([100.0, 110.0, 90.0, np.nan] * 10)
    b = np.array([120.0, 132.0, 108.0, 5.0] * 10)
    r = S.ratio_ci(a, b)
    assert r.value == pytest.approx(0.2) and r.n == 30 and r.low <= 0.2 <= r.high
    b[0] = np.nan
    assert S.paired_diff_ci(a, b).n == 29


def test_p_value_agrees_with_the_interval():
    t = S.seeds_ci([0.1, 0.12, 0.15])  # excludes 0
    assert S.p_value(t, "increase") < S.ALPHA
    straddle = S.Estimate(0.01, -0.02, 0.04, 200)
    assert S.p_value(straddle, "increase") > S.ALPHA
    assert S.p_value(S.Estimate(0.0, -0.01, 0.01, 200), "no_change", margin=0.03) < S.ALPHA
    assert S.p_value(S.Estimate(0.01, 0.0, 0.02, 200), "at_most", 0.03) < S.ALPHA


def test_holm_adjusts_step_down():
    adj = S.holm([0.01, 0.04, 0.03, float("nan")])
    assert adj[0] == pytest.approx(0.03) and adj[2] == pytest.approx(0.06) and adj[1] == pytest.approx(0.06)
    assert np.isnan(adj[3])


def test_claims_table_reads_every_claim_and_adds_holm_over_its_primary_claims():
    claims = {f"c{i}": S.PaperClaim("c", "p", "s", "m", role="primary") for i in range(5)}
    claims["x"] = S.PaperClaim("c", "p", "s", "m")  # exploratory: shown, never in Holm's family
    # each interval alone excludes 0 (p just below 0.025), but not after Holm over 5 claims
    weak = S.Estimate(0.021, 0.001, 0.041, 200)
    strong = S.Estimate(0.2, 0.18, 0.22, 200)
    est = {"c0": strong, **{f"c{i}": weak for i in range(1, 5)}, "x": strong}
    t = S.claims_table("ch", claims, est)
    assert tuple(t.columns) == S.CLAIM_COLUMNS and list(t["verdict"]) == ["reproduced"] * 6
    assert list(t["holm"]) == ["holds"] + ["does not hold"] * 4 + [""]
    assert t["power"].iloc[0].startswith("detects") and t["power"].iloc[5] == ""
    unmeasured = S.claims_table("ch", claims, {**est, "c1": S.unmeasured()})
    assert unmeasured["ours"].iloc[1] == S.UNMEASURED == unmeasured["power"].iloc[1]
    assert unmeasured["verdict"].iloc[1] == S.VERDICTS[3] and unmeasured["holm"].iloc[1] == ""


def test_claims_table_fails_loudly_on_a_missing_or_undeclared_estimate():
    """A forgotten estimate is not a silent "not measured", and an estimate under a misspelt id is not dropped."""
    from robustnb.config import ConfigError

    claims = {"a": S.PaperClaim("c", "p", "s", "m", role="primary"), "b": S.PaperClaim("c", "p", "s", "m")}
    est = S.Estimate(0.2, 0.18, 0.22, 200)
    with pytest.raises(ConfigError, match=r"no estimate for the declared claims \['b'\].*stats.unmeasured"):
        S.claims_table("ch", claims, {"a": est})
    with pytest.raises(ConfigError, match=r"does not declare: \['bb'\]"):
        S.claims_table("ch", claims, {"a": est, "b": est, "bb": est})



def test_p_values_agree_with_the_interval_the_verdict_reads():
    """P-values came from a percentile interval's half-width as if it were symmetric, and
    a zero-width bootstrap gave p = 0. Now the p-value is the share of the very bootstrap draws the interval is
    read from: p < ALPHA exactly when the interval excludes the null."""
    rng = np.random.default_rng(0)
    for shift in np.linspace(-0.05, 0.25, 13):
        x = rng.lognormal(0, 1, 60) - 1 + shift  # skewed: a percentile interval is not symmetric
        est = S.mean_ci(x)
        p = S.p_value(est, "increase")
        assert (p < S.ALPHA) == (est.low > 0) or abs(est.low) < 1e-3, (shift, p, est)
    nothing = S.mean_ci(np.zeros(50))  # nothing moved: no interval, no p, no verdict
    assert np.isnan(nothing.low) and np.isnan(S.p_value(nothing, "decrease"))
    assert S.verdict(nothing, "decrease") == S.INCONCLUSIVE


def test_detectable_effect_and_power_note():
    est = S.seeds_ci([0.10, 0.12, 0.08, 0.11, 0.09])
    se = (est.high - est.low) / 2 / sps.t(4).ppf(0.975)
    assert S.detectable(est) == pytest.approx((sps.t(4).ppf(0.975) + sps.t(4).ppf(0.8)) * se)
    pc = S.PaperClaim("c", "p", "s", "m", role="primary", unit=" points")
    assert "above it" in S.power_note(pc, est)
    wide = S.seeds_ci([0.3, -0.2, 0.1])
    assert "cannot decide" in S.power_note(pc, wide)
    assert "power unknown" in S.power_note(pc, S.seeds_ci([0.1]))


def test_roles_are_checked():
    with pytest.raises(ValueError, match="role"):
        S.PaperClaim("c", "p", "s", "m", role="headline")
    with pytest.raises(ValueError, match="why"):
        S.PaperClaim("c", "p", "s", "m", role="construction")
    assert S.PaperClaim("c", "p", "s", "m", role="addition").addition
