"""`components.pruning.search`: stepped search to a params/MACs target, seeds, step records."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from components.config import PruneConfig
from components.modeling.architectures import count_params
from components.pruning.macs import count_macs
from components.pruning.search import prune, prune_structured
from components.pruning.surgery import prunable_groups
from tests.helpers_pruning import CONFIGS, SHAPE, K, make


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("target", ["params", "macs"])
def test_target_search_reduces_params_or_macs_by_the_requested_share(name, target):
    cfg = CONFIGS[name]
    model = make(cfg)
    before = count_params(model) if target == "params" else count_macs(model, SHAPE)
    result = prune(model, cfg, SHAPE, K, evaluate=lambda m: np.ones(24, bool), target=target,
                   target_ratio=0.4, steps=2, max_accuracy_drop=1.0)
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
        prune(make(cfg), cfg, SHAPE, K, evaluate=lambda m: np.ones(4, bool), target_ratio=ratio)
    with pytest.raises(ValidationError, match=r"target_ratio must be in \[0, 1\)"):
        PruneConfig(target_ratio=ratio)
    with pytest.raises(ValidationError, match=r"sparsity must be in \[0, 1\)"):
        PruneConfig(sparsity=ratio)


def _vector(wrong: int, n: int = 400) -> np.ndarray:
    """Per-sample correctness with the first ``wrong`` samples wrong."""
    out = np.ones(n, dtype=bool)
    out[:wrong] = False
    return out


def test_target_search_returns_the_step_chosen_by_constructed_correctness():
    cfg = CONFIGS["cnn_gap"]
    model = make(cfg)
    # unpruned, then steps 1..4: 2 wrong and 4 wrong pass (3-point margin, n=400); 10 wrong is
    # a 2.5-point drop whose upper bound is 4.1 points (rejected); 6 wrong passes undecidably
    vals = iter([_vector(w) for w in (0, 2, 4, 10, 6)])
    tuned: list[tuple[int, int]] = []
    result = prune(model, cfg, SHAPE, K, evaluate=lambda m: next(vals), target="macs",
                   target_ratio=0.6, steps=4, max_accuracy_drop=0.03,
                   finetune=lambda m, seed: tuned.append((count_params(m), seed)))
    sizes = [t[0] for t in tuned]
    assert len(tuned) == 4 and sizes == sorted(sizes, reverse=True) and {t[1] for t in tuned} == {0}
    assert result.chosen_step == 2 and result.base_accuracy == 1.0
    assert count_params(result.model) == result.steps[1].params == sizes[1]
    assert result.arch.channels == [c.size for c in prunable_groups(result.model, result.arch)][:2]
    assert [(r.passes, r.decidable) for r in result.steps] == [
        (True, True), (True, True), (False, False), (True, False)]
    assert result.steps[2].val_drop["drop"] < 0.03 < result.steps[2].val_drop["upper"]
    assert "step 3: ratio" in result.reason and "not shown within margin" in result.reason
    assert "step 4" in result.reason and "undecidable" in result.steps[3].note
    assert result.reason.endswith(result.chosen_reason)
    assert result.chosen_reason.startswith("step 2: the largest macs reduction")

    vals = iter([_vector(0), _vector(200)])
    result = prune(model, cfg, SHAPE, K, evaluate=lambda m: next(vals), target_ratio=0.5)
    assert result.chosen_step == 0 and result.model is model
    assert "unpruned model kept" in result.chosen_reason


def test_each_step_is_finetuned_over_seeds_and_the_best_val_seed_is_kept():
    cfg = CONFIGS["cnn_gap"]
    model = make(cfg)
    wrong_by_seed = {0: 8, 1: 2, 2: 5}  # seed 1 is the best on val

    def finetune(m, seed):
        m.seed_tag = seed

    result = prune(model, cfg, SHAPE, K, target_ratio=0.3, steps=1, seeds=3, finetune=finetune,
                   evaluate=lambda m: _vector(wrong_by_seed.get(getattr(m, "seed_tag", -1), 0)),
                   evaluate_test=lambda m: _vector(0, 50), max_accuracy_drop=0.05)
    rec = result.steps[0]
    assert rec.seeds["best_seed"] == 1 and result.model.seed_tag == 1
    assert rec.val_accuracy == pytest.approx(1 - 2 / 400)
    assert rec.seeds["val_accuracy"]["n"] == 3
    assert rec.seeds["val_accuracy"]["mean"] == pytest.approx(1 - 5 / 400)
    assert rec.seeds["val_accuracy"]["std"] > 0
    assert rec.test["n"] == 50 and rec.test["ci_low"] < 1.0 == rec.test["accuracy"]
