"""`components.pruning.search`: stepped search to a params/MACs target, and step selection."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from components.config import PruneConfig
from components.modeling.architectures import count_params
from components.pruning.macs import count_macs
from components.pruning.search import StepRecord, prune, prune_structured, select_step
from components.pruning.surgery import prunable_groups
from tests.helpers_pruning import CONFIGS, SHAPE, K, make


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("target", ["params", "macs"])
def test_target_search_reduces_params_or_macs_by_the_requested_share(name, target):
    cfg = CONFIGS[name]
    model = make(cfg)
    before = count_params(model) if target == "params" else count_macs(model, SHAPE)
    result = prune(model, cfg, SHAPE, K, evaluate=lambda m: 1.0, target=target,
                   target_ratio=0.4, steps=2)
    after = count_params(result.model) if target == "params" else count_macs(result.model, SHAPE)
    # channel granularity in these tiny models: at least the target, at most ~12 points over
    assert 0.4 <= 1 - after / before <= 0.52
    assert result.chosen_step == 2
    assert result.chosen.achieved_reduction == pytest.approx(1 - after / before)


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1])
def test_ratio_outside_unit_interval_is_refused(ratio):
    cfg = CONFIGS["cnn_gap"]
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_structured(make(cfg), cfg, SHAPE, K, ratio, "l1")
    with pytest.raises(ValueError, match=r"target_ratio must be in \[0, 1\)"):
        prune(make(cfg), cfg, SHAPE, K, evaluate=lambda m: 1.0, target_ratio=ratio)
    with pytest.raises(ValidationError, match=r"target_ratio must be in \[0, 1\)"):
        PruneConfig(target_ratio=ratio)
    with pytest.raises(ValidationError, match=r"sparsity must be in \[0, 1\)"):
        PruneConfig(sparsity=ratio)


def _records(accs: list[float]) -> list[StepRecord]:
    return [StepRecord(k, 0.1, 0.1 * k, 0.1 * k, 0, 0, a, True, "")
            for k, a in enumerate(accs, start=1)]


def test_selection_picks_the_largest_reduction_within_tolerance():
    assert select_step(0.99, _records([0.985, 0.97, 0.981, 0.95]), 0.01)[0] == 3
    assert select_step(0.985, _records([0.98]), 0.005)[0] == 1  # boundary: exactly at the budget
    step, reason = select_step(0.99, _records([0.97, 0.96]), 0.01)
    assert step == 0 and "unpruned" in reason


def test_target_search_returns_the_step_chosen_by_constructed_accuracies():
    cfg = CONFIGS["cnn_gap"]
    model = make(cfg)
    accs = iter([0.99, 0.985, 0.982, 0.96, 0.95])  # unpruned, then steps 1..4
    tuned: list[int] = []
    result = prune(model, cfg, SHAPE, K, evaluate=lambda m: next(accs), target="macs",
                   target_ratio=0.6, steps=4, finetune=lambda m: tuned.append(count_params(m)),
                   max_accuracy_drop=0.01)
    assert len(tuned) == 4 and tuned == sorted(tuned, reverse=True)
    assert result.chosen_step == 2 and result.base_accuracy == 0.99
    assert count_params(result.model) == result.steps[1].params == tuned[1]
    assert result.arch.channels == [c.size for c in prunable_groups(result.model, result.arch)][:2]
    assert "step 2: ratio" in result.reason and "(within tolerance)" in result.reason
    assert "step 3" in result.reason and "(outside tolerance)" in result.reason
    assert result.reason.endswith("chosen: step 2: largest reduction within tolerance")

    accs = iter([0.99, 0.5])
    result = prune(model, cfg, SHAPE, K, evaluate=lambda m: next(accs), target_ratio=0.5)
    assert result.chosen_step == 0 and result.model is model
