"""`ensemble`: score every teacher and their average on the same splits, in one place.

The averaged ensemble (mean of the teachers' softmax probabilities) is the accuracy reference
that the compressed student is judged against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from components.config import Params
from components.core.data import Dataset, load_prepared
from components.core.io import atomic_write_json
from components.core.stage import StageIO, StageResult
from components.modeling.teachers import ensemble_probs, load_teachers, teacher_dirs
from components.modeling.training import predict_logits


def score_ensemble(teacher_dirs: dict[str, Path], data: Dataset, metrics_path: Path) -> dict:
    """Write `metrics/teachers.json`: each teacher's accuracies and params, and the ensemble's."""
    teachers = load_teachers(teacher_dirs, data)
    out: dict[str, Any] = {}
    for name, ckpt in teachers.items():
        out[name] = {
            "arch": ckpt.arch.arch,
            "params": ckpt.metadata.get("params"),
            "val_accuracy": _acc(predict_logits(ckpt.model, data.val.x), data.val.y),
            "test_accuracy": _acc(predict_logits(ckpt.model, data.test.x), data.test.y),
        }
    models = [c.model for c in teachers.values()]
    out["ensemble"] = {
        "members": sorted(teachers),
        "params": sum(int(v["params"] or 0) for k, v in out.items() if k in teachers),
        "val_accuracy": _acc(ensemble_probs(models, data.val.x), data.val.y),
        "test_accuracy": _acc(ensemble_probs(models, data.test.x), data.test.y),
    }
    atomic_write_json(metrics_path, out)
    return out


def _acc(scores: torch.Tensor, y: Any) -> float:
    return float((scores.argmax(1).numpy() == y).mean())


def run(cfg: Params, io: StageIO) -> StageResult:
    """The `ensemble` stage: every teacher and their average, scored on val and test."""
    metrics = score_ensemble(teacher_dirs(cfg, io), load_prepared(io.dep("prepared")), io.metrics)
    return StageResult(metrics=metrics, params={"teachers": sorted(cfg.train_teachers.teachers)})
