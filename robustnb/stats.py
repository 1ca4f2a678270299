"""Uncertainty and verdicts: 95% intervals for what the book measures, and one rule per *form* of claim that
turns an interval into a verdict on a paper's claim.

Intervals (all 95%, from :func:`scipy.stats.bootstrap` unless said otherwise):

* :func:`mean_ci` a mean over images (accuracy is the mean of 0/1 hits, a rate the mean of bytes);
* :func:`paired_diff_ci` the mean difference of two measurements *on the same images* (resampled together);
* :func:`ratio_ci` ``mean(b) / mean(a) - 1`` on the same images (an overhead: attacked vs clean bytes);
* :func:`seeds_ci` a mean over independent rounds (Student's t interval: a handful of seeds is too few to
  bootstrap); use it where instantiations are compared, with one paired value per round.

:class:`Estimate` holds a value with its interval. A :class:`PaperClaim` declares its logical form (one of
:data:`FORMS`), and :func:`verdict` applies that form's rule to the interval alone:

``increase`` / ``decrease`` (optionally of the paper's size ``paper_value``)
    *reproduced*: the interval excludes "no effect" on the paper's side and is compatible with the paper's size
    (contains it, or the estimate is within ``size_tolerance`` of it, or the paper gives none);
    *reproduced in direction*: the effect is of the paper's sign but clearly smaller or larger;
    *not reproduced*: the interval excludes the paper's side, or contains "no effect" while excluding an effect
    of the paper's size; *inconclusive at this size* otherwise.
``greater`` / ``less``
    a difference between two of our own measurements (``a - b``: is ``a`` larger / smaller?), read like an
    increase / decrease without a size; for claims that compare two of the paper's effects.
``at_most`` / ``at_least`` (a bound ``paper_value``, loosened by ``margin`` where the paper says "about")
    *reproduced*: the whole interval lies on the bound's side ("costs only about 2 points": no cost and a small
    cost both qualify); *not reproduced*: the whole interval lies beyond it; *inconclusive*: it straddles it.
``no_change`` (within ``margin``)
    *reproduced*: the interval lies inside ``[-margin, margin]``; *not reproduced*: it lies outside;
    *inconclusive* otherwise.

Any estimate resting on fewer than :data:`MIN_ITEMS` images (a bootstrap's items, or ``support``: the fewest
images behind one of a t interval's values, such as the clean-correct images of a robust accuracy) is
*inconclusive at this size*.

:func:`judge` builds one row of a chapter's paper-vs-ours table; :func:`claims_table` builds the whole table
(columns :data:`CLAIM_COLUMNS`) and adds a multiplicity-aware reading: Holm's step-down adjustment of each
primary claim's one-sided p-value over the chapter's primary claims (:func:`holm`; the ledger repeats it over
each paper's primary claims across its chapters).

Every claim has a *role* (:data:`ROLES`): ``primary`` (the paper's statement as made: these are counted),
``exploratory`` (a finer reading of the paper: shown, not counted), ``addition`` (the book's own question),
``setup`` (a check that the set-up works, such as a training objective doing what it optimises) and
``construction`` (true by how the book builds the measurement: shown with ``why``, never counted). Every claim
but a construction row declares two *worlds* ``(right, wrong)``: the true value of its measured quantity in a world
built to the paper's statement and in one where the paper is wrong; ``tests/test_claim_worlds.py`` builds both
with each chapter's ``world_claims`` and checks that the claim's own estimate and rule read "reproduced",
"not reproduced", and "inconclusive" with too few replicates. Beside every primary claim, :func:`detectable`
gives the smallest effect the run could detect with 80% power (:data:`POWER`) from the run's own spread, and
:func:`power_note` says whether the paper's effect (or :data:`DEFAULT_EFFECT` where it states none) is above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
#: one-sided level that matches a two-sided 95% interval (an interval excluding 0 <=> p < 0.025)
ALPHA = (1 - CONFIDENCE) / 2
N_RESAMPLES = 2000
#: fewer images than this decide nothing: a bootstrap over a handful of identical values gives a zero-width
#: interval that would read as certainty (a smoke run's 6 images, all wrong, say)
MIN_ITEMS = 20
VERDICTS = ("reproduced", "reproduced in direction", "not reproduced", "inconclusive at this size")
INCONCLUSIVE = VERDICTS[3]
FORMS = ("increase", "decrease", "greater", "less", "at_most", "at_least", "no_change")
HOLM = ("holds", "does not hold")
#: what a claim is (see the module docstring): only ``primary`` claims are counted and corrected together
ROLES = ("primary", "exploratory", "addition", "setup", "construction")
#: the power the detectable effect is computed for, and the effect compared with it where the paper states none
POWER = 0.8
DEFAULT_EFFECT = 0.10
#: "of the paper's size" (increase / decrease with a figure): the estimate within this fraction of the paper's
#: figure. Half: the papers' figures are single runs at another scale (ImageNet, full training), so a size is
#: judged "the same" when it is of the same order (+30% for a stated +46.8% is; +10% is not); an interval that
#: contains the figure always is.
SIZE_TOLERANCE = 0.5
CLAIM_COLUMNS = ("chapter", "claim_id", "claim", "paper", "source", "measure", "ours", "value", "low", "high",
                 "verdict", "n", "unit", "form", "p", "holm", "role", "detectable", "power")


@dataclass(frozen=True)
class Estimate:
    """A measured value with its 95% interval ``[low, high]`` over ``n`` items (images or seeds).
    ``support``: for a t interval over seeds, the fewest images behind any one seed's value (None: not known
    or not applicable)."""

    value: float
    low: float
    high: float
    n: int
    method: str = "bootstrap"
    support: int | None = None
    #: the bootstrap distribution the interval was read from (empty for a t interval)
    draws: tuple = field(default=(), repr=False, compare=False)

    def fmt(self, scale: float = 100.0, digits: int = 1, unit: str = "%", signed: bool = False) -> str:
        """``"+12.3% [8.1, 16.0]"`` (value and interval times ``scale``)."""
        sign = "+" if signed else ""
        v, lo, hi = (scale * t for t in (self.value, self.low, self.high))
        if any(math.isnan(t) for t in (v, lo, hi)):
            return "n/a"
        return f"{v:{sign}.{digits}f}{unit} [{lo:{sign}.{digits}f}, {hi:{sign}.{digits}f}]"

    def excludes(self, x: float = 0.0) -> bool:
        return not (self.low <= x <= self.high)

    def shifted(self, by: float) -> "Estimate":
        """The same interval moved by ``by`` (e.g. a share measured against one half)."""
        return Estimate(self.value + by, self.low + by, self.high + by, self.n, self.method, self.support,
                        tuple(d + by for d in self.draws))

    @property
    def too_small(self) -> bool:
        return (self.method == "bootstrap" and self.n < MIN_ITEMS) or (
            self.support is not None and self.support < MIN_ITEMS)


def _clean(x) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    return a[np.isfinite(a)]


def _nan(n: int, method: str) -> Estimate:
    return Estimate(float("nan"), float("nan"), float("nan"), n, method)


def _bootstrap(data: tuple, statistic, paired: bool, seed: int) -> tuple[float, float, tuple]:
    """``(low, high, draws)``: the percentile interval and the bootstrap distribution it was read from (kept for
    :func:`p_value`, so that a p-value and the interval always agree). No spread at all: every image gives the
    same value, so the interval is that point when it is an effect (every image moved alike), and there is no
    interval when nothing moved at all (a measurement that no image changes, such as a degenerate smoke model's
    constant predictions, decides nothing)."""
    n = len(data[0])
    if n < 2:
        return float("nan"), float("nan"), ()
    point = statistic(*data)
    if all(np.ptp(d) == 0 for d in data):
        if not np.isfinite(point) or point == 0:
            return float("nan"), float("nan"), ()
        return float(point), float(point), (float(point),)
    res = sps.bootstrap(data, statistic, paired=paired, vectorized=False, n_resamples=N_RESAMPLES,
                        confidence_level=CONFIDENCE, method="percentile", random_state=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return min(lo, float(point)), max(hi, float(point)), tuple(np.asarray(res.bootstrap_distribution, float))


def mean_ci(x, seed: int = 0) -> Estimate:
    """The mean of ``x`` (one value per image) with a bootstrap interval over the images."""
    a = _clean(x)
    if len(a) == 0:
        return _nan(0, "bootstrap")
    lo, hi, draws = _bootstrap((a,), np.mean, paired=False, seed=seed)
    return Estimate(float(a.mean()), lo, hi, len(a), draws=draws)


def _pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Two per-image samples as float arrays of the same length, with every pair holding a NaN dropped."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if len(a) != len(b):
        raise ValueError(f"paired samples need the same images: {len(a)} vs {len(b)} values")
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep]


def paired_diff_ci(a, b, seed: int = 0) -> Estimate:
    """``mean(b - a)`` over shared images, resampling the pairs together (``a``, ``b``: one value per image;
    pairs with a NaN are dropped)."""
    a, b = _pairs(a, b)
    return mean_ci(b - a, seed)


def ratio_ci(a, b, seed: int = 0) -> Estimate:
    """``mean(b) / mean(a) - 1`` over shared images (e.g. attacked vs clean bytes), paired bootstrap; pairs
    with a NaN are dropped."""
    a, b = _pairs(a, b)
    if len(a) == 0 or a.mean() == 0:
        return _nan(len(a), "bootstrap")

    def stat(u, v):
        return v.mean() / u.mean() - 1

    lo, hi, draws = _bootstrap((a, b), stat, paired=True, seed=seed)
    return Estimate(float(stat(a, b)), lo, hi, len(a), draws=draws)


def paired_stat_ci(samples: tuple, statistic, seed: int = 0) -> Estimate:
    """``statistic(*samples)`` with a paired percentile bootstrap over shared images (``samples``: arrays of
    one value per image, resampled together; images with a NaN in any sample are dropped). For statistics of
    three or more measurements on the same images, such as the growth of an overhead from one budget to the
    next."""
    arrays = [np.asarray(a, dtype=float).ravel() for a in samples]
    if len({len(a) for a in arrays}) != 1:
        raise ValueError(f"paired samples need the same images: {[len(a) for a in arrays]} values")
    keep = np.all([np.isfinite(a) for a in arrays], axis=0)
    arrays = tuple(a[keep] for a in arrays)
    if len(arrays[0]) == 0:
        return _nan(0, "bootstrap")
    point = float(statistic(*arrays))
    if not math.isfinite(point):
        return _nan(len(arrays[0]), "bootstrap")
    lo, hi, draws = _bootstrap(arrays, statistic, paired=True, seed=seed)
    return Estimate(point, lo, hi, len(arrays[0]), draws=draws)


def seeds_ci(values, support: int | None = None) -> Estimate:
    """Mean over independent rounds with Student's t interval (one value per round; needs 2 or more).
    Values without any spread give no interval (NaN: identical seeds mean the rounds did not re-draw
    anything, not that the mean is certain). ``support``: the fewest images behind one value."""
    a = _clean(values)
    v = float(a.mean()) if len(a) else float("nan")
    if len(a) < 2 or np.ptp(a) == 0:
        return Estimate(v, float("nan"), float("nan"), len(a), "t", support)
    se = float(a.std(ddof=1) / math.sqrt(len(a)))
    h = float(sps.t.ppf(0.5 + CONFIDENCE / 2, len(a) - 1)) * se
    return Estimate(v, v - h, v + h, len(a), "t", support)


def _check_form(form: str, paper_value, margin) -> None:
    if form not in FORMS:
        raise ValueError(f"Unknown claim form {form!r}: choose one of {FORMS}.")
    if form in ("at_most", "at_least") and paper_value is None:
        raise ValueError(f"an {form!r} claim needs its bound as paper_value")
    if form == "no_change" and margin is None:
        raise ValueError("a 'no_change' claim needs a margin")


def verdict(est: Estimate, form: str = "increase", paper_value: float | None = None, margin: float | None = None,
            size_tolerance: float = SIZE_TOLERANCE) -> str:
    """The verdict on a claim of the given ``form`` from our interval (see the module docstring).
    ``paper_value``: the paper's size (``increase``/``decrease``) or the bound (``at_most``/``at_least``), in
    the estimate's units; ``margin``: the "no change" margin, or the slack added to a bound the paper states as
    "about"."""
    _check_form(form, paper_value, margin)
    if any(math.isnan(t) for t in (est.value, est.low, est.high)) or est.too_small:
        return INCONCLUSIVE
    if form == "no_change":
        if -margin <= est.low and est.high <= margin:
            return "reproduced"
        if est.low > margin or est.high < -margin:
            return "not reproduced"
        return INCONCLUSIVE
    if form in ("at_most", "at_least"):
        sign = 1 if form == "at_most" else -1
        bound = paper_value + sign * (margin or 0.0)
        lo, hi = sorted((sign * est.low, sign * est.high))
        if hi <= sign * bound:
            return "reproduced"
        if lo > sign * bound:
            return "not reproduced"
        return INCONCLUSIVE
    direction = 1 if form in ("increase", "greater") else -1
    if form in ("greater", "less"):
        paper_value = None
    lo, hi = (est.low, est.high) if direction > 0 else (-est.high, -est.low)
    if lo > 0:
        if paper_value is None:
            return "reproduced"
        p, value = paper_value * direction, est.value * direction
        if est.low <= paper_value <= est.high or abs(value - p) <= size_tolerance * abs(p):
            return "reproduced"
        return "reproduced in direction"
    if hi <= 0:
        return "not reproduced"
    if paper_value is not None and hi < (1 - size_tolerance) * abs(paper_value):
        return "not reproduced"  # no effect is possible, and one of the paper's size is excluded
    return INCONCLUSIVE


def _z(est: Estimate) -> tuple[float, object]:
    """The standard error behind ``est``'s interval and the reference distribution (t with n-1 degrees of
    freedom for a t interval, normal otherwise)."""
    dist = sps.t(est.n - 1) if est.method == "t" and est.n > 1 else sps.norm()
    half = (est.high - est.low) / 2
    return half / float(dist.ppf(0.5 + CONFIDENCE / 2)), dist


def p_value(est: Estimate, form: str = "increase", paper_value: float | None = None,
            margin: float | None = None) -> float:
    """One-sided p-value of the claim's null hypothesis (the claim is false): "no increase" for an increase,
    "above the bound" for ``at_most``, "outside the margin" for ``no_change`` (two one-sided tests, the larger p).
    Read from the same distribution as the interval :func:`verdict` reads: the share of bootstrap draws on the
    null's side (a percentile interval), or Student's t for a t interval; so a claim whose p is below
    :data:`ALPHA` has an interval that excludes its null. NaN where the interval is missing or too small."""
    _check_form(form, paper_value, margin)
    if any(math.isnan(t) for t in (est.value, est.low, est.high)) or est.too_small:
        return float("nan")
    if est.draws:
        d = np.asarray(est.draws)

        def above(x):  # p of "the effect is <= x"
            return float(np.mean(d <= x))

        def below(x):
            return float(np.mean(d >= x))
    else:
        se, dist = _z(est)

        def above(x):
            return float(dist.sf((est.value - x) / se)) if se > 0 else float(est.value <= x)

        def below(x):
            return float(dist.cdf((est.value - x) / se)) if se > 0 else float(est.value >= x)

    if form in ("increase", "greater"):
        return above(0.0)
    if form in ("decrease", "less"):
        return below(0.0)
    if form == "at_most":
        return below(paper_value + (margin or 0.0))
    if form == "at_least":
        return above(paper_value - (margin or 0.0))
    return max(above(-margin), below(margin))


def detectable(est: Estimate, power: float = POWER) -> float:
    """The smallest true effect this run would detect (its one-sided test at :data:`ALPHA` rejecting "no effect")
    with probability ``power``, from the run's own spread: ``(z_{1-alpha} + z_power) * se`` with ``se`` the standard
    error behind the interval (Student's t quantiles for a t interval over rounds). NaN without an interval."""
    if any(math.isnan(t) for t in (est.low, est.high)) or est.too_small:
        return float("nan")
    se, dist = _z(est)
    return float((dist.ppf(1 - ALPHA) + dist.ppf(power)) * se)


def power_note(pc: "PaperClaim", est: Estimate) -> str:
    """The power line beside a claim: the smallest effect the run detects with 80% power, and whether the
    paper's effect (its figure, its margin or bound, else :data:`DEFAULT_EFFECT`) is above it."""
    mde = detectable(est)
    if math.isnan(mde):
        return ("power unknown: no interval at this size (one round, too few images, or no spread), so this run "
                "cannot decide the claim")
    effect, stated = pc.effect
    size = f"{pc.scale * effect:.{pc.digits}f}{pc.unit}"
    if not stated:
        what = f"an effect of {size} (the paper states none)"
    else:
        what = ("the bound" if pc.form in ("at_most", "at_least") else "the paper's figure") + f" ({size})"
    sign = "above" if effect >= mde else "below"
    tail = "" if effect >= mde else ": this run cannot decide it"
    return f"detects {pc.scale * mde:.{pc.digits}f}{pc.unit} with 80% power; {what} is {sign} it{tail}"


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


@dataclass(frozen=True)
class PaperClaim:
    """A paper's claim as a chapter tests it: the words, the paper's figure (quoted) and where it is, what we
    measure for it, and its logical form (one of :data:`FORMS`; see :func:`verdict`; values in the units of the
    estimate, e.g. 0.468 for +46.8 %). ``unit``, ``scale``, ``digits`` and ``signed`` say how the estimate is
    shown. ``role`` (:data:`ROLES`) says whether it is counted: ``primary`` claims are the papers' statements as
    made. ``worlds``: the true value of the measured quantity ``(right, wrong)`` in a world built to the paper's
    statement and in one where it is wrong (every role but ``construction`` declares them); ``why``: for a
    ``construction`` or ``setup`` row, why it is not evidence about the paper. Chapter modules list theirs in
    ``PAPER_CLAIMS``: the one place per chapter where the papers' numbers are typed. A figure the summaries in
    ``../shared/papers`` do not give is never a ``paper_value`` (it is quoted in ``paper`` as "not in our
    summary" and judged for direction only)."""

    claim: str
    paper: str
    source: str
    measure: str
    form: str = "increase"
    paper_value: float | None = None
    margin: float | None = None
    size_tolerance: float = SIZE_TOLERANCE
    unit: str = "%"
    scale: float = 100.0
    digits: int = 1
    signed: bool = True
    role: str = "exploratory"
    worlds: tuple[float, float] | None = None
    why: str = ""

    def __post_init__(self):
        _check_form(self.form, self.paper_value, self.margin)
        if self.role not in ROLES:
            raise ValueError(f"Unknown claim role {self.role!r}: choose one of {ROLES}.")
        if self.role in ("construction", "setup") and not self.why:
            raise ValueError(f"a {self.role!r} claim says why it is not evidence about the paper (why=...)")
        if self.worlds is not None and len(self.worlds) != 2:
            raise ValueError(f"worlds are (paper right, paper wrong), got {self.worlds!r}")

    @property
    def addition(self) -> bool:
        return self.role == "addition"

    @property
    def counted(self) -> bool:
        """Whether the ledger counts it (a primary claim of the paper)."""
        return self.role == "primary"

    @property
    def effect(self) -> tuple[float, bool]:
        """``(size, stated)``: the effect the power line compares with: the paper's figure or bound, a no-change
        margin, else :data:`DEFAULT_EFFECT` (``stated`` False)."""
        if self.paper_value:
            return abs(self.paper_value), True
        if self.margin:
            return abs(self.margin), False
        return DEFAULT_EFFECT, False

    def verdict(self, est: Estimate) -> str:
        return verdict(est, self.form, self.paper_value, self.margin, self.size_tolerance)

    def p_value(self, est: Estimate) -> float:
        return p_value(est, self.form, self.paper_value, self.margin)

    def fmt(self, est: Estimate) -> str:
        return est.fmt(self.scale, self.digits, self.unit, self.signed)


#: what a claim's "ours" and power line read when the run could not measure it (:func:`unmeasured`)
UNMEASURED = "not measured at this preset"


def unmeasured() -> Estimate:
    """The estimate of a claim this run cannot measure (a grid without the models or budgets it compares): its
    row reads :data:`UNMEASURED` and "inconclusive at this size". A chapter says so explicitly; a claim with no
    estimate at all is an error (:func:`claims_table`)."""
    return Estimate(float("nan"), float("nan"), float("nan"), 0, "unmeasured")


def judge(chapter: str, claim_id: str, pc: PaperClaim, est: Estimate) -> dict:
    """One row of a paper-vs-ours table (columns :data:`CLAIM_COLUMNS`, ``holm`` left to :func:`claims_table`):
    the paper's figure (quoted, with its source), ours with its interval, the verdict of the claim's form, its
    one-sided p-value, its role and, for a primary claim, the power line."""
    if est.method == "unmeasured":
        return {"chapter": chapter, "claim_id": claim_id, "claim": pc.claim, "paper": pc.paper, "source": pc.source,
                "measure": pc.measure, "ours": UNMEASURED, "value": est.value, "low": est.low, "high": est.high,
                "verdict": VERDICTS[3], "n": 0, "unit": pc.unit, "form": pc.form, "p": float("nan"), "holm": "",
                "role": pc.role, "detectable": float("nan"), "power": UNMEASURED if pc.counted else ""}
    return {"chapter": chapter, "claim_id": claim_id, "claim": pc.claim, "paper": pc.paper, "source": pc.source,
            "measure": pc.measure, "ours": pc.fmt(est), "value": est.value, "low": est.low, "high": est.high,
            "verdict": pc.verdict(est), "n": est.n, "unit": pc.unit, "form": pc.form, "p": pc.p_value(est),
            "holm": "", "role": pc.role, "detectable": detectable(est),
            "power": power_note(pc, est) if pc.counted else ""}


def holm_reading(p, counted) -> list[str]:
    """Holm's reading of the ``counted`` rows' p-values together: "holds" where the claim's null is rejected at
    one-sided :data:`ALPHA` after the adjustment, "does not hold" where it is not, "" for rows not counted or
    not tested."""
    p = np.where(np.asarray(counted, bool), np.asarray(p, dtype=float), np.nan)
    adj = holm(p)
    return [HOLM[0] if a < ALPHA else HOLM[1] if np.isfinite(a) else "" for a in adj]


def claims_table(chapter: str, claims: dict, estimates: dict):
    """A chapter's paper-vs-ours table: one :func:`judge` row per claim of ``claims`` (id -> PaperClaim), in their
    order, from ``estimates`` (id -> Estimate), with Holm's reading over the chapter's primary claims
    (:func:`holm_reading`; the ledger reads each paper's primary claims across its chapters).

    Every declared claim needs an estimate (:func:`unmeasured` where the run cannot measure it) and every
    estimate a declared claim: either mismatch raises :class:`~robustnb.config.ConfigError` naming the ids, so a
    misspelt or forgotten id never turns into a silent "not measured"."""
    import pandas as pd

    from robustnb.config import ConfigError  # here: stats itself imports no torch

    unknown = [cid for cid in estimates if cid not in claims]
    if unknown:
        raise ConfigError(f"{chapter}: estimates for claims it does not declare: {unknown}; declared are "
                          f"{list(claims)}.")
    missing = [cid for cid in claims if cid not in estimates]
    if missing:
        raise ConfigError(f"{chapter}: no estimate for the declared claims {missing}: measure them, or give "
                          "stats.unmeasured() where this run cannot.")
    rows = [judge(chapter, cid, pc, estimates[cid]) for cid, pc in claims.items()]
    frame = pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))
    if len(frame):
        frame["holm"] = holm_reading(frame["p"], frame["role"] == "primary")
    return frame


__all__ = ["ALPHA", "CONFIDENCE", "VERDICTS", "FORMS", "HOLM", "ROLES", "POWER", "DEFAULT_EFFECT", "SIZE_TOLERANCE",
           "CLAIM_COLUMNS", "MIN_ITEMS", "UNMEASURED", "Estimate", "PaperClaim", "unmeasured", "judge", "claims_table", "holm", "holm_reading",
           "p_value", "detectable", "power_note", "mean_ci", "paired_diff_ci", "paired_stat_ci",
           "ratio_ci",
           "seeds_ci", "verdict"]
