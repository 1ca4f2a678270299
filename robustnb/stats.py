"""Uncertainty and verdicts: 95% intervals for what the book measures, and the one rule that turns an interval
into a verdict on a paper's claim.

Intervals (all 95%, from :func:`scipy.stats.bootstrap` unless said otherwise):

* :func:`mean_ci` a mean over images (accuracy is the mean of 0/1 hits, a rate the mean of bytes);
* :func:`paired_diff_ci` the mean difference of two measurements *on the same images* (resampled together);
* :func:`ratio_ci` ``mean(b) / mean(a) - 1`` on the same images (an overhead: attacked vs clean bytes);
* :func:`seeds_ci` a mean over training seeds (Student's t interval: a handful of seeds is too few to
  bootstrap); use it where instantiations are compared, with one paired value per seed.

:class:`Estimate` holds a value with its interval. :func:`verdict` decides, from the interval alone:

``reproduced``                 the interval excludes "no effect" on the paper's side and is compatible with the
                               paper's size (contains it, or the paper gives no size, or ``size_tolerance`` says so)
``reproduced in direction``    the interval excludes "no effect" on the paper's side, but the effect is clearly
                               smaller (or larger) than the paper's
``not reproduced``             the interval excludes the paper's side (no effect of that sign, or the opposite one),
                               or contains "no effect" while excluding an effect of the paper's size (for a
                               "no change" claim: the interval lies outside the margin)
``inconclusive at this size``  the interval contains "no effect" and still reaches the paper's side, or rests on
                               fewer than :data:`MIN_ITEMS` images

:func:`claim` builds one row of a chapter's paper-vs-ours table with that verdict; every chapter's claims table
has the columns of :data:`CLAIM_COLUMNS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
N_RESAMPLES = 2000
#: fewer images than this decide nothing: a bootstrap over a handful of identical values gives a zero-width
#: interval that would read as certainty (a smoke run's 6 images, all wrong, say)
MIN_ITEMS = 20
VERDICTS = ("reproduced", "reproduced in direction", "not reproduced", "inconclusive at this size")
CLAIM_COLUMNS = ("chapter", "claim_id", "claim", "paper", "source", "measure", "ours", "value", "low", "high",
                 "verdict", "n", "unit")


@dataclass(frozen=True)
class Estimate:
    """A measured value with its 95% interval ``[low, high]`` over ``n`` items (images or seeds)."""

    value: float
    low: float
    high: float
    n: int
    method: str = "bootstrap"

    def fmt(self, scale: float = 100.0, digits: int = 1, unit: str = "%", signed: bool = False) -> str:
        """``"+12.3% [8.1, 16.0]"`` (value and interval times ``scale``)."""
        sign = "+" if signed else ""
        v, lo, hi = (scale * t for t in (self.value, self.low, self.high))
        if any(math.isnan(t) for t in (v, lo, hi)):
            return "n/a"
        return f"{v:{sign}.{digits}f}{unit} [{lo:{sign}.{digits}f}, {hi:{sign}.{digits}f}]"

    def excludes(self, x: float = 0.0) -> bool:
        return not (self.low <= x <= self.high)


def _clean(x) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    return a[np.isfinite(a)]


def _nan(n: int, method: str) -> Estimate:
    return Estimate(float("nan"), float("nan"), float("nan"), n, method)


def _bootstrap(data: tuple, statistic, paired: bool, seed: int) -> tuple[float, float]:
    n = len(data[0])
    if n < 2:
        return float("nan"), float("nan")
    point = statistic(*data)
    if all(np.ptp(d) == 0 for d in data):  # no spread at all: the interval is the point
        return float(point), float(point)
    res = sps.bootstrap(data, statistic, paired=paired, vectorized=False, n_resamples=N_RESAMPLES,
                        confidence_level=CONFIDENCE, method="percentile", random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return min(lo, float(point)), max(hi, float(point))


def mean_ci(x, seed: int = 0) -> Estimate:
    """The mean of ``x`` (one value per image) with a bootstrap interval over the images."""
    a = _clean(x)
    if len(a) == 0:
        return _nan(0, "bootstrap")
    lo, hi = _bootstrap((a,), np.mean, paired=False, seed=seed)
    return Estimate(float(a.mean()), lo, hi, len(a))


def paired_diff_ci(a, b, seed: int = 0) -> Estimate:
    """``mean(b - a)`` over shared images, resampling the pairs together (``a``, ``b``: one value per image)."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if len(a) != len(b):
        raise ValueError(f"paired samples need the same images: {len(a)} vs {len(b)} values")
    return mean_ci(b - a, seed)


