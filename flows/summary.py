"""The few lines `distillery repro` and `distillery run` end with: what ships where, and where
to look. Read from the metrics files the stages wrote and the registry; nothing is recomputed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.core.io import read_json

EVALUATE_METRICS = Path("metrics/evaluate.json")
REGISTER_METRICS = Path("metrics/register.json")
WHERE = (("evaluation report", Path("reports/evaluate/evaluate.md")),
         ("Data Docs", Path("reports/validate/data_docs/index.html")))


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, int | float) else "-"


def _selected_line(profile: str, name: str | None, m: dict[str, Any] | None) -> str:
    if name is None or not m:
        return f"  {profile:14} nothing selected"
    ci = m.get("accuracy_ci") or {}
    interval = (f" [{100 * ci['ci_low']:.1f}, {100 * ci['ci_high']:.1f}]"
                if "ci_low" in ci and "ci_high" in ci else "")
    size = m.get("size_bytes")
    p50 = m.get("latency_ms_p50")
    return (f"  {profile:14} {name:18} val {_percent(m.get('val_accuracy'))}, test "
            f"{_percent(m.get('accuracy'))}{interval}, "
            f"{f'{size / 1000:,.1f} kB' if size else '- kB'}, "
            f"p50 {f'{p50:.4f} ms' if isinstance(p50, int | float) else '-'}")


def selected_lines(metrics: dict[str, Any]) -> list[str]:
    """One line per profile: the model selected there, val and test accuracy, size and p50."""
    lines = []
    for profile, name in (metrics.get("selected") or {}).items():
        if name is None and profile in (metrics.get("skipped") or {}):
            lines.append(f"  {profile:14} skipped: {metrics['skipped'][profile]}")
            continue
        lines.append(_selected_line(profile, name, (metrics.get(name) or {}).get(profile)))
    return lines


def champion_line(model_name: str | None) -> str:
    """The registry's `@champion` (or why it cannot be read)."""
    if not model_name:
        return "champion: none registered yet"
    try:
        from flows.promotion import champion_summary

        return champion_summary(model_name)
    except Exception as e:  # noqa: BLE001 - a summary line, never a failure
        return f"champion of {model_name}: unknown ({e})"


def pipeline_summary(root: Path = Path(".")) -> str:
    """The summary block: the champion, the model selected per profile, where to look."""
    lines = ["", "Summary"]
    register = root / REGISTER_METRICS
    reg = read_json(register) if register.is_file() else {}
    lines.append("  " + champion_line(reg.get("model_name")))
    if reg.get("outcome"):
        lines.append(f"  last register: {reg['outcome']} (candidate {reg.get('candidate')})")
    evaluate = root / EVALUATE_METRICS
    if evaluate.is_file():
        lines.append("  selected per device profile (val decides; test with its 95% interval):")
        lines += ["  " + line for line in selected_lines(read_json(evaluate))]
    for label, path in WHERE:
        if (root / path).exists():
            lines.append(f"  {label}: {path}")
    return "\n".join(lines)
