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


def load_teachers(teacher_dirs: dict[str, Path], prepared: Dataset) -> dict[str, Checkpoint]:
    """Load each teacher and refuse one that was not trained on ``prepared``'s data."""
    loaded = {}
    data_hash = prepared.manifest.get("data_hash")
    for name, folder in teacher_dirs.items():
        path = Path(folder)
        path = path / "model.pt" if path.suffix != ".pt" else path
        if not path.exists():
            raise ValueError(f"teacher `{name}`: checkpoint not found at {path}")
        try:
            ckpt = load_checkpoint(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"teacher `{name}` ({path}): {e}") from None
        problems = []
        if tuple(ckpt.in_shape) != tuple(prepared.in_shape):
            problems.append(f"input shape {list(ckpt.in_shape)} != data {list(prepared.in_shape)}")
        if ckpt.num_classes != prepared.num_classes:
            problems.append(f"{ckpt.num_classes} classes != data {prepared.num_classes}")
        teacher_hash = ckpt.metadata.get("data_hash")
        if teacher_hash and data_hash and teacher_hash != data_hash:
            problems.append(f"trained on data {teacher_hash[:12]}, not {data_hash[:12]}")
        if problems:
            raise ValueError(f"teacher `{name}` ({path}) does not fit the prepared dataset: "
                             + "; ".join(problems))
        loaded[name] = ckpt
    return loaded


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
