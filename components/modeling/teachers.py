"""Teachers as later stages use them: loaded from their checkpoints and checked against the
data, and their averaged ensemble (the mean of their softmax probabilities)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from components.config import Params
from components.core.data import Dataset
from components.core.stage import StageIO
from components.modeling.checkpoint import Checkpoint, load_checkpoint
from components.modeling.training import predict_logits


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


def teacher_dirs(cfg: Params, io: StageIO) -> dict[str, Path]:
    """Each configured teacher's checkpoint folder under the stage's `teachers` dep."""
    return {name: io.dep("teachers") / name for name in cfg.train_teachers.teachers}
