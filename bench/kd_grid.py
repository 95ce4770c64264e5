"""Distillation gain over seeds: the student alone, each teacher alone, all teachers per weighting.

Every entry is one `components.distill.distill` call on a copy of the clone's `distill` section
(same student, schedule, temperature and alpha; ``seeds`` repeats). Its ``baseline`` runs (the
student on labels alone, same seeds) give the "student alone" row; they are the same in every
call, so they are taken from the first.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTINGS = ("mean", "accuracy", "confidence")


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample std, min and max of test accuracies (fractions)."""
    arr = np.asarray(values, dtype=np.float64)
    return {"test_accuracies": [float(v) for v in arr], "mean": float(arr.mean()),
            "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "min": float(arr.min()), "max": float(arr.max())}


def run_grid(clone: Path, seeds: int) -> dict[str, Any]:
    """``{"seeds", "rows": {label: spread + gain_points}, "best_single_teacher", ...}``."""
    from components.config import load_params
    from components.core.data import load_prepared
    from components.distill import distill

    params = load_params(clone / "params.yaml")
    base = params.distill
    data = load_prepared(clone / "data/prepared")
    teacher_dirs = {n: clone / "models/teachers" / n for n in params.train_teachers.teachers}
    configs = {f"single:{n}": {"teachers": [n]} for n in teacher_dirs}
    configs.update({f"multi:{w}": {"teachers": None, "weighting": w} for w in WEIGHTINGS})
    rows: dict[str, Any] = {}
    baseline = None
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-kd.") as tmp:
        for label, update in configs.items():
            cfg = base.model_copy(update={"seeds": seeds, **update})
            m = distill(cfg, data, teacher_dirs, Path(tmp) / "student", Path(tmp) / "m.json")
            baseline = baseline or spread(m["baseline_test_accuracies"])
            rows[label] = spread(m["student_test_accuracies"])
    rows = {"alone": baseline, **rows}
    for row in rows.values():
        row["gain_points"] = round(100 * (row["mean"] - baseline["mean"]), 3)
    singles = [k for k in rows if k.startswith("single:")]
    multis = [k for k in rows if k.startswith("multi:")]
    return {
        "seeds": seeds,
        "first_seed": base.training.seed,
        "config": {"student": base.student.model_dump(), "temperature": base.temperature,
                   "alpha": base.alpha, "epochs": base.training.epochs},
        "rows": rows,
        "best_single_teacher": max(singles, key=lambda k: rows[k]["mean"]),
        "best_multi_teacher": max(multis, key=lambda k: rows[k]["mean"]),
        "seconds": round(time.perf_counter() - start, 1),
    }
