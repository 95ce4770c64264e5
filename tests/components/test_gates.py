"""Promotion decisions on constructed metrics: gates, ties, missing champion, policy variants."""

from __future__ import annotations

import numpy as np
import pytest

from components.config import PromotionPolicy, RegisterConfig
from components.evaluation.profiles import pack_correct
from components.gates import decide, gate_failures

EDGE = "edge-1core"


def metrics(accuracy: float, p50: float = 0.1, meets: bool = True, failed=None,
            server_meets: bool = True, test: float | None = None) -> dict:
    """Per-profile metrics as `evaluate` writes them for one candidate (``accuracy``: val)."""
    return {
        EDGE: {"val_accuracy": accuracy, "accuracy": accuracy if test is None else test,
               "latency_ms_p50": p50, "latency_ms_p95": p50 * 2,
               "size_bytes": 50_000, "meets_budget": meets, "failed_budgets": failed or []},
        "server-cpu": {"val_accuracy": accuracy, "accuracy": accuracy, "latency_ms_p50": 1.0,
                       "meets_budget": server_meets,
                       "failed_budgets": [] if server_meets else ["latency_ms_p95 30 > 20"]},
    }


def test_decide_without_champion_promotes_a_passing_candidate():
    d = decide(metrics(0.98), None, PromotionPolicy())
    assert d.outcome == "champion"
    assert "no champion" in d.reasons[0]


def test_decide_promotes_a_candidate_that_beats_the_champion():
    d = decide(metrics(0.985), metrics(0.98), PromotionPolicy())
    assert d.outcome == "champion"
    assert d.compared["candidate"] == 0.985 and d.compared["champion"] == 0.98
    assert d.compared["improvement"] == pytest.approx(0.005)


def test_decide_tie_does_not_promote():
    d = decide(metrics(0.98), metrics(0.98), PromotionPolicy())
    assert d.outcome == "challenger"
    assert "does not beat" in d.reasons[0]


def test_decide_better_champion_stays():
    d = decide(metrics(0.97), metrics(0.99), PromotionPolicy())
    assert d.outcome == "challenger"
    assert d.compared["improvement"] == pytest.approx(-0.02)


def test_decide_rejects_a_candidate_below_the_accuracy_gate_even_without_champion():
    d = decide(metrics(0.90), None, PromotionPolicy(gates={"min_val_accuracy": 0.95}))
    assert d.outcome == "rejected"
    assert any("min_val_accuracy" in r for r in d.reasons)


def test_decide_compares_val_accuracy_not_the_reported_test_accuracy():
    better_on_test = metrics(0.97, test=0.995)
    d = decide(better_on_test, metrics(0.98, test=0.97), PromotionPolicy())
    assert d.outcome == "challenger" and d.compared["metric"] == "val_accuracy"
    assert d.compared["improvement"] == pytest.approx(-0.01)


def test_decide_rejects_a_candidate_that_breaks_a_budget_on_the_primary_profile():
    d = decide(metrics(0.99, meets=False, failed=["size_bytes 3e+05 > 2e+05"]), metrics(0.95),
               PromotionPolicy())
    assert d.outcome == "rejected"
    assert any("size_bytes" in r for r in d.reasons)


def test_require_all_budgets_decides_whether_other_profiles_budgets_gate():
    candidate = metrics(0.99, server_meets=False)
    assert decide(candidate, None, PromotionPolicy()).outcome == "rejected"
    assert decide(candidate, None, PromotionPolicy(require_all_budgets=False)).outcome == "champion"


def test_decide_rejects_a_candidate_not_measured_on_the_primary_profile():
    d = decide({"server-cpu": metrics(0.99)["server-cpu"]}, None, PromotionPolicy())
    assert d.outcome == "rejected"
    assert "edge-1core" in d.reasons[0]


def test_min_improvement_must_be_exceeded():
    policy = PromotionPolicy(min_improvement=0.01)
    assert decide(metrics(0.985), metrics(0.98), policy).outcome == "challenger"
    assert decide(metrics(0.995), metrics(0.98), policy).outcome == "champion"


def test_max_regression_rejects_a_much_worse_candidate():
    policy = PromotionPolicy(max_regression=0.01)
    assert decide(metrics(0.975), metrics(0.98), policy).outcome == "challenger"
    assert decide(metrics(0.96), metrics(0.98), policy).outcome == "rejected"


