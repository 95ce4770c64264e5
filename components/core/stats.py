"""Paired accuracy statistics: every accuracy decision in the pipeline is made with these.

Prune step choice, int8 fallback, variant selection and promotion gates all compare a candidate
model with a reference model *on the same samples*, so the comparison is paired: only the
discordant samples (one model right, the other wrong) carry information about the difference.
Inputs are boolean per-sample correctness vectors, shape (N,). Accuracies, drops and margins are
fractions in [0, 1]; human-readable reasons print them in percentage points.

Only numpy and scipy: this module sits on the ground floor of the import graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _sps

METHODS = ("newcombe", "bootstrap")


def _z(confidence: float) -> float:
    """Two-sided standard normal quantile for `confidence` (0.95 -> 1.959964)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(_sps.norm.ppf(0.5 + confidence / 2))


def wilson_interval(correct: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for the proportion `correct / n`; `(0.0, 1.0)` when n == 0."""
    if n < 0 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n, got correct={correct}, n={n}")
    z = _z(confidence)
    if n == 0:
        return 0.0, 1.0
    z2 = z * z
    centre = (correct + z2 / 2) / (n + z2)
    half = z / (n + z2) * math.sqrt(correct * (n - correct) / n + z2 / 4)
    # The bounds are exactly 0 (1) when nothing (everything) is correct; pin them so rounding
    # never puts them outside [0, 1].
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def _as_correctness(x: np.ndarray, name: str) -> np.ndarray:
    """Validate a per-sample correctness vector, shape (N,), and return it as bool."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one entry per sample), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: no samples to compare")
    if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
        # Labels or scores passed by mistake would otherwise be read as "correct".
        raise ValueError(f"{name} must hold booleans or 0/1 values, not labels or scores")
    return arr.astype(bool)


def accuracy_summary(correct: np.ndarray, confidence: float = 0.95) -> dict[str, float | int]:
    """Accuracy of one model with its Wilson interval, from a per-sample correctness vector."""
    hits = _as_correctness(correct, "correct")
    k, n = int(hits.sum()), int(hits.size)
    low, high = wilson_interval(k, n, confidence)
    return {"accuracy": round(k / n, 6), "n": n, "ci_low": round(low, 6),
            "ci_high": round(high, 6), "confidence": confidence}


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: a binomial(b + c, 1/2) test on the discordant pairs.

    `b` counts samples the reference got right and the candidate wrong, `c` the reverse.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(_sps.binomtest(min(b, c), b + c, 0.5).pvalue)


def _newcombe(a: int, b: int, c: int, d: int, confidence: float) -> tuple[float, float]:
    """Newcombe (1998) hybrid score interval ("method 10") for p1 - p2 in a paired 2x2 table.

    Rows are the reference (right, wrong), columns the candidate: a = both right, b = only the
    reference right, c = only the candidate right, d = both wrong; p1 = (a+b)/n, p2 = (a+c)/n.
    """
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, confidence)
    l2, u2 = wilson_interval(a + c, n, confidence)
    # phi: continuity-corrected correlation between the two margins (0 if any margin is empty).
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    if margins == 0 or 0 <= cross <= n / 2:
        phi = 0.0
    else:
        phi = (cross - n / 2 if cross > n / 2 else cross) / math.sqrt(margins)
    diff = p1 - p2
    low = diff - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)
                               + (u2 - p2) ** 2))
    high = diff + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)
                                + (u1 - p1) ** 2))
    return max(-1.0, low), min(1.0, high)


def _bootstrap_drops(b: int, c: int, n: int, seed: int, resamples: int) -> np.ndarray:
    """Paired-bootstrap replicates of the drop, shape (resamples,).

    Resampling n samples with replacement only changes how many fall in each of the three kinds
    (only reference right, only candidate right, concordant), so one multinomial draw per
    replicate is the same bootstrap as resampling indices, without an (resamples, n) array.
    """
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [b / n, c / n, (n - b - c) / n], size=resamples)
    return (counts[:, 0] - counts[:, 1]) / n


