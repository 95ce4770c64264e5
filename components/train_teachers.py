"""`train_teachers`: train one teacher of the registry on the prepared data, keep its best epoch.

DVC runs this once per teacher (`train_teachers@<name>`), so changing one teacher's parameters
re-trains only that teacher and what depends on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from components.config import Params, TrainingConfig
from components.core.data import Dataset, load_prepared
from components.core.io import atomic_dir, atomic_write_json
from components.core.stage import StageIO, StageResult
from components.modeling.architectures import build_model, count_params
from components.modeling.checkpoint import save_checkpoint
from components.modeling.training import accuracy, fit, seed_everything


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
    atomic_write_json(metrics_path, {k: v for k, v in asdict(result).items() if k != "seconds"})
    return result, fitted.history


def run(cfg: Params, io: StageIO) -> StageResult:
    """The `train_teachers` stage for one teacher, the foreach item `io.item`."""
    teachers, training = cfg.train_teachers.teachers, cfg.train_teachers.training
    if io.item not in teachers:
        raise ValueError(f"train_teachers: unknown teacher `{io.item}` "
                         f"(params.yaml train_teachers.teachers: {list(teachers)})")
    result, history = train_teacher(io.item, teachers[io.item], training,
                                    load_prepared(io.dep("prepared")), io.out("teachers"),
                                    io.metrics)
    metrics = asdict(result)
    return StageResult(
        metrics={k: v for k, v in metrics.items() if k != "seconds"},
        params={"teacher": io.item, "arch": teachers[io.item].model_dump(),
                "training": training.model_dump()},
        timings={"train_seconds": metrics["seconds"]},
        history={"train": history}, artifacts=[io.out("teachers")],
    )
