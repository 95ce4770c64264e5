import math

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as sps

from components.core.stats import (
    Comparison,
    accuracy_summary,
    compare,
    mcnemar_exact,
    mean_spread,
    paired_drop,
    wilson_interval,
    within_margin,
)


def paired_vectors(a: int, b: int, c: int, d: int, seed: int = 0):
    """Reference/candidate correctness vectors for a paired 2x2 table, in shuffled order.

    a = both right, b = only the reference right, c = only the candidate right, d = both wrong.
    """
    ref = np.array([True] * a + [True] * b + [False] * c + [False] * d)
    cand = np.array([True] * a + [False] * b + [True] * c + [False] * d)
    order = np.random.default_rng(seed).permutation(ref.size)
    return ref[order], cand[order]


# --- Wilson -------------------------------------------------------------------------------------

# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat Med 17:857-872,
# Table II, method 3 (score interval without continuity correction), 95%.
NEWCOMBE_1998A = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize(("k", "n", "low", "high"), NEWCOMBE_1998A)
def test_wilson_interval_matches_newcombe_1998_table(k, n, low, high):
    got = wilson_interval(k, n)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_edges_are_exact():
    # z^2 / (n + z^2) with z = 1.959964 and n = 10.
    edge = 1.959964**2 / (10 + 1.959964**2)
    assert wilson_interval(0, 10) == pytest.approx((0.0, edge), abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((1 - edge, 1.0), abs=1e-6)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_narrows_with_lower_confidence_and_rejects_bad_counts():
    lo90, hi90 = wilson_interval(81, 263, 0.90)
    lo95, hi95 = wilson_interval(81, 263, 0.95)
    assert lo95 < lo90 < 81 / 263 < hi90 < hi95
    with pytest.raises(ValueError, match="correct"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 10, 1.0)


def test_accuracy_summary_reports_rounded_wilson_interval():
    hits = np.array([True] * 81 + [False] * 182)
    s = accuracy_summary(hits)
    assert s == {"accuracy": round(81 / 263, 6), "n": 263, "confidence": 0.95,
                 "ci_low": pytest.approx(0.2553, abs=5e-5),
                 "ci_high": pytest.approx(0.3662, abs=5e-5)}
    assert s["ci_low"] == round(s["ci_low"], 6)


def test_accuracy_summary_rejects_labels_and_empty_vectors():
    with pytest.raises(ValueError, match="0/1"):
        accuracy_summary(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="empty"):
        accuracy_summary(np.array([], dtype=bool))


# --- McNemar ------------------------------------------------------------------------------------

def test_mcnemar_exact_known_values():
    # 2 * P(X <= 1), X ~ Binomial(7, 1/2) = 2 * 8 / 128.
    assert mcnemar_exact(1, 6) == pytest.approx(0.125, abs=1e-12)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0
    # 2 * P(X <= 0), X ~ Binomial(10, 1/2) = 2 / 1024.
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024, abs=1e-12)


@pytest.mark.parametrize(("b", "c"), [(1, 6), (0, 4), (17, 30), (5, 5)])
def test_mcnemar_exact_is_symmetric(b, c):
    assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


# --- Newcombe paired interval -------------------------------------------------------------------

def brute_wilson(k: int, n: int, z: float) -> tuple[float, float]:
    """Wilson bounds as the roots of the score equation (p_hat - p)^2 = z^2 p (1 - p) / n."""
    p_hat = k / n

    def score(p):
        return (p_hat - p) ** 2 - z * z * p * (1 - p) / n

    # Bracket strictly inside (0, 1): at p_hat = 0 or 1 the equation has a spurious root there.
    low = 0.0 if k == 0 else optimize.brentq(score, 1e-15, min(p_hat, 1 - 1e-12))
    high = 1.0 if k == n else optimize.brentq(score, max(p_hat, 1e-12), 1 - 1e-15)
    return low, high


