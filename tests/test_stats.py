"""robustnb.stats: intervals cover what they should, and the verdict rule on hand-made intervals."""

import numpy as np
import pytest

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


@pytest.mark.parametrize("interval, direction, paper, expected", [
    ((0.4, 0.3, 0.5), 1, 0.468, "reproduced"),              # contains the paper's +46.8 %
    ((0.1, 0.05, 0.15), 1, 0.468, "reproduced in direction"),  # clearly positive, clearly smaller
    ((0.02, -0.03, 0.07), 1, 0.468, "not reproduced"),       # no effect possible, the paper's size excluded
    ((0.2, -0.1, 0.5), 1, 0.468, "inconclusive at this size"),
    ((-0.2, -0.3, -0.1), 1, None, "not reproduced"),
    ((-0.09, -0.12, -0.06), -1, -0.09, "reproduced"),       # a decrease claimed and found
    ((0.2, 0.1, 0.3), 1, None, "reproduced"),
])
def test_verdict_rule(interval, direction, paper, expected):
    assert S.verdict(S.Estimate(*interval, n=100), direction, paper) == expected


def test_no_change_claims_use_a_margin():
    assert S.verdict(S.Estimate(0.005, -0.01, 0.02, 100), 0, margin=0.03) == "reproduced"
    assert S.verdict(S.Estimate(-0.08, -0.1, -0.05, 100), 0, margin=0.03) == "not reproduced"
    assert S.verdict(S.Estimate(-0.02, -0.06, 0.01, 100), 0, margin=0.03) == "inconclusive at this size"
    with pytest.raises(ValueError):
        S.verdict(S.Estimate(0, -1, 1, 3), 0)


def test_claim_row_has_every_column():
    row = S.claim("ch", "c1", "attack raises the rate", "+46.8 %", "Table 2", "real bytes",
                  S.Estimate(0.4, 0.3, 0.5, 32), paper_value=0.468)
    assert tuple(row) == S.CLAIM_COLUMNS and row["ours"] == "+40.0% [+30.0, +50.0]" and row["verdict"] == "reproduced"


def test_a_handful_of_images_decides_nothing():
    assert S.verdict(S.mean_ci([1.0] * 6), 1) == "inconclusive at this size"
    assert S.verdict(S.mean_ci([1.0] * 40), 1) == "reproduced"
