"""Accuracy-aware pruning: prune in equal steps toward a target, fine-tune, keep the best step.

Each step k of n aims at ``target_ratio * k / n`` fewer params, MACs or milliseconds (measured
p50 on the primary profile) than the unpruned model; the per-step channel ratio that gets there
is found by bisection, every kept width a multiple of ``round_to`` (the runtime's channel
block). After every step the injected ``finetune`` runs once per seed and ``evaluate`` gives
per-sample validation correctness; the best-val seed is kept, timed against the unpruned model,
and compared with it on the same samples. `choice.select_step` decides which step to keep.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from components.core.stats import accuracy_summary, compare, mean_spread
from components.modeling.architectures import Classifier, build_model, count_params
from components.pruning.choice import StepRecord, select_step, speed_word
from components.pruning.importance import IMPORTANCE, Batches
from components.pruning.latency import LatencyProbe
from components.pruning.macs import count_macs
from components.pruning.surgery import (
    apply_pruning,
    candidate_ratios,
    kept_sizes,
    prunable_groups,
    resize_config,
)

__all__ = ["TARGETS", "Evaluate", "Finetune", "Proposal", "PruneResult", "StepRecord", "prune",
           "prune_structured", "run_steps", "select_step"]

Finetune = Callable[[nn.Module, int], None]  # (model, seed offset): trains the model in place
Evaluate = Callable[[nn.Module], np.ndarray]  # -> per-sample correctness (N,) bool
Reduction = Callable[[Classifier, dict[str, Any]], float]  # (model, its latency) -> reduction
TARGETS = ("params", "macs", "latency")


@dataclass
class Proposal:
    """One step's pruned model, before fine-tuning: ``tune(seed)`` gives it fine-tuned."""

    tune: Callable[[int], Classifier]
    arch: Any
    ratio: float  # structured: channel share removed in this step; unstructured: sparsity
    goal: float  # cumulative reduction aimed at
    note: str = ""


Step = Callable[[Classifier, Any, int], Proposal]  # (current model, its arch, k) -> proposal


@dataclass
class PruneResult:
    model: Classifier
    arch: Any
    base_accuracy: float
    chosen_step: int  # 0: no step qualified, the unpruned model is returned
    steps: list[StepRecord]
    reason: str  # every step's note, then the verdict
    chosen_reason: str = ""  # the verdict alone, in plain words
    base_val: dict[str, Any] | None = None  # accuracy_summary of the unpruned model
    base_test: dict[str, Any] | None = None

    @property
    def chosen(self) -> StepRecord | None:
        return self.steps[self.chosen_step - 1] if self.chosen_step else None


def _correct(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=bool).reshape(-1)


def _step_note(k: int, prop: Proposal, achieved: float, target: str, base: float, acc: float,
               reason: str, decidable: bool, seeds: dict[str, Any] | None,
               rec: StepRecord) -> str:
    line = (f"step {k}: ratio {prop.ratio:.3f}, {target} -{achieved:.1%} (target "
            f"-{prop.goal:.1%}), val {acc:.4f} vs unpruned {base:.4f}: {reason}")
    if not decidable:
        line += "; undecidable: the safer, less pruned candidate is preferred"
    if seeds and seeds["n"] > 1:
        v = seeds["val_accuracy"]
        line += (f"; val over {seeds['n']} seeds {v['mean']:.4f} +- {v['std']:.4f}, "
                 f"kept seed {seeds['best_seed']}")
    if rec.p50_ms is not None:
        line += (f"; p50 {rec.p50_ms:.4f} ms vs unpruned {rec.unpruned_p50_ms:.4f} ms "
                 f"({speed_word(rec)})")
    return line + (f"; {prop.note}" if prop.note else "")


