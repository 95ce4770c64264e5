"""Promotion gates: whether a registered candidate is rejected, a challenger or the champion.

Pure decisions on plain dicts (the per-profile metrics `evaluate` writes for one candidate), so
they are unit-tested without a registry; `flows/register.py` applies them to MLflow aliases.
A candidate that fails a gate is rejected and never becomes champion. One that passes is a
challenger, and becomes champion only when there is no champion or when it beats the champion
on the primary metric by *more* than ``min_improvement`` (a tie never promotes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from components.config import HIGHER_IS_BETTER, PromotionPolicy

Outcome = Literal["champion", "challenger", "rejected"]

@dataclass
class Decision:
    outcome: Outcome
    reasons: list[str]
    compared: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gate_failures(candidate: dict[str, dict[str, Any]], policy: PromotionPolicy) -> list[str]:
    """Every gate ``candidate`` (profile -> metrics) fails under ``policy``; empty: passes."""
    p = policy.primary_profile
    primary = candidate.get(p)
    if not primary or primary.get(policy.primary_metric) is None:
        return [f"no {policy.primary_metric} measured on profile `{p}`"]
    failures = []
    for key, threshold in policy.gates.items():
        kind, metric = key.split("_", 1)
        value = primary.get(metric)
        if value is None:
            failures.append(f"{p}: gate {key}: {metric} missing")
        elif value < threshold if kind == "min" else value > threshold:
            failures.append(f"{p}: gate {key}: {metric} {value:.4g} "
                            f"{'<' if kind == 'min' else '>'} {threshold:g}")
    budgeted = candidate if policy.require_all_budgets else {p: primary}
    for profile, m in budgeted.items():
        if not m.get("meets_budget", False):
            broken = "; ".join(m.get("failed_budgets") or ["not checked"])
            failures.append(f"{profile}: budget not met: {broken}")
    return failures


def improvement(candidate: float, champion: float, metric: str) -> float:
    """How much better ``candidate`` is than ``champion`` (negative: worse), in metric units."""
    return candidate - champion if HIGHER_IS_BETTER[metric] else champion - candidate


def decide(candidate: dict[str, dict[str, Any]], champion: dict[str, dict[str, Any]] | None,
           policy: PromotionPolicy) -> Decision:
    """Gate ``candidate`` and compare it with ``champion`` (both: profile -> metrics)."""
    p, metric = policy.primary_profile, policy.primary_metric
    value = (candidate.get(p) or {}).get(metric)
    compared: dict[str, Any] = {"profile": p, "metric": metric, "candidate": value,
                                "champion": None, "improvement": None,
                                "min_improvement": policy.min_improvement}
    failures = gate_failures(candidate, policy)
    if failures:
        return Decision("rejected", failures, compared)
    if champion is None:
        return Decision("champion", ["passes every gate; there is no champion"], compared)
    best = (champion.get(p) or {}).get(metric)
    compared["champion"] = best
    if best is None:
        return Decision("challenger", [f"passes every gate; the champion has no {metric} on "
                                       f"`{p}` to compare with (promote by hand)"], compared)
    gain = improvement(value, best, metric)
    compared["improvement"] = gain
    versus = f"{metric} on `{p}`: {value:.6g} vs champion {best:.6g} ({gain:+.6g})"
    if policy.max_regression is not None and gain < -policy.max_regression:
        return Decision("rejected", [f"{versus}: worse than the champion by more than "
                                     f"max_regression {policy.max_regression:g}"], compared)
    if gain > policy.min_improvement:
        return Decision("champion", [f"{versus}: beats the champion by more than "
                                     f"min_improvement {policy.min_improvement:g}"], compared)
    return Decision("challenger", [f"{versus}: does not beat the champion by more than "
                                   f"min_improvement {policy.min_improvement:g}"], compared)
