"""Per-profile selection: which budgets a measurement breaks, and which candidate a profile gets.

Decisions use the validation accuracy when it was measured (choosing on test would make the
reported test figure optimistic).
"""

from __future__ import annotations

from typing import Any

from components.config import Budgets


def check_budgets(measurement: dict[str, Any], budgets: Budgets) -> list[str]:
    """The budgets ``measurement`` breaks, as readable strings (empty: meets them all)."""
    if measurement.get("error"):
        return [f"measurement failed: {measurement['error']}"]
    limits = [("latency_ms_p95", budgets.max_latency_ms_p95, "max"),
              ("size_bytes", budgets.max_size_bytes, "max"),
              ("peak_rss_mb", budgets.max_peak_rss_mb, "max"),
              (decision_accuracy_key(measurement), budgets.min_accuracy, "min")]
    failed = []
    for key, limit, kind in limits:
        if limit is None:
            continue
        value = measurement.get(key)
        if value is None or (value > limit if kind == "max" else value < limit):
            failed.append(f"{key} {value:.4g} {'>' if kind == 'max' else '<'} {limit:g}"
                          if value is not None else f"{key} missing")
    return failed


def decision_accuracy_key(measurement: dict[str, Any]) -> str:
    """`val_accuracy` when it was measured, else `accuracy` (test)."""
    return "val_accuracy" if measurement.get("val_accuracy") is not None else "accuracy"


def select_candidate(measurements: dict[str, dict[str, Any]]) -> str | None:
    """Among candidates that meet their budgets: best val accuracy, then lower p50, then name."""
    ok = [(n, m) for n, m in measurements.items() if m.get("meets_budget")]
    if not ok:
        return None
    return min(ok, key=lambda nm: (-nm[1][decision_accuracy_key(nm[1])],
                                   nm[1]["latency_ms_p50"], nm[0]))[0]
