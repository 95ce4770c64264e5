"""`components.evaluation.selection` on constructed measurements: budgets, then the pick."""

from __future__ import annotations

import numpy as np
import pytest

from components.config import Budgets
from components.core.timing import faster
from components.evaluation.profiles import pack_correct
from components.evaluation.selection import (
    accuracy_interval,
    check_budgets,
    judge_budgets,
    select_candidate,
    select_profile,
    unpack_correct,
)


def m(acc: float, p50: float, meets: bool = True) -> dict:
    return {"accuracy": acc, "latency_ms_p50": p50, "meets_budget": meets}


def measured(correct: np.ndarray, p50: float, spread: float = 0.0, size: int = 1000,
             meets: bool = True) -> dict:
    """A measurement whose val correctness is ``correct`` (samples "s"), as `evaluate` has it."""
    return {"val_accuracy": float(np.mean(correct)), "accuracy": float(np.mean(correct)),
            "val_correct": pack_correct(correct, "s"), "latency_ms_p50": p50,
            "latency_spread_ms": spread, "size_bytes": size, "meets_budget": meets}


def flipped(n: int, wrong: list[int]) -> np.ndarray:
    correct = np.ones(n, dtype=bool)
    correct[wrong] = False
    return correct


def test_select_candidate_prefers_budget_meeting_best_accuracy():
    picked = select_candidate({"big": m(0.99, 0.5, meets=False), "a": m(0.97, 0.1),
                               "b": m(0.98, 0.3)})
    assert picked == "b"  # without per-sample correctness only equal accuracy is equivalent


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
    assert select_profile({})["reason"] == "no candidate meets every budget"


def test_an_equivalent_faster_candidate_is_chosen_over_the_more_accurate_reference():
    n = 400
    pick = select_profile({"fp32": measured(flipped(n, [0]), 0.0110, 0.0002),
                           "student": measured(flipped(n, [0, 1]), 0.0079, 0.0003)}, 0.02)
    assert pick["reference"] == "fp32" and pick["equivalent"] == ["student"]
    assert pick["chosen"] == "student"
    assert pick["drops"]["student"]["paired"] and pick["drops"]["student"]["upper"] <= 0.02
    assert "fp32 and student are accuracy-equivalent (drop upper bound" in pick["reason"]
    assert "student is faster than fp32 by more than the spread (7.9 vs 11.0 us)" in pick["reason"]


def test_a_candidate_not_shown_within_the_margin_is_not_chosen_however_fast():
    n = 400
    pick = select_profile({"fp32": measured(flipped(n, []), 0.0110),
                           "int8": measured(flipped(n, list(range(6))), 0.0020)}, 0.01)
    assert pick["chosen"] == "fp32" and pick["equivalent"] == []
    assert "int8 is not shown within the margin" in pick["reason"]


def test_latency_inside_the_spread_goes_to_the_smallest_model():
    n = 400
    pick = select_profile({"fp32": measured(flipped(n, []), 0.0110, 0.001, size=40_000),
                           "int8": measured(flipped(n, []), 0.0105, 0.001, size=12_000),
                           "fp16": measured(flipped(n, []), 0.0108, 0.001, size=20_000)}, 0.02)
    assert pick["chosen"] == "int8"
    assert "within the latency spread" in pick["reason"]
    assert "int8 is the smallest" in pick["reason"]


def test_the_closure_keeps_a_more_accurate_faster_candidate_the_pairing_missed():
    # "low" (5 errors more than the reference) passes the paired test; "mid" (4 more, but
    # right on 8 of the reference's errors and wrong on 12 other samples: 20 discordant)
    # fails it. mid is more accurate than an equivalent candidate, so it is compared too,
    # and it is the fastest.
    n = 600
    ref = flipped(n, list(range(10)))
    low = flipped(n, list(range(15)))
    mid = flipped(n, [8, 9, *range(200, 212)])
    pick = select_profile({"ref": measured(ref, 0.05), "low": measured(low, 0.04),
                           "mid": measured(mid, 0.01)}, 0.02)
    assert not pick["drops"]["mid"]["passes"] and pick["drops"]["low"]["passes"]
    assert pick["chosen"] == "mid"
    assert "mid is at least as accurate as an equivalent one" in pick["reason"]


