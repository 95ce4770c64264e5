"""The `prune` stage: make the distilled student smaller while its accuracy stays within a budget.

Two methods. ``structured`` removes whole channels (conv filters, hidden units) and rebuilds a
plain, smaller model of the same architecture from a smaller config: fewer params, fewer MACs,
faster on any runtime. ``unstructured`` zeroes the globally smallest weights: same shapes and
MACs, so dense runtimes gain nothing from it (the metrics say so). Both prune in equal steps,
fine-tune after each with an injected callable (the distillation loss, via `training.fit`), and
keep the largest reduction whose validation accuracy is within ``max_accuracy_drop``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from components.config import Params, PruneConfig, TrainingConfig
from components.core.data import Dataset, load_prepared, stratified_sample
from components.core.io import atomic_dir, atomic_write_json
from components.core.stage import StageIO, StageResult
from components.modeling.architectures import Classifier, count_params
from components.modeling.checkpoint import load_checkpoint, save_checkpoint
from components.modeling.training import LossFn, accuracy, fit
from components.pruning.importance import IMPORTANCE, Batches
from components.pruning.macs import count_macs, layer_report
from components.pruning.search import (
    Evaluate,
    Finetune,
    PruneResult,
    StepRecord,
    prune,
    prune_structured,
    select_step,
)
from components.pruning.unstructured import (
    DENSE_NOTE,
    measure_sparsity,
    prune_unstructured,
    search_sparsity,
)

__all__ = [
    "DENSE_NOTE", "IMPORTANCE", "Evaluate", "Finetune", "PruneConfig", "PruneResult",
    "StepRecord", "count_macs", "layer_report", "make_finetune", "measure_sparsity", "prune",
    "prune_stage", "prune_structured", "prune_unstructured", "search_sparsity", "select_step",
    "verify_reload",
]

STRUCTURED_NOTE = "structured: channels are removed, so the model is smaller and faster anywhere"


def make_finetune(prepared: Dataset, epochs: int, training: TrainingConfig | None = None,
                  loss_fn: LossFn | None = None) -> Finetune:
    """A fine-tune callable: ``training.fit`` for ``epochs`` with ``loss_fn`` (default CE)."""
    cfg = (training or TrainingConfig()).model_copy(update={"epochs": epochs})

    def finetune(model: torch.nn.Module) -> None:
        fit(model, prepared.train, prepared.val, cfg, loss_fn=loss_fn, desc="prune finetune")

    return finetune


def calibration_batches(prepared: Dataset, samples: int, batch_size: int = 64) -> Batches:
    """A class-stratified sample of the training split in batches (sources may be class-sorted,
    so the first N samples could be one or two classes)."""
    sample = stratified_sample(prepared.train, samples)
    x = torch.as_tensor(sample.x, dtype=torch.float32)
    y = torch.as_tensor(sample.y, dtype=torch.long)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]


@torch.no_grad()
def verify_reload(folder: str | Path, model: Classifier, x: torch.Tensor) -> None:
    """Raise unless the checkpoint in ``folder`` reproduces ``model``'s outputs on ``x`` exactly."""
    reloaded = load_checkpoint(folder).model
    if not torch.equal(model.eval()(x), reloaded(x)):
        raise RuntimeError(f"{folder}: reloaded pruned model does not reproduce its outputs")