def run_steps(model: Classifier, arch: Any, in_shape: tuple[int, int, int], steps: int,
              step: Step, evaluate: Evaluate, *, max_drop: float, target: str,
              reduction: Reduction, seeds: int = 1, evaluate_test: Evaluate | None = None,
              latency: LatencyProbe | None = None) -> PruneResult:
    """Apply ``step`` ``steps`` times in sequence (each from the previous step's kept seed),
    compare each with the unpruned model on the same samples, time it, keep the best."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    base_val = _correct(evaluate(model))
    base_test = _correct(evaluate_test(model)) if evaluate_test else None
    current, current_arch = model, arch
    records: list[StepRecord] = []
    kept: dict[int, tuple[Classifier, Any]] = {0: (model, arch)}
    for k in range(1, steps + 1):
        prop = step(current, current_arch, k)
        runs = []
        for s in range(seeds):
            tuned = prop.tune(s)
            runs.append((tuned, _correct(evaluate(tuned)),
                         _correct(evaluate_test(tuned)) if evaluate_test else None))
        best = max(range(seeds), key=lambda i: runs[i][1].mean())  # the first seed wins ties
        current, val, test = runs[best]
        current_arch = prop.arch
        timing = latency(current) if latency is not None else {}
        achieved = reduction(current, timing)
        cmp = compare(base_val, val, max_drop)
        seed_stats = {"n": seeds, "best_seed": best,
                      "val_accuracy": mean_spread([float(r[1].mean()) for r in runs]),
                      "test_accuracy": mean_spread([float(r[2].mean()) for r in runs])
                      if evaluate_test else None}
        rec = StepRecord(
            step=k, ratio=prop.ratio, target_reduction=prop.goal, achieved_reduction=achieved,
            params=count_params(current), macs=count_macs(current, in_shape),
            val_accuracy=float(val.mean()), passes=cmp.passes, decidable=cmp.decidable,
            note="", val_drop={**cmp.drop, "margin": cmp.margin}, val=accuracy_summary(val),
            test=accuracy_summary(test) if test is not None else None, seeds=seed_stats,
            **timing)
        rec.note = _step_note(k, prop, achieved, target, float(base_val.mean()),
                              rec.val_accuracy, cmp.reason, cmp.decidable, seed_stats, rec)
        records.append(rec)
        kept[k] = (current, current_arch)
    chosen, verdict = select_step(records, target)
    best_model, best_arch = kept[chosen]
    reason = "\n".join([r.note for r in records] + [f"chosen: {verdict}"])
    return PruneResult(best_model, best_arch, float(base_val.mean()), chosen, records, reason,
                       verdict, accuracy_summary(base_val),
                       accuracy_summary(base_test) if base_test is not None else None)


def _latency_reduction(t: dict[str, Any]) -> float:
    return 1 - t["p50_ms"] / t["unpruned_p50_ms"]


def prune_structured(model: Classifier, arch_cfg: Any, in_shape: tuple[int, int, int],
                     num_classes: int, ratio: float, criterion: str = "l1",
                     calibration: Batches | None = None, round_to: int | None = None
                     ) -> tuple[Classifier, Any]:
    """Remove ``ratio`` of the channels of every prunable group, lowest importance first, kept
    widths rounded to multiples of ``round_to``.

    Returns a new model of the same architecture built from the smaller config, and that config.
    """
    if criterion not in IMPORTANCE:
        raise ValueError(f"unknown importance criterion `{criterion}` (known: {list(IMPORTANCE)})")
    groups = prunable_groups(model, arch_cfg)
    scores = IMPORTANCE[criterion](model, groups, calibration)
    return apply_pruning(model, arch_cfg, in_shape, num_classes, groups, scores, ratio, round_to)


def prune(model: Classifier, arch: Any, in_shape: tuple[int, int, int], num_classes: int, *,
          evaluate: Evaluate, target: str = "params", target_ratio: float = 0.5, steps: int = 1,
          criterion: str = "l1", finetune: Finetune | None = None,
          max_accuracy_drop: float = 0.01, calibration: Batches | None = None,
          round_to: int | None = None, seeds: int = 1, evaluate_test: Evaluate | None = None,
          latency: LatencyProbe | None = None) -> PruneResult:
    """Structured pruning toward ``target_ratio`` fewer params/MACs/ms in ``steps`` steps.

    Channel importance is recomputed on the fine-tuned model of the previous step. ``latency``
    times every step against the unpruned model (and, for the `latency` target, every size the
    search tries: latency depends on the widths only, so an untrained shell stands in).
    """
    if not 0.0 <= target_ratio < 1.0:
        raise ValueError(f"target_ratio must be in [0, 1), got {target_ratio}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if criterion not in IMPORTANCE:
        raise ValueError(f"unknown importance criterion `{criterion}` (known: {list(IMPORTANCE)})")
    if target not in TARGETS:
        raise ValueError(f"unknown pruning target `{target}` (known: {list(TARGETS)})")
    if target == "latency" and latency is None:
        raise ValueError("pruning target `latency` needs a latency probe (a device profile)")
    count = count_params if target == "params" else (lambda m: count_macs(m, in_shape))
    original = count(model) if target != "latency" else 0
    shell_cache: dict[Any, float] = {}

    def step(current: Classifier, cur_arch: Any, k: int) -> Proposal:
        goal = target_ratio * k / steps
        groups = prunable_groups(current, cur_arch)
        scores = IMPORTANCE[criterion](current, groups, calibration)

        def fits(r: float) -> bool:  # size depends on the config only: no weights needed
            new_arch = resize_config(cur_arch, kept_sizes(groups, r, round_to))
            shell = build_model(new_arch, in_shape, num_classes)
            if target != "latency":
                return count(shell) <= original * (1 - goal)
            key = new_arch.model_dump_json()
            if key not in shell_cache:
                shell_cache[key] = _latency_reduction(latency(shell))
            return shell_cache[key] >= goal

        # smallest ratio that reaches the goal: binary search over the points where size changes
        ratios, note = candidate_ratios(groups), ""
        lo, hi = 0, len(ratios) - 1
        if not fits(ratios[hi]):
            lo = hi
            note = "target unreachable: every layer is down to its last channel (or block)"
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fits(ratios[mid]) else (mid + 1, hi)
        ratio = ratios[lo]
        pruned, new_arch = apply_pruning(current, cur_arch, in_shape, num_classes, groups, scores,
                                         ratio, round_to)

        def tune(seed: int) -> Classifier:
            m = copy.deepcopy(pruned) if seeds > 1 else pruned
            if finetune is not None:
                finetune(m, seed)
            return m

        return Proposal(tune, new_arch, round(ratio, 6), goal, note)

    def reduction(m: Classifier, timing: dict[str, Any]) -> float:
        return _latency_reduction(timing) if target == "latency" else 1 - count(m) / original

    return run_steps(model, arch, in_shape, steps, step, evaluate, max_drop=max_accuracy_drop,
                     target=target, reduction=reduction, seeds=seeds,
                     evaluate_test=evaluate_test, latency=latency)