def test_no_profile_gets_a_candidate_slower_than_an_equally_accurate_one():
    rng = np.random.default_rng(0)
    for trial in range(150):
        n = int(rng.integers(50, 300))
        base = rng.random(n) < 0.97
        table = {}
        for k in range(int(rng.integers(2, 7))):
            correct = base.copy()
            flip = rng.random(n) < rng.choice([0.0, 0.005, 0.02, 0.05])
            correct[flip] = ~correct[flip]
            table[f"c{k}"] = measured(correct, float(rng.uniform(0.005, 0.05)),
                                      float(rng.choice([0.0, 0.001, 0.01])),
                                      int(rng.integers(1000, 50_000)),
                                      meets=bool(rng.random() < 0.85))
        chosen = select_profile(table, float(rng.choice([0.01, 0.02, 0.05])))["chosen"]
        if chosen is None:
            assert not any(t["meets_budget"] for t in table.values())
            continue
        c = table[chosen]
        for name, other in table.items():
            if name == chosen or not other["meets_budget"]:
                continue
            as_good = other["val_accuracy"] >= c["val_accuracy"]
            quicker = faster({"p50_ms": other["latency_ms_p50"],
                              "spread_ms": other["latency_spread_ms"]},
                             {"p50_ms": c["latency_ms_p50"], "spread_ms": c["latency_spread_ms"]})
            assert not (as_good and quicker), (trial, chosen, name)


def test_correctness_round_trips_through_its_packed_form_with_an_interval():
    correct = np.array([True, False, True, True, True, False, True, True, True, False, True])
    record = pack_correct(correct, "abc")
    assert record["n"] == 11 and len(record["bits"]) <= 4
    assert unpack_correct(record).tolist() == correct.tolist()
    ci = accuracy_interval({"val_correct": record})
    assert ci["n"] == 11 and ci["ci_low"] < 8 / 11 < ci["ci_high"]
    assert accuracy_interval({}) is None


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


@pytest.mark.parametrize(("p95", "spread", "fails", "verdict"), [
    (19.8, 0.6, False, "passes within the noise"),  # under the limit, but by less than the noise
    (20.4, 0.6, False, "passes within the noise"),  # over it by less than the spread
    (21.0, 0.6, True, "fails"),  # over it by more than the spread
    (18.0, 0.6, False, None),  # clear: no margin recorded
])
def test_a_latency_budget_is_judged_with_its_spread(p95, spread, fails, verdict):
    m = {"latency_ms_p95": p95, "latency_p95_spread_ms": spread}
    failed, margins = judge_budgets(m, Budgets(max_latency_ms_p95=20.0))
    assert bool(failed) == fails
    if verdict is None:
        assert margins == {}
    else:
        entry = margins["latency_ms_p95"]
        assert entry["verdict"] == verdict and entry["margin"] == pytest.approx(20.0 - p95)
        assert entry["note"] == f"p95 {p95:g} ms +- {spread:g} vs budget 20"


def test_an_accuracy_budget_inside_the_interval_is_recorded_as_near():
    ci = {"accuracy": 0.97, "n": 269, "ci_low": 0.94, "ci_high": 0.985, "confidence": 0.95}
    failed, margins = judge_budgets({"val_accuracy": 0.975, "val_accuracy_ci": ci},
                                    Budgets(min_accuracy=0.97))
    assert failed == [] and margins["val_accuracy"]["verdict"] == "passes within the noise"
    assert margins["val_accuracy"]["note"].startswith("val_accuracy 0.9750 [0.9400, 0.9850] n=269")
