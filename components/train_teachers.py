"""`train_teachers`: train one teacher of the registry on the prepared data, keep its best epoch.

DVC runs this once per teacher (`train_teachers@<name>`), so changing one teacher's parameters
re-trains only that teacher and what depends on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from components.architectures import build_model, count_params
from components.base_config import TrainingConfig
from components.checkpoint import save_checkpoint
from components.data import Dataset
from components.io import atomic_dir, atomic_write_json
from components.training import accuracy, fit, seed_everything


@dataclass
class TeacherResult:
    name: str
    arch: str
    params: int
    val_accuracy: float
    test_accuracy: float
    best_epoch: int
    epochs: int
    seconds: float


def train_teacher(
    name: str,
    arch_cfg: Any,
    training: TrainingConfig,
    data: Dataset,
    out_dir: Path,
    metrics_path: Path,
) -> tuple[TeacherResult, list[dict[str, float]]]:
    """Train teacher ``name``; write its checkpoint folder and metrics; return them and history."""
    seed_everything(training.seed)  # weight init is part of the seeded run
    model = build_model(arch_cfg, data.in_shape, data.num_classes, data.mean, data.std)
    fitted = fit(model, data.train, data.val, training, desc=f"teacher {name}")
    result = TeacherResult(
        name=name,
        arch=arch_cfg.arch,
        params=count_params(model),
        val_accuracy=fitted.val_accuracy,
        test_accuracy=accuracy(model, data.test),
        best_epoch=fitted.best_epoch,
        epochs=fitted.epochs_run,
        seconds=round(fitted.seconds, 3),
    )
    with atomic_dir(out_dir) as tmp:
        save_checkpoint(
            tmp, model, arch_cfg, data.in_shape, data.num_classes,
            metadata={
                "kind": "teacher",
                "name": name,
                "data_hash": data.manifest["data_hash"],
                "classes": data.manifest["classes"],
                "training": training.model_dump(),
                "metrics": asdict(result),
                "parent": {"data": data.manifest["data_hash"]},
            },
        )
    atomic_write_json(metrics_path, asdict(result))
    return result, fitted.history
