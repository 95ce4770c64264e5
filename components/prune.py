"""The `prune` stage: make the distilled student smaller while its accuracy stays within a budget.

Two methods. ``structured`` removes whole channels (conv filters, hidden units) and rebuilds a
plain, smaller model of the same architecture from a smaller config: fewer params, fewer MACs,
faster on any runtime. ``unstructured`` zeroes the globally smallest weights: same shapes and
MACs, so dense runtimes gain nothing from it (the metrics say so). Both prune in equal steps,
fine-tune after each with an injected callable (the distillation loss, via `training.fit`) over
``seeds`` seeds, time each step against the unpruned model on the primary device profile (ONNX
Runtime), and keep the largest reduction whose paired validation drop is shown within
``max_accuracy_drop`` and that is not slower (`pruning.choice`). Structured widths are
multiples of the profile's channel block (``round_to``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from components.config import DeviceProfile, Params, PruneConfig, TrainingConfig
from components.core.data import Dataset, load_prepared, stratified_sample
from components.core.io import atomic_dir, atomic_write_json
from components.core.stage import StageIO, StageResult
from components.core.stats import accuracy_summary
from components.modeling.architectures import Classifier, count_params
from components.modeling.checkpoint import load_checkpoint, save_checkpoint
from components.modeling.training import LossFn, accuracy, fit, predict_logits
from components.pruning.importance import IMPORTANCE, Batches
from components.pruning.latency import LatencyProbe
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
    "DENSE_NOTE", "IMPORTANCE", "Evaluate", "Finetune", "LatencyProbe", "PruneConfig",
    "PruneResult", "StepRecord", "channel_block", "correctness", "count_macs", "layer_report",
    "make_finetune", "measure_sparsity", "primary_profile", "prune", "prune_stage",
    "prune_structured", "prune_unstructured", "search_sparsity", "select_step", "verify_reload",
]

STRUCTURED_NOTE = "structured: channels are removed, so the model is smaller and faster anywhere"


def make_finetune(prepared: Dataset, epochs: int, training: TrainingConfig | None = None,
                  loss_fn: LossFn | None = None) -> Finetune:
    """A fine-tune callable: ``training.fit`` for ``epochs`` with ``loss_fn`` (default CE), at
    the training seed plus the given offset."""
    cfg = (training or TrainingConfig()).model_copy(update={"epochs": epochs})

    def finetune(model: torch.nn.Module, seed: int = 0) -> None:
        fit(model, prepared.train, prepared.val, cfg, loss_fn=loss_fn, seed=cfg.seed + seed,
            desc=f"prune finetune seed {cfg.seed + seed}")

    return finetune


def correctness(model: torch.nn.Module, split: Any) -> np.ndarray:
    """Per-sample correctness of ``model`` on ``split``, shape (N,) bool."""
    return predict_logits(model, split.x).argmax(1).numpy() == split.y


def primary_profile(cfg: Params) -> tuple[str, DeviceProfile]:
    """The name and device profile that `register.policy.primary_profile` names."""
    name = cfg.register_.policy.primary_profile
    return name, cfg.evaluate.profiles[name]


def channel_block(cfg: Params) -> int:
    """`prune.round_to`, or else the primary profile's channel multiple."""
    explicit = cfg.required("prune").round_to
    return explicit if explicit is not None else primary_profile(cfg)[1].resolved_channel_multiple()


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


def _latency_summary(probe: LatencyProbe, result: PruneResult) -> dict[str, Any]:
    """Where latency was measured and the kept model's p50 against the unpruned one's."""
    rec = result.chosen or result.steps[0]
    before = rec.unpruned_p50_ms
    after = rec.p50_ms if result.chosen else before
    return {**probe.describe(), "p50_ms_before": before, "p50_ms_after": after,
            "spread_ms_before": rec.unpruned_spread_ms,
            "spread_ms_after": rec.spread_ms if result.chosen else rec.unpruned_spread_ms,
            "faster": bool(result.chosen and result.chosen.faster)}


