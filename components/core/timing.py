"""Latency measured so that decisions survive a noisy machine: interleaved rounds, median kept.

Each round times every candidate in turn (the order rotates from round to round, so a load
spike hits all of them alike); a candidate's figure is the median over rounds of its per-round
p50, and its spread is the range of those per-round p50s. Two candidates whose difference lies
inside the spread are not told apart (`faster`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def time_calls(call: Callable[[], Any], runs: int, warmup: int = 3) -> list[float]:
    """Wall time in ms of ``runs`` calls of ``call`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def interleaved(calls: dict[str, Callable[[], Any]], rounds: int = 3, runs: int = 50,
                warmup: int = 3) -> dict[str, dict[str, Any]]:
    """Per candidate: ``p50_ms`` (median of the rounds' p50s), ``p95_ms``, ``spread_ms``
    (max - min of the rounds' p50s) and ``rounds_p50_ms``."""
    names = list(calls)
    per_round: dict[str, list[float]] = {n: [] for n in names}
    all_samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            samples = time_calls(calls[name], runs, warmup)
            per_round[name].append(statistics.median(samples))
            all_samples[name] += samples
    out = {}
    for name in names:
        p50s = per_round[name]
        ordered = sorted(all_samples[name])
        out[name] = {"p50_ms": statistics.median(p50s),
                     "p95_ms": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
                     "spread_ms": max(p50s) - min(p50s), "rounds_p50_ms": p50s}
    return out


def faster(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when ``a`` measured faster than ``b`` by more than both spreads together: a
    difference inside the measured noise is no difference."""
    return a["p50_ms"] + a["spread_ms"] + b["spread_ms"] < b["p50_ms"]
