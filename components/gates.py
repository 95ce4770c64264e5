"""Promotion gates: whether a registered candidate is rejected, a challenger or the champion.

Pure decisions on plain dicts (the per-profile metrics `evaluate` writes for one candidate), so
they are unit-tested without a registry; `flows/register.py` applies them to MLflow aliases.
A candidate that fails a gate is rejected and never becomes champion. One that passes is a
challenger, and becomes champion only when there is no champion or when it beats the champion
on the primary metric by *more* than ``min_improvement`` (a tie never promotes).

When both carry per-sample correctness of the primary accuracy on the same samples
(``val_correct``/``test_correct`` with equal ``samples``), the comparison is paired
(`stats.compare`): champion only when the candidate is better by more than ``min_improvement``
at 95% confidence, kept as challenger under ``max_regression`` only when shown at most that much
worse (the one-sided upper bound of its drop within it), and an interval too wide to decide keeps
the champion. Otherwise the point values are compared (a
latency with its measured spreads added to the margins), and the reasons say so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from components.config import HIGHER_IS_BETTER, PromotionPolicy
from components.core.stats import compare
from components.evaluation.selection import paired_vectors

Outcome = Literal["champion", "challenger", "rejected"]
# the spread that goes with a latency metric when the point comparison has to be used
SPREADS = {"latency_ms_p50": "latency_spread_ms", "latency_ms_p95": "latency_p95_spread_ms"}


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
    pair = paired_vectors(candidate[p], champion[p], metric)
    if not isinstance(pair, str):
        return _paired(pair[0], pair[1], policy, compared)
    compared["paired"] = False
    gain = improvement(value, best, metric)
    compared["improvement"] = gain
    noise = sum(m.get(SPREADS.get(metric, ""), None) or 0.0 for m in (candidate[p], champion[p]))
    how = (f"point comparison ({pair}" + (f"; latency spreads {noise:.3g} added to the margins)"
                                         if noise else ")"))
    versus = f"{metric} on `{p}`: {value:.6g} vs champion {best:.6g} ({gain:+.6g})"
    if policy.max_regression is not None and gain < -(policy.max_regression + noise):
        return Decision("rejected", [f"{versus}: worse than the champion by more than "
                                     f"max_regression {policy.max_regression:g}", how], compared)
    if gain > policy.min_improvement + noise:
        return Decision("champion", [f"{versus}: beats the champion by more than "
                                     f"min_improvement {policy.min_improvement:g}", how], compared)
    return Decision("challenger", [f"{versus}: does not beat the champion by more than "
                                   f"min_improvement {policy.min_improvement:g}", how], compared)


def _paired(cand: Any, champ: Any, policy: PromotionPolicy, compared: dict[str, Any],
            ) -> Decision:
    """The decision on per-sample correctness of the same samples (accuracy metrics)."""
    p, metric = policy.primary_profile, policy.primary_metric
    # drop = champion - candidate; the candidate is better by more than min_improvement when
    # its 95% upper bound is <= -min_improvement
    better = compare(champ, cand, margin=-policy.min_improvement)
    d = better.drop
    compared.update(paired=True, n=d["n"], improvement=-d["drop"], gain_lower=-d["upper"],
                    gain_ci=[-d["ci_high"], -d["ci_low"]], p_mcnemar=d["p_mcnemar"],
                    discordant={"champion_only": d["b"], "candidate_only": d["c"]})
    versus = (f"{metric} on `{p}`: {compared['candidate']:.4f} vs champion "
              f"{compared['champion']:.4f} ({100 * -d['drop']:+.2f} pt, 95% lower bound of the "
              f"gain {100 * -d['upper']:+.2f} pt; paired on {d['n']} samples, "
              f"{d['c']} only the candidate got right, {d['b']} only the champion)")
    if policy.max_regression is not None:
        # a challenger must be shown at most max_regression worse (the one-sided upper bound of
        # its drop within it): a wide interval rejects, it never lets a worse model through
        within = compare(champ, cand, margin=policy.max_regression)
        if not within.passes:
            return Decision("rejected", [f"{versus}: not shown within max_regression "
                                         f"{policy.max_regression:g} of the champion "
                                         f"({within.reason})"], compared)
    if better.passes:
        return Decision("champion", [f"{versus}: shown better than the champion by more than "
                                     f"min_improvement {policy.min_improvement:g}"], compared)
    why = (f"{versus}: not shown better than the champion by more than min_improvement "
           f"{policy.min_improvement:g}")
    if not better.decidable:
        why += "; interval too wide to decide: the champion stays"
    return Decision("challenger", [why], compared)