def brute_newcombe(a: int, b: int, c: int, d: int, confidence: float) -> tuple[float, float]:
    """Newcombe (1998) Stat Med 17:2635-2650, method 10, written from the paper's equations."""
    z = sps.norm.ppf(1 - (1 - confidence) / 2)
    n = a + b + c + d
    theta = (b - c) / n
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = brute_wilson(a + b, n, z)
    l2, u2 = brute_wilson(a + c, n, z)
    big_c = a * d - b * c
    if big_c > n / 2:
        big_c -= n / 2
    elif big_c >= 0:
        big_c = 0
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    phi = 0.0 if denom == 0 else big_c / math.sqrt(denom)
    dl = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    du = math.sqrt((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2)
    return theta - dl, theta + du


def test_newcombe_matches_published_cavo_example():
    # Fagerland, Lydersen & Laake (2017), Statistical Analysis of Contingency Tables, ch. 8:
    # complete response before/after consolidation (Cavo et al. 2012), table [[59, 6], [16, 80]];
    # Newcombe square-and-add interval: -0.0621 (95% CI -0.1186 to -0.0046).
    ref, cand = paired_vectors(59, 6, 16, 80)
    r = paired_drop(ref, cand)
    assert r["drop"] == pytest.approx(-0.0621, abs=5e-5)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((-0.1186, -0.0046), abs=5e-5)
    assert (r["n"], r["b"], r["c"]) == (161, 6, 16)


@pytest.mark.parametrize("table", [(59, 6, 16, 80), (36, 12, 2, 0), (1, 1, 7, 12), (0, 3, 0, 5),
                                   (900, 4, 1, 95), (5, 0, 0, 5), (100, 0, 0, 0), (10, 20, 30, 5)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_newcombe_matches_independent_implementation(table, confidence):
    ref, cand = paired_vectors(*table)
    r = paired_drop(ref, cand, confidence)
    low, high = brute_newcombe(*table, confidence)
    assert r["ci_low"] == pytest.approx(max(-1.0, low), abs=1e-9)
    assert r["ci_high"] == pytest.approx(min(1.0, high), abs=1e-9)
    # One-sided bound at `confidence` is the upper end of the two-sided 2 * confidence - 1.
    assert r["upper"] == pytest.approx(min(1.0, brute_newcombe(*table, 2 * confidence - 1)[1]),
                                       abs=1e-9)
    assert r["ci_low"] <= r["drop"] <= r["upper"] < r["ci_high"]


def test_newcombe_interval_covers_true_difference():
    # Cells: both right, only reference right, only candidate right, both wrong.
    probs = np.array([0.85, 0.05, 0.03, 0.07])
    true_drop = probs[1] - probs[2]
    rng = np.random.default_rng(1)
    tables = rng.multinomial(300, probs, size=400)
    results = [paired_drop(*paired_vectors(*t)) for t in tables]
    two_sided = np.mean([r["ci_low"] <= true_drop <= r["ci_high"] for r in results])
    one_sided = np.mean([true_drop <= r["upper"] for r in results])
    assert two_sided >= 0.93
    assert one_sided >= 0.93


def test_bootstrap_agrees_with_newcombe_on_a_large_sample():
    rng = np.random.default_rng(2)
    ref = rng.random(1000) < 0.9
    flip = rng.random(1000) < 0.06
    cand = ref ^ flip
    newc = paired_drop(ref, cand)
    boot = paired_drop(ref, cand, method="bootstrap")
    assert boot["method"] == "bootstrap" and boot["drop"] == newc["drop"]
    assert abs(boot["upper"] - newc["upper"]) < 0.01
    assert abs(boot["ci_low"] - newc["ci_low"]) < 0.01
    assert abs(boot["ci_high"] - newc["ci_high"]) < 0.01
    assert boot == paired_drop(ref, cand, method="bootstrap", seed=0)  # seeded: reproducible


def test_paired_drop_rejects_mismatched_empty_and_unknown_inputs():
    with pytest.raises(ValueError, match=r"5 samples.*4"):
        paired_drop(np.ones(5, bool), np.ones(4, bool))
    with pytest.raises(ValueError, match="reference_correct is empty"):
        paired_drop(np.array([], bool), np.ones(3, bool))
    with pytest.raises(ValueError, match="candidate_correct is empty"):
        paired_drop(np.ones(3, bool), np.array([], bool))
    with pytest.raises(ValueError, match="method"):
        paired_drop(np.ones(3, bool), np.ones(3, bool), method="wald")


# --- Decisions ----------------------------------------------------------------------------------

def test_point_estimate_passes_but_interval_fails():
    # 268/269 vs 267/269: drop 0.37 points is below a 0.5-point margin, but 269 samples cannot
    # show that the candidate is within it.
    ref, cand = paired_vectors(267, 1, 0, 1)
    result = compare(ref, cand, margin=0.005)
    assert isinstance(result, Comparison)
    assert result.drop["drop"] == pytest.approx(1 / 269) and result.drop["drop"] < 0.005
    assert not result.passes and not within_margin(result.drop, 0.005)
    assert not result.decidable
    assert result.reason.startswith("drop 0.37 points, 95% upper bound ")
    assert "> margin 0.50 points: not shown within margin" in result.reason
    assert "interval too wide to decide" in result.reason


def test_identical_models_on_many_samples_pass():
    rng = np.random.default_rng(3)
    hits = rng.random(10_000) < 0.9
    result = compare(hits, hits.copy(), margin=0.01)
    assert result.drop["drop"] == 0 and result.drop["b"] == result.drop["c"] == 0
    assert result.drop["upper"] < 0.001
    assert result.passes and result.decidable
    assert result.reason.endswith("<= margin 1.00 points: within margin")


def test_clearly_worse_candidate_is_decidably_rejected():
    ref, cand = paired_vectors(800, 150, 10, 40)
    result = compare(ref, cand, margin=0.01)
    assert not result.passes and result.decidable
    assert result.drop["ci_low"] > 0.01 and result.drop["p_mcnemar"] < 1e-6
    assert "too wide" not in result.reason


def test_within_margin_uses_the_upper_bound_only():
    assert within_margin({"drop": 0.0, "upper": 0.01}, 0.01)
    assert not within_margin({"drop": -0.05, "upper": 0.0100001}, 0.01)


# --- Seeds --------------------------------------------------------------------------------------

def test_mean_spread_over_seeds():
    s = mean_spread([0.90, 0.92, 0.94])
    assert s == pytest.approx({"mean": 0.92, "std": 0.02, "min": 0.90, "max": 0.94, "n": 3})
    assert mean_spread([0.5]) == {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5, "n": 1}
    with pytest.raises(ValueError, match="at least one"):
        mean_spread([])
