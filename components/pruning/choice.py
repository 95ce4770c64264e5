"""Which pruning step to keep: a pure decision over the steps' records, testable without training.

A step qualifies when its paired comparison with the unpruned model (`stats.compare`, same
validation samples) shows the accuracy drop within the margin AND is decidable: a step whose
95% interval straddles the margin is not trusted over a less pruned candidate. Among the
qualifying steps the largest reduction that is measurably faster than the unpruned model
(`timing.faster`) wins; when none is faster, a smaller model is still preferred, but only when
its measured speed is not worse; otherwise the unpruned model is kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StepRecord:
    step: int
    ratio: float  # structured: channel share removed in this step; unstructured: sparsity
    target_reduction: float  # cumulative share to remove, relative to the unpruned model
    achieved_reduction: float
    params: int
    macs: int
    val_accuracy: float  # of the kept (best-val) seed
    passes: bool  # the 95% upper bound of the paired val drop is within the margin
    decidable: bool  # False when the 95% interval of the drop straddles the margin
    note: str
    val_drop: dict[str, Any] = field(default_factory=dict)  # stats.paired_drop + "margin"
    val: dict[str, Any] | None = None  # stats.accuracy_summary of the kept seed
    test: dict[str, Any] | None = None  # stats.accuracy_summary of the kept seed
    seeds: dict[str, Any] | None = None  # n, best_seed, val/test mean_spread over seeds
    p50_ms: float | None = None  # on the primary profile, ONNX Runtime
    spread_ms: float | None = None
    unpruned_p50_ms: float | None = None  # the unpruned model, in the same interleaved rounds
    unpruned_spread_ms: float | None = None
    faster: bool | None = None  # timing.faster(step, unpruned); None: not measured
    slower: bool | None = None  # timing.faster(unpruned, step)

    @property
    def qualifies(self) -> bool:
        return self.passes and self.decidable

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "qualifies": self.qualifies}


def _bound(r: StepRecord) -> str:
    d = r.val_drop
    if "upper" not in d:
        return ""
    return (f" (drop {100 * d['drop']:.2f} points, 95% upper bound {100 * d['upper']:.2f}"
            f" <= margin {100 * d.get('margin', 0.0):.2f})")


def _speed(r: StepRecord) -> str:
    if r.p50_ms is None or r.unpruned_p50_ms is None:
        return "latency not measured"
    return (f"p50 {r.p50_ms:.4f} ms +- {r.spread_ms:.4f} vs unpruned {r.unpruned_p50_ms:.4f} ms "
            f"+- {r.unpruned_spread_ms:.4f}")


def speed_word(r: StepRecord) -> str:
    """`faster`, `slower` or `no measurable difference` than the unpruned model."""
    if r.faster is None:
        return "latency not measured"
    return "faster" if r.faster else "slower" if r.slower else "no measurable difference"


def _largest(records: list[StepRecord]) -> StepRecord:
    return max(records, key=lambda r: (r.achieved_reduction, -r.step))


def select_step(records: list[StepRecord], target: str = "size") -> tuple[int, str]:
    """Step to keep (1-based; 0 = the unpruned model) and the reason, in plain words."""
    qualifying = [r for r in records if r.qualifies]
    fast = [r for r in qualifying if r.faster]
    not_worse = [r for r in qualifying if not r.slower]
    if fast:
        best = _largest(fast)
        why = (f"step {best.step}: the largest {target} reduction (-{best.achieved_reduction:.1%})"
               f" whose accuracy drop is shown within the margin{_bound(best)} and that is "
               f"measurably faster than the unpruned model ({_speed(best)})")
    elif not_worse:
        best = _largest(not_worse)
        why = (f"step {best.step}: the largest {target} reduction (-{best.achieved_reduction:.1%})"
               f" whose accuracy drop is shown within the margin{_bound(best)}; no qualifying "
               f"step is measurably faster than the unpruned model, so the smaller model is "
               f"kept only because its speed is not worse ({_speed(best)})")
    else:
        best = None
        why = ("unpruned model kept: " + (
            "every step whose accuracy drop is shown within the margin is measurably slower "
            "than the unpruned model" if qualifying else
            "no step's accuracy drop is shown within the margin (decidably)"))
    chosen = best.step if best else 0
    floor = best.achieved_reduction if best else 0.0
    skipped = [r.step for r in records
               if r.passes and not r.decidable and r.achieved_reduction > floor]
    if skipped:
        why += (f"; step(s) {', '.join(map(str, skipped))} passed but the 95% interval of "
                f"the drop straddles the margin (undecidable): the safer, less pruned "
                f"candidate is kept")
    return chosen, why