def prune_stage(cfg: PruneConfig, student_dir: str | Path, prepared: Dataset,
                finetune_fn: Finetune | None, out_dir: str | Path, metrics_path: str | Path,
                *, profile: DeviceProfile | None = None, profile_name: str = "default",
                round_to: int | None = None) -> dict[str, Any]:
    """Prune the student checkpoint in ``student_dir``; write ``out_dir`` and the metrics JSON.

    Latency is measured on ``profile`` (default: 1 thread, batch 1); structured widths are
    multiples of ``round_to`` (None: no rounding; `run` passes `channel_block`).
    ``out_dir`` gets model.pt + metadata.json (naming the parent checkpoint) and layers.json (the
    per-layer report), all at once. ``chosen_ratio`` in the metrics is the chosen step's target
    reduction (params/MACs/latency for structured, sparsity for unstructured); 0 when none
    qualified.
    """
    parent = load_checkpoint(student_dir)  # ValueError when weights don't match their spec
    if tuple(parent.in_shape) != tuple(prepared.in_shape) or parent.num_classes != \
            prepared.num_classes:
        raise ValueError(f"{parent.path}: model is for {parent.in_shape} x {parent.num_classes} "
                         f"classes, data is {prepared.in_shape} x {prepared.num_classes}")
    in_shape, k = parent.in_shape, parent.num_classes

    def evaluate(m: torch.nn.Module) -> np.ndarray:
        return correctness(m, prepared.val)

    def evaluate_test(m: torch.nn.Module) -> np.ndarray:
        return correctness(m, prepared.test)

    before = parent.model
    probe = LatencyProbe(before, in_shape, profile, profile_name)
    common = {"evaluate": evaluate, "steps": cfg.steps, "finetune": finetune_fn,
              "max_accuracy_drop": cfg.max_accuracy_drop, "seeds": cfg.seeds,
              "evaluate_test": evaluate_test, "latency": probe}
    structured = cfg.method == "structured"
    if structured:
        calib = calibration_batches(prepared, cfg.calibration_samples) \
            if cfg.criterion == "taylor" else None
        result = prune(before, parent.arch, in_shape, k, target=cfg.target,
                       target_ratio=cfg.target_ratio, criterion=cfg.criterion,
                       calibration=calib, round_to=round_to, **common)
    else:
        result = search_sparsity(before, parent.arch, in_shape, sparsity=cfg.sparsity, **common)
    after = result.model.eval()
    val_after, test_before = evaluate(after), evaluate_test(before)
    test_after = evaluate_test(after)
    chosen = result.chosen
    metrics: dict[str, Any] = {
        "method": cfg.method,
        "criterion": cfg.criterion if structured else None,
        "target": cfg.target if structured else "sparsity",
        "round_to": round_to if structured else None,
        "seeds": cfg.seeds,
        "params_before": count_params(before),
        "params_after": count_params(after),
        "macs_before": count_macs(before, in_shape),
        "macs_after": count_macs(after, in_shape),
        "latency": _latency_summary(probe, result),
        "val_accuracy_before": result.base_accuracy,
        "val_accuracy_after": float(val_after.mean()),
        "test_accuracy_before": float(test_before.mean()),
        "test_accuracy_after": float(test_after.mean()),
        "val_before": result.base_val,
        "val_after": accuracy_summary(val_after),
        "test_before": accuracy_summary(test_before),
        "test_after": accuracy_summary(test_after),
        "val_drop": chosen.val_drop if chosen else None,
        "chosen_step": result.chosen_step,
        "chosen_ratio": chosen.target_reduction if chosen else 0.0,
        "achieved_reduction": chosen.achieved_reduction if chosen else 0.0,
        "chosen_reason": result.chosen_reason,
        "steps": [r.to_dict() for r in result.steps],
        "reason": result.reason,
        "sparsity": measure_sparsity(after),
        "sparsity_note": STRUCTURED_NOTE if structured else DENSE_NOTE,
    }
    meta = {"stage": "prune", "prune": cfg.model_dump(), "metrics": metrics,
            "parent": {"path": Path(parent.path).as_posix(), "sha256": parent.sha256,
                       "arch": parent.arch.model_dump()}}
    x_probe = torch.as_tensor(prepared.val.x[:8], dtype=torch.float32)
    with atomic_dir(out_dir) as tmp:
        save_checkpoint(tmp, after, result.arch, in_shape, k, meta)
        atomic_write_json(tmp / "layers.json", [c.to_dict() for c in layer_report(after, in_shape)])
        verify_reload(tmp, after, x_probe)
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
    """The `prune` stage: the distilled student, pruned in steps, each KD-fine-tuned, timed on
    the primary profile, widths in its channel blocks."""
    prune_cfg = cfg.required("prune")
    prepared = load_prepared(io.dep("prepared"))
    name, profile = primary_profile(cfg)
    metrics = prune_stage(prune_cfg, io.dep("student"), prepared, kd_finetune(cfg, io, prepared),
                          io.out("pruned"), io.metrics, profile=profile, profile_name=name,
                          round_to=channel_block(cfg))
    return StageResult(metrics=metrics, params=prune_cfg.model_dump(),
                       artifacts=[io.out("pruned") / "layers.json",
                                  io.out("pruned") / "metadata.json"])