def ratio_ci(a, b, seed: int = 0) -> Estimate:
    """``mean(b) / mean(a) - 1`` over shared images (e.g. attacked vs clean bytes), paired bootstrap."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if len(a) != len(b):
        raise ValueError(f"paired samples need the same images: {len(a)} vs {len(b)} values")
    if len(a) == 0 or a.mean() == 0:
        return _nan(len(a), "bootstrap")

    def stat(u, v):
        return v.mean() / u.mean() - 1

    lo, hi = _bootstrap((a, b), stat, paired=True, seed=seed)
    return Estimate(float(stat(a, b)), lo, hi, len(a))


def seeds_ci(values) -> Estimate:
    """Mean over training seeds with Student's t interval (one value per seed; needs 2 or more)."""
    a = _clean(values)
    if len(a) < 2:
        v = float(a.mean()) if len(a) else float("nan")
        return Estimate(v, float("nan"), float("nan"), len(a), "t")
    m, se = float(a.mean()), float(a.std(ddof=1) / math.sqrt(len(a)))
    h = float(sps.t.ppf(0.5 + CONFIDENCE / 2, len(a) - 1)) * se
    return Estimate(m, m - h, m + h, len(a), "t")


def verdict(est: Estimate, direction: int = 1, paper: float | None = None, size_tolerance: float = 0.5,
            margin: float | None = None) -> str:
    """The verdict on a claim from our interval (see the module docstring).

    ``direction``: +1 if the paper claims an increase (or a positive difference), -1 a decrease, 0 "no
    change"; with 0, ``margin`` is the largest change that still counts as none. ``paper``: the paper's value
    in the same units, when it gives one; the effect is "of the paper's size" when the interval contains it or
    when the estimate is within ``size_tolerance`` (a fraction) of it.
    """
    if any(math.isnan(t) for t in (est.value, est.low, est.high)):
        return "inconclusive at this size"
    if direction == 0 and margin is None:
        raise ValueError("a 'no change' claim needs a margin")
    if est.method == "bootstrap" and est.n < MIN_ITEMS:
        return "inconclusive at this size"
    if direction == 0:
        if -margin <= est.low and est.high <= margin:
            return "reproduced"
        if est.low > margin or est.high < -margin:
            return "not reproduced"
        return "inconclusive at this size"
    lo, hi = (est.low, est.high) if direction > 0 else (-est.high, -est.low)
    value = est.value * direction
    if lo > 0:
        if paper is None:
            return "reproduced"
        p = paper * direction
        if est.low <= paper <= est.high or abs(value - p) <= size_tolerance * abs(p):
            return "reproduced"
        return "reproduced in direction"
    if hi <= 0:
        return "not reproduced"
    if paper is not None and hi < (1 - size_tolerance) * abs(paper):
        return "not reproduced"  # no effect is possible, and one of the paper's size is excluded
    return "inconclusive at this size"


@dataclass(frozen=True)
class PaperClaim:
    """A paper's claim as a chapter tests it: the words, the paper's figure (quoted) and where it is, what we
    measure for it, and how the verdict reads the interval (see :func:`verdict`; values in the units of the
    estimate, e.g. 0.468 for +46.8 %). Chapter modules list theirs in ``PAPER_CLAIMS``: the one place per
    chapter where the papers' numbers are typed."""

    claim: str
    paper: str
    source: str
    measure: str
    direction: int = 1
    paper_value: float | None = None
    margin: float | None = None
    size_tolerance: float = 0.5


def judge(chapter: str, claim_id: str, pc: PaperClaim, est: Estimate, scale: float = 100.0, unit: str = "%",
          signed: bool = True, digits: int = 1, verdict_override: str | None = None) -> dict:
    """:func:`claim` for a declared :class:`PaperClaim`."""
    return claim(chapter, claim_id, pc.claim, pc.paper, pc.source, pc.measure, est, pc.direction, pc.paper_value,
                 scale, unit, signed, digits, pc.size_tolerance, pc.margin, verdict_override)


def claim(chapter: str, claim_id: str, claim_text: str, paper: str, source: str, measure: str, est: Estimate,
          direction: int = 1, paper_value: float | None = None, scale: float = 100.0, unit: str = "%",
          signed: bool = True, digits: int = 1, size_tolerance: float = 0.5, margin: float | None = None,
          verdict_override: str | None = None) -> dict:
    """One row of a paper-vs-ours table: the paper's figure (quoted, with its source), ours with its interval,
    and the verdict of :func:`verdict` (``paper_value`` and ``margin`` in the estimate's units).
    ``verdict_override`` is for a claim the interval cannot decide by construction (say why in ``measure``)."""
    v = verdict_override or verdict(est, direction, paper_value, size_tolerance, margin)
    if v not in VERDICTS:
        raise ValueError(f"Unknown verdict {v!r}: choose one of {VERDICTS}.")
    return {"chapter": chapter, "claim_id": claim_id, "claim": claim_text, "paper": paper, "source": source,
            "measure": measure, "ours": est.fmt(scale, digits, unit, signed), "value": est.value, "low": est.low,
            "high": est.high, "verdict": v, "n": est.n, "unit": unit}


__all__ = ["CONFIDENCE", "VERDICTS", "CLAIM_COLUMNS", "Estimate", "PaperClaim", "judge", "mean_ci", "paired_diff_ci", "ratio_ci",
           "seeds_ci", "verdict", "claim"]
