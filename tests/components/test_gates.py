"""Promotion decisions on constructed metrics: gates, ties, missing champion, policy variants."""

from __future__ import annotations

import pytest

from components.config import PromotionPolicy, RegisterConfig
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
