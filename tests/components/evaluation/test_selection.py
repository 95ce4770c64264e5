"""`components.evaluation.selection` on constructed measurements: budgets, then the pick."""

from __future__ import annotations

from components.config import Budgets
from components.evaluation.selection import check_budgets, select_candidate


def m(acc: float, p50: float, meets: bool = True) -> dict:
    return {"accuracy": acc, "latency_ms_p50": p50, "meets_budget": meets}


def test_select_candidate_prefers_budget_meeting_best_accuracy():
    picked = select_candidate({"big": m(0.99, 0.5, meets=False), "a": m(0.97, 0.1),
                               "b": m(0.98, 0.3)})
    assert picked == "b"


def test_select_candidate_breaks_accuracy_ties_by_p50_latency():
    assert select_candidate({"slow": m(0.98, 0.3), "fast": m(0.98, 0.1)}) == "fast"
    assert select_candidate({"y": m(0.98, 0.1), "x": m(0.98, 0.1)}) == "x"  # then by name


def test_select_candidate_decides_on_val_accuracy_when_measured():
    a = {**m(0.97, 0.1), "val_accuracy": 0.99}  # worse on test, better on val
    b = {**m(0.99, 0.1), "val_accuracy": 0.98}
    assert select_candidate({"a": a, "b": b}) == "a"


def test_select_candidate_returns_none_when_nothing_meets_the_budgets():
    assert select_candidate({"a": m(0.99, 0.1, meets=False)}) is None
    assert select_candidate({}) is None


def test_check_budgets_names_each_broken_budget():
    b = Budgets(max_latency_ms_p95=1.0, max_size_bytes=200_000, max_peak_rss_mb=256,
                min_accuracy=0.97)
    ok = {"latency_ms_p95": 0.5, "size_bytes": 1000, "peak_rss_mb": 60, "accuracy": 0.98}
    assert check_budgets(ok, b) == []
    bad = {**ok, "latency_ms_p95": 1.5, "accuracy": 0.9}
    assert [f.split()[0] for f in check_budgets(bad, b)] == ["latency_ms_p95", "accuracy"]
    assert check_budgets({"error": "boom"}, b) == ["measurement failed: boom"]
    on_val = {**ok, "accuracy": 0.99, "val_accuracy": 0.9}  # the budget is judged on val
    assert [f.split()[0] for f in check_budgets(on_val, b)] == ["val_accuracy"]
