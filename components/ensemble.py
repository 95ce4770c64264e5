"""`ensemble`: score every teacher and their average on the same splits, in one place.

The averaged ensemble (mean of the teachers' softmax probabilities) is the accuracy reference
that the compressed student is judged against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from components.checkpoint import Checkpoint, load_checkpoint
from components.data import Dataset
from components.io import atomic_write_json
from components.training import predict_logits


def load_teachers(teacher_dirs: dict[str, Path], data: Dataset) -> dict[str, Checkpoint]:
    """Load every teacher and refuse one that was trained for another dataset."""
    teachers: dict[str, Checkpoint] = {}
    for name, folder in teacher_dirs.items():
        try:
            ckpt = load_checkpoint(folder)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"teacher `{name}`: no checkpoint at {folder} (run `train_teachers@{name}`)"
            ) from None
        if ckpt.in_shape != data.in_shape or ckpt.num_classes != data.num_classes:
            raise ValueError(
                f"teacher `{name}` ({ckpt.path}) expects input {list(ckpt.in_shape)} and "
                f"{ckpt.num_classes} classes, the prepared data has {list(data.in_shape)} and "
                f"{data.num_classes}"
            )
        their_hash = ckpt.metadata.get("data_hash")
        if their_hash and their_hash != data.manifest.get("data_hash"):
            raise ValueError(
                f"teacher `{name}` ({ckpt.path}) was trained on data {their_hash[:12]}, "
                f"the prepared data is {data.manifest.get('data_hash', '?')[:12]}"
            )
        teachers[name] = ckpt
    return teachers


def ensemble_probs(teachers: list[torch.nn.Module], x: Any) -> torch.Tensor:
    """Mean softmax probabilities of ``teachers`` on ``x``: (N, K)."""
    return torch.stack([predict_logits(t, x).softmax(1) for t in teachers]).mean(0)


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
