"""Accuracy-aware pruning: prune in equal steps toward a target, fine-tune, keep the best step.

Each step k of n aims at ``target_ratio * k / n`` fewer params (or MACs) than the unpruned model;
the per-step channel ratio that gets there is found by bisection. After every step the injected
``finetune`` runs and ``evaluate`` measures validation accuracy; the chosen model is the one with
the LARGEST reduction whose accuracy is at most ``max_accuracy_drop`` below the unpruned model's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from components.modeling.architectures import Classifier, build_model, count_params
from components.pruning.importance import IMPORTANCE, Batches
from components.pruning.macs import count_macs
from components.pruning.surgery import (
    apply_pruning,
    candidate_ratios,
    kept_sizes,
    prunable_groups,
    resize_config,
)

Finetune = Callable[[nn.Module], None]  # trains the model in place
Evaluate = Callable[[nn.Module], float]  # -> validation accuracy
# step(model, arch, k) -> (fine-tuned model, its arch, ratio, target reduction, achieved, note)
Step = Callable[[Classifier, Any, int], tuple[Classifier, Any, float, float, float, str]]
TARGETS = ("params", "macs")


@dataclass
class StepRecord:
    step: int
    ratio: float  # structured: channel share removed in this step; unstructured: sparsity
    target_reduction: float  # cumulative share to remove, relative to the unpruned model
    achieved_reduction: float
    params: int
    macs: int
    val_accuracy: float
    within_tolerance: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PruneResult:
    model: Classifier
    arch: Any
    base_accuracy: float
    chosen_step: int  # 0: no step was within tolerance, the unpruned model is returned
    steps: list[StepRecord]
    reason: str

    @property
    def chosen(self) -> StepRecord | None:
        return self.steps[self.chosen_step - 1] if self.chosen_step else None


def within_tolerance(accuracy: float, base_accuracy: float, max_drop: float) -> bool:
    return accuracy >= base_accuracy - max_drop - 1e-9  # float slack: 0.985 - 0.005 is inexact


def select_step(base_accuracy: float, records: list[StepRecord], max_drop: float
                ) -> tuple[int, str]:
    """Index (1-based; 0 = unpruned) of the largest reduction within tolerance, and why."""
    ok = [r for r in records if within_tolerance(r.val_accuracy, base_accuracy, max_drop)]
    if not ok:
        return 0, (f"chosen: unpruned model: no step kept val >= {base_accuracy:.4f}"
                   f"-{max_drop:g}")
    best = max(ok, key=lambda r: (r.achieved_reduction, r.val_accuracy, -r.step))
    return best.step, f"chosen: step {best.step}: largest reduction within tolerance"


def run_steps(model: Classifier, arch: Any, in_shape: tuple[int, int, int], steps: int,
              step: Step, evaluate: Evaluate, max_drop: float, target: str) -> PruneResult:
    """Apply ``step`` ``steps`` times in sequence, evaluate each result, keep the best."""
    base = evaluate(model)
    current, current_arch = model, arch
    records: list[StepRecord] = []
    kept: dict[int, tuple[Classifier, Any]] = {0: (model, arch)}
    for k in range(1, steps + 1):
        current, current_arch, ratio, goal, achieved, note = step(current, current_arch, k)
        acc = evaluate(current)
        ok = within_tolerance(acc, base, max_drop)
        line = (f"step {k}: ratio {ratio:.3f}, {target} -{achieved:.1%} (target -{goal:.1%}), "
                f"val {acc:.4f} {'>=' if ok else '<'} {base:.4f}-{max_drop:g} "
                f"({'within' if ok else 'outside'} tolerance)"
                + (f"; {note}" if note else ""))
        records.append(StepRecord(k, ratio, goal, achieved, count_params(current),
                                  count_macs(current, in_shape), acc, ok, line))
        chosen, _ = select_step(base, records, max_drop)
        kept = {chosen: (current, current_arch)} if chosen == k else kept
    chosen, verdict = select_step(base, records, max_drop)
    best, best_arch = kept[chosen]
    reason = "\n".join([r.note for r in records] + [verdict])
    return PruneResult(best, best_arch, base, chosen, records, reason)


def _measure(target: str, in_shape: tuple[int, int, int]) -> Callable[[nn.Module], int]:
    if target not in TARGETS:
        raise ValueError(f"unknown pruning target `{target}` (known: {list(TARGETS)})")
    return count_params if target == "params" else (lambda m: count_macs(m, in_shape))


def prune_structured(model: Classifier, arch_cfg: Any, in_shape: tuple[int, int, int],
                     num_classes: int, ratio: float, criterion: str = "l1",
                     calibration: Batches | None = None) -> tuple[Classifier, Any]:
    """Remove ``ratio`` of the channels of every prunable group, lowest importance first.

    Returns a new model of the same architecture built from the smaller config, and that config.
    """
    if criterion not in IMPORTANCE:
        raise ValueError(f"unknown importance criterion `{criterion}` (known: {list(IMPORTANCE)})")
    groups = prunable_groups(model, arch_cfg)
    scores = IMPORTANCE[criterion](model, groups, calibration)
    return apply_pruning(model, arch_cfg, in_shape, num_classes, groups, scores, ratio)


def prune(model: Classifier, arch: Any, in_shape: tuple[int, int, int], num_classes: int, *,
          evaluate: Evaluate, target: str = "params", target_ratio: float = 0.5, steps: int = 1,
          criterion: str = "l1", finetune: Finetune | None = None,
          max_accuracy_drop: float = 0.01, calibration: Batches | None = None) -> PruneResult:
    """Structured pruning toward ``target_ratio`` fewer params/MACs in ``steps`` steps.

    Channel importance is recomputed on the fine-tuned model of the previous step.
    """
    if not 0.0 <= target_ratio < 1.0:
        raise ValueError(f"target_ratio must be in [0, 1), got {target_ratio}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if criterion not in IMPORTANCE:
        raise ValueError(f"unknown importance criterion `{criterion}` (known: {list(IMPORTANCE)})")
    measure = _measure(target, in_shape)
    original = measure(model)

    def step(current: Classifier, cur_arch: Any, k: int):
        goal = target_ratio * k / steps
        groups = prunable_groups(current, cur_arch)
        scores = IMPORTANCE[criterion](current, groups, calibration)

        def fits(r: float) -> bool:  # size depends on the config only: no weights needed
            shell = build_model(resize_config(cur_arch, kept_sizes(groups, r)), in_shape,
                                num_classes)
            return measure(shell) <= original * (1 - goal)

        # smallest ratio that reaches the goal: binary search over the points where size changes
        ratios, note = candidate_ratios(groups), ""
        lo, hi = 0, len(ratios) - 1
        if not fits(ratios[hi]):
            lo = hi
            note = "target unreachable: every layer is down to its last channel"
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(ratios[mid]) else (mid + 1, hi)
        ratio = ratios[lo]
        pruned, new_arch = apply_pruning(current, cur_arch, in_shape, num_classes, groups, scores,
                                         ratio)
        if finetune is not None:
            finetune(pruned)
        return pruned, new_arch, round(ratio, 6), goal, 1 - measure(pruned) / original, note

    return run_steps(model, arch, in_shape, steps, step, evaluate, max_accuracy_drop, target)