def paired_drop(reference_correct: np.ndarray, candidate_correct: np.ndarray,
                confidence: float = 0.95, method: str = "newcombe", seed: int = 0,
                resamples: int = 10_000) -> dict[str, Any]:
    """Accuracy drop (reference minus candidate) on the same samples, with its uncertainty.

    `upper` is a one-sided upper bound at `confidence` (95% one-sided = the upper end of the 90%
    two-sided interval); `ci_low`/`ci_high` are the two-sided interval at `confidence`.
    `method` is "newcombe" (hybrid score interval) or "bootstrap" (paired percentile bootstrap,
    seeded; it degenerates to [0, 0] when the models never disagree, Newcombe does not).
    Values are left unrounded so that gates compare at full precision.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1) for a one-sided bound, got {confidence}")
    ref = _as_correctness(reference_correct, "reference_correct")
    cand = _as_correctness(candidate_correct, "candidate_correct")
    if ref.size != cand.size:
        raise ValueError(f"reference_correct has {ref.size} samples but candidate_correct has "
                         f"{cand.size}: a paired comparison needs the same samples")
    n = int(ref.size)
    b, c = int((ref & ~cand).sum()), int((~ref & cand).sum())
    a = int((ref & cand).sum())
    d = n - a - b - c
    if method == "newcombe":
        ci_low, ci_high = _newcombe(a, b, c, d, confidence)
        upper = _newcombe(a, b, c, d, 2 * confidence - 1)[1]
    else:
        drops = _bootstrap_drops(b, c, n, seed, resamples)
        q = np.quantile(drops, [(1 - confidence) / 2, (1 + confidence) / 2, confidence])
        ci_low, ci_high, upper = (float(v) for v in q)
    return {"drop": (b - c) / n, "upper": upper, "ci_low": ci_low, "ci_high": ci_high, "n": n,
            "b": b, "c": c, "p_mcnemar": mcnemar_exact(b, c), "method": method,
            "confidence": confidence}


def within_margin(drop: dict[str, Any], margin: float) -> bool:
    """True only when the candidate is shown at most `margin` worse: `drop["upper"] <= margin`."""
    return bool(drop["upper"] <= margin)


@dataclass(frozen=True)
class Comparison:
    """A paired candidate-vs-reference decision: the statistics, the verdict and why."""

    drop: dict[str, Any]  # as returned by paired_drop
    margin: float
    passes: bool  # the one-sided upper bound of the drop is within the margin
    decidable: bool  # False when the two-sided interval straddles the margin
    reason: str


def compare(reference_correct: np.ndarray, candidate_correct: np.ndarray, margin: float,
            confidence: float = 0.95) -> Comparison:
    """Decide whether the candidate is at most `margin` (a fraction) less accurate, with reason."""
    drop = paired_drop(reference_correct, candidate_correct, confidence)
    passes = within_margin(drop, margin)
    decidable = not drop["ci_low"] <= margin < drop["ci_high"]
    level = f"{100 * confidence:g}%"
    reason = (f"drop {100 * drop['drop']:.2f} points, {level} upper bound "
              f"{100 * drop['upper']:.2f} {'<=' if passes else '>'} margin {100 * margin:.2f} "
              f"points: {'within margin' if passes else 'not shown within margin'}")
    if not decidable:
        reason += (f"; {level} interval [{100 * drop['ci_low']:.2f}, "
                   f"{100 * drop['ci_high']:.2f}] straddles the margin: interval too wide to "
                   f"decide")
    return Comparison(drop=drop, margin=margin, passes=passes, decidable=decidable, reason=reason)


def mean_spread(values: list[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation (ddof=1; 0 for one value), min and max, e.g. over seeds."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("mean_spread needs at least one value")
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "min": float(arr.min()),
            "max": float(arr.max()), "n": int(arr.size)}