def prune_stage(cfg: PruneConfig, student_dir: str | Path, prepared: Dataset,
                finetune_fn: Finetune | None, out_dir: str | Path, metrics_path: str | Path
                ) -> dict[str, Any]:
    """Prune the student checkpoint in ``student_dir``; write ``out_dir`` and the metrics JSON.

    ``out_dir`` gets model.pt + metadata.json (naming the parent checkpoint) and layers.json (the
    per-layer report), all at once. ``chosen_ratio`` in the metrics is the chosen step's target
    reduction (params/MACs for structured, sparsity for unstructured); 0 when none qualified.
    """
    parent = load_checkpoint(student_dir)  # ValueError when weights don't match their spec
    if tuple(parent.in_shape) != tuple(prepared.in_shape) or parent.num_classes != \
            prepared.num_classes:
        raise ValueError(f"{parent.path}: model is for {parent.in_shape} x {parent.num_classes} "
                         f"classes, data is {prepared.in_shape} x {prepared.num_classes}")
    in_shape, k = parent.in_shape, parent.num_classes

    def evaluate(m: torch.nn.Module) -> float:
        return accuracy(m, prepared.val)

    before = parent.model
    if cfg.method == "structured":
        calib = calibration_batches(prepared, cfg.calibration_samples) \
            if cfg.criterion == "taylor" else None
        result = prune(before, parent.arch, in_shape, k, evaluate=evaluate, target=cfg.target,
                       target_ratio=cfg.target_ratio, steps=cfg.steps, criterion=cfg.criterion,
                       finetune=finetune_fn, max_accuracy_drop=cfg.max_accuracy_drop,
                       calibration=calib)
    else:
        result = search_sparsity(before, parent.arch, in_shape, evaluate=evaluate,
                                 sparsity=cfg.sparsity, steps=cfg.steps, finetune=finetune_fn,
                                 max_accuracy_drop=cfg.max_accuracy_drop)
    after = result.model.eval()
    metrics: dict[str, Any] = {
        "method": cfg.method,
        "criterion": cfg.criterion if cfg.method == "structured" else None,
        "target": cfg.target if cfg.method == "structured" else "sparsity",
        "params_before": count_params(before),
        "params_after": count_params(after),
        "macs_before": count_macs(before, in_shape),
        "macs_after": count_macs(after, in_shape),
        "val_accuracy_before": result.base_accuracy,
        "val_accuracy_after": evaluate(after),
        "test_accuracy_before": accuracy(before, prepared.test),
        "test_accuracy_after": accuracy(after, prepared.test),
        "chosen_step": result.chosen_step,
        "chosen_ratio": result.chosen.target_reduction if result.chosen else 0.0,
        "achieved_reduction": result.chosen.achieved_reduction if result.chosen else 0.0,
        "steps": [r.to_dict() for r in result.steps],
        "reason": result.reason,
        "sparsity": measure_sparsity(after),
        "sparsity_note": STRUCTURED_NOTE if cfg.method == "structured" else DENSE_NOTE,
    }
    meta = {"stage": "prune", "prune": cfg.model_dump(), "metrics": metrics,
            "parent": {"path": Path(parent.path).as_posix(), "sha256": parent.sha256,
                       "arch": parent.arch.model_dump()}}
    probe = torch.as_tensor(prepared.val.x[:8], dtype=torch.float32)
    with atomic_dir(out_dir) as tmp:
        save_checkpoint(tmp, after, result.arch, in_shape, k, meta)
        atomic_write_json(tmp / "layers.json", [c.to_dict() for c in layer_report(after, in_shape)])
        verify_reload(tmp, after, probe)
    atomic_write_json(metrics_path, metrics)
    return metrics


def kd_finetune(cfg: Params, io: StageIO, prepared: Dataset) -> Finetune:
    """Each step's fine-tune: the multi-teacher loss the student was distilled with, at
    `prune.finetune_lr` with a cosine schedule, for `prune.finetune_epochs`."""
    from components.modeling.kd import make_kd_loss
    from components.modeling.teachers import load_teachers
    from components.modeling.training import resolve_device

    kd, prune_cfg = cfg.required("distill"), cfg.required("prune")
    names = kd.teachers or list(cfg.train_teachers.teachers)
    teachers = load_teachers({n: io.dep("teachers") / n for n in names}, prepared)
    device = resolve_device(kd.training.device)  # where `fit` will put the student and batches
    models = [teachers[n].model.to(device).eval() for n in names]
    loss = make_kd_loss(models, kd.weighting, kd.temperature, kd.alpha,
                        teacher_accuracies=[accuracy(m, prepared.val, device) for m in models])
    training = kd.training.model_copy(update={"lr": prune_cfg.finetune_lr, "schedule": "cosine"})
    return make_finetune(prepared, prune_cfg.finetune_epochs, training, loss_fn=loss)


def run(cfg: Params, io: StageIO) -> StageResult:
    """The `prune` stage: the distilled student, pruned in steps, each KD-fine-tuned."""
    prune_cfg = cfg.required("prune")
    prepared = load_prepared(io.dep("prepared"))
    metrics = prune_stage(prune_cfg, io.dep("student"), prepared, kd_finetune(cfg, io, prepared),
                          io.out("pruned"), io.metrics)
    return StageResult(metrics=metrics, params=prune_cfg.model_dump(),
                       artifacts=[io.out("pruned") / "layers.json",
                                  io.out("pruned") / "metadata.json"])