def test_lower_is_better_metric_compares_the_other_way():
    policy = PromotionPolicy(primary_metric="latency_ms_p50", gates={})
    assert decide(metrics(0.98, p50=0.05), metrics(0.98, p50=0.1), policy).outcome == "champion"
    assert decide(metrics(0.98, p50=0.2), metrics(0.98, p50=0.1), policy).outcome == "challenger"


def test_max_gate_and_champion_without_the_metric():
    policy = PromotionPolicy(gates={"max_latency_ms_p95": 0.15})
    assert gate_failures(metrics(0.99, p50=0.1), policy)  # p95 0.2 > 0.15
    d = decide(metrics(0.99, p50=0.05), {"server-cpu": {"accuracy": 0.9}}, policy)
    assert d.outcome == "challenger" and "promote by hand" in d.reasons[0]


def test_policy_rejects_unknown_gates_and_keys():
    with pytest.raises(ValueError, match="min_<metric>"):
        PromotionPolicy(gates={"min_f1": 0.9})
    with pytest.raises(ValueError):
        RegisterConfig(policy={"primary_profile": "edge-1core", "bogus": 1})
    with pytest.raises(ValueError):
        PromotionPolicy(min_improvement=-0.1)


def with_correct(wrong: list[int], n: int = 600, samples: str = "val-a") -> dict:
    """`metrics` whose val accuracy comes from per-sample correctness (wrong on ``wrong``)."""
    correct = np.ones(n, dtype=bool)
    correct[wrong] = False
    out = metrics(float(correct.mean()))
    out[EDGE]["val_correct"] = pack_correct(correct, samples)
    return out


def test_paired_decision_promotes_only_a_candidate_shown_better():
    champion = with_correct(list(range(20)))
    clearly = decide(with_correct([0, 1]), champion, PromotionPolicy())
    assert clearly.outcome == "champion" and clearly.compared["paired"]
    assert clearly.compared["n"] == 600 and clearly.compared["gain_lower"] > 0
    assert "paired on 600 samples" in clearly.reasons[0]
    # better on the point value (19 vs 20 errors): the point rule would promote it, the
    # paired one keeps the champion because the interval cannot tell them apart
    barely = decide(with_correct(list(range(19))), champion, PromotionPolicy())
    assert barely.outcome == "challenger"
    assert "interval too wide to decide: the champion stays" in barely.reasons[0]
    assert decide(metrics(0.94 + 0.001), metrics(0.94), PromotionPolicy(gates={})).outcome == \
        "champion"  # the same gain without per-sample data: the point comparison promotes


def test_paired_max_regression_keeps_only_a_candidate_shown_within_it():
    """A challenger must be shown at most max_regression worse: a wide interval rejects."""
    policy = PromotionPolicy(max_regression=0.01)
    champion = with_correct([])
    assert decide(with_correct(list(range(25))), champion, policy).outcome == "rejected"
    # 0.7 pt worse: within 1 pt on the point values, but not shown within it (upper > 1 pt)
    slightly = decide(with_correct([0, 1, 2, 3]), champion, policy)
    assert slightly.outcome == "rejected"
    assert "not shown within max_regression 0.01" in slightly.reasons[0]
    assert decide(metrics(slightly.compared["candidate"]), metrics(1.0), policy).outcome == \
        "challenger"  # the point rule would have kept it
    same = decide(with_correct([]), champion, policy)  # identical on 600: upper bound 0.4 pt
    assert same.outcome == "challenger"


def test_other_samples_or_missing_correctness_fall_back_to_the_point_comparison():
    champion = with_correct(list(range(20)), samples="val-old")
    d = decide(with_correct([0, 1]), champion, PromotionPolicy())
    assert d.outcome == "champion" and d.compared["paired"] is False
    assert any("point comparison (measured on different samples" in r for r in d.reasons)
    d = decide(with_correct([0, 1]), metrics(0.9), PromotionPolicy())
    assert any("point comparison (no per-sample val_correct recorded for one" in r
               for r in d.reasons)


def test_a_latency_gain_inside_the_measured_spreads_does_not_promote():
    policy = PromotionPolicy(primary_metric="latency_ms_p50", gates={})
    fast, slow = metrics(0.98, p50=0.09), metrics(0.98, p50=0.1)
    assert decide(fast, slow, policy).outcome == "champion"  # no spreads: as before
    fast[EDGE]["latency_spread_ms"], slow[EDGE]["latency_spread_ms"] = 0.006, 0.006
    d = decide(fast, slow, policy)
    assert d.outcome == "challenger" and "latency spreads 0.012 added" in d.reasons[1]
