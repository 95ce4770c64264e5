"""`components.pruning.choice`: which step is kept, on constructed tables (no training)."""

from __future__ import annotations

import numpy as np

from components.core.stats import compare
from components.core.timing import faster
from components.pruning.choice import StepRecord, select_step

MARGIN = 0.03  # n=400: 2 wrong passes; 10 wrong (2.5 points) fails; 6 wrong is undecidable


def _vector(wrong: int, n: int = 400) -> np.ndarray:
    out = np.ones(n, dtype=bool)
    out[:wrong] = False
    return out


def _record(step: int, reduction: float, wrong: int, p50: float | None = None,
            ref: float = 1.0, spread: float = 0.01) -> StepRecord:
    cmp = compare(_vector(0), _vector(wrong), MARGIN)
    timing = {}
    if p50 is not None:
        cand, base = {"p50_ms": p50, "spread_ms": spread}, {"p50_ms": ref, "spread_ms": spread}
        timing = {"p50_ms": p50, "spread_ms": spread, "unpruned_p50_ms": ref,
                  "unpruned_spread_ms": spread, "faster": faster(cand, base),
                  "slower": faster(base, cand)}
    return StepRecord(step, 0.1, reduction, reduction, 0, 0, 1 - wrong / 400, cmp.passes,
                      cmp.decidable, "", val_drop={**cmp.drop, "margin": MARGIN}, **timing)


def test_point_estimate_within_margin_with_failing_interval_is_rejected():
    records = [_record(1, 0.2, 2), _record(2, 0.4, 10)]
    assert records[1].val_drop["drop"] < MARGIN < records[1].val_drop["upper"]
    assert not records[1].passes
    step, reason = select_step(records, "macs")
    assert step == 1 and reason.startswith("step 1: the largest macs reduction (-20.0%)")


def test_passing_step_not_faster_loses_to_a_smaller_faster_one():
    records = [_record(1, 0.2, 1, p50=0.5), _record(2, 0.4, 1, p50=0.99)]
    assert records[0].faster and not records[1].faster and not records[1].slower
    step, reason = select_step(records)
    assert step == 1 and "measurably faster" in reason
    # with neither faster, the smaller model is kept since its speed is not worse
    step, reason = select_step([_record(1, 0.2, 1, p50=1.0), _record(2, 0.4, 1, p50=0.99)])
    assert step == 2 and "not worse" in reason


def test_a_measurably_slower_step_is_never_kept():
    assert select_step([_record(1, 0.2, 1, p50=1.0), _record(2, 0.4, 1, p50=1.5)])[0] == 1
    step, reason = select_step([_record(1, 0.2, 0, p50=1.5)])
    assert step == 0 and "slower" in reason


def test_undecidable_step_keeps_the_safer_less_pruned_candidate():
    records = [_record(1, 0.2, 2, p50=0.5), _record(2, 0.4, 6, p50=0.3)]
    assert records[1].passes and not records[1].decidable
    step, reason = select_step(records)
    assert step == 1 and "step(s) 2 passed" in reason and "undecidable" in reason
    step, reason = select_step(records[1:])
    assert step == 0 and reason.startswith("unpruned model kept") and "undecidable" in reason


def test_without_latency_the_largest_qualifying_reduction_is_kept():
    records = [_record(1, 0.2, 0), _record(2, 0.4, 3), _record(3, 0.6, 30)]
    step, reason = select_step(records)
    assert step == 2 and "latency not measured" in reason
    assert records[1].to_dict()["qualifies"] and not records[2].to_dict()["qualifies"]
