"""The record every expectation and check is written as, and the wording of failure messages."""

from __future__ import annotations

from typing import Any

SHOWN = 5  # ids / classes named in one failure message before "(+N more)"
Record = dict[str, Any]  # one evaluated expectation or check, as written to result.json


def _check(name: str, split: str | None, ok: bool, observed: dict, problem: str) -> Record:
    rec = {"check": name, "engine": "distillery", "split": split, "success": bool(ok),
           "result": observed}
    if not ok:
        rec["message"] = problem
    return rec


def _name(label: int, names: list[str]) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


def _classes(labels: list, names: list[str]) -> str:
    return ", ".join(f"{k} ({_name(int(k), names)})" if _name(int(k), names) != str(k)
                     else str(k) for k in labels)


def _cap(items: list[str], total: int) -> str:
    shown = items[:SHOWN]
    return ", ".join(shown) + (f" (+{total - len(shown)} more)" if total > len(shown) else "")
