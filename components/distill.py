"""`distill`: multi-teacher knowledge distillation into a small student, against a baseline.

The loss, the teacher table and the teacher weighting live in `components.modeling.kd` and
`components.modeling.weighting` (the `prune` stage fine-tunes with the same loss). The same
student trained on labels alone (same seed and schedule) is the baseline: every run reports
kd_gain = student test accuracy - baseline test accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from components.config import DistillConfig, Params
from components.core.data import Dataset, load_prepared
from components.core.io import atomic_dir, atomic_write_json
from components.core.stage import StageIO, StageResult
from components.modeling.architectures import build_model, count_params
from components.modeling.checkpoint import save_checkpoint
from components.modeling.kd import TeacherTable, classifier_layer, make_kd_loss
from components.modeling.teachers import load_teachers, teacher_dirs
from components.modeling.training import accuracy, fit, resolve_device, seed_everything


def distill(cfg: DistillConfig, prepared: Dataset, teacher_dirs: dict[str, Path],
            out_dir: Path, metrics_path: Path) -> dict[str, Any]:
    """Distil the teachers into ``cfg.student`` over ``cfg.seeds`` seeds, each against a baseline.

    Writes the best-validation student to ``out_dir`` and the metrics to ``metrics_path``;
    returns the metrics plus ``history`` (per-epoch records of every run, for tracking).
    """
    names = cfg.teachers or list(teacher_dirs)
    for name in [*names, *([cfg.hint_teacher] if cfg.hint_teacher else [])]:
        if name not in teacher_dirs:
            raise ValueError(f"distill: no checkpoint given for teacher `{name}`")
    use_hint = cfg.hint_teacher is not None and cfg.hint_weight > 0
    wanted = dict.fromkeys([*names, *([cfg.hint_teacher] if use_hint else [])])
    ckpts = load_teachers({n: teacher_dirs[n] for n in wanted}, prepared)
    device = resolve_device(cfg.training.device)
    teachers = [ckpts[n].model.to(device).eval() for n in names]
    hint = ckpts[cfg.hint_teacher].model.to(device).eval() if use_hint else None
    val_acc = {n: accuracy(ckpts[n].model, prepared.val, device) for n in names}
    test_acc = {n: accuracy(ckpts[n].model, prepared.test, device) for n in names}
    x_train = torch.as_tensor(prepared.train.x, dtype=torch.float32, device=device)
    table = TeacherTable(teachers, hint, x_train, cfg.training.shift)
    kd_training = cfg.training.model_copy(update={"shift": 0})  # the loss shifts instead

    def new_student(seed: int) -> nn.Module:
        # seeded, so the KD student and its baseline start from the same weights, every run
        seed_everything(seed)
        return build_model(cfg.student, prepared.in_shape, prepared.num_classes,
                           prepared.mean, prepared.std)

    runs, history = [], []
    for i in range(cfg.seeds):
        seed = cfg.training.seed + i
        student = new_student(seed)
        loss = make_kd_loss(
            teachers, cfg.weighting, cfg.temperature, cfg.alpha,
            teacher_accuracies=[val_acc[n] for n in names], hint_teacher=hint,
            hint_weight=cfg.hint_weight, student_dim=classifier_layer(student).in_features,
            shift=cfg.training.shift, seed=seed, table=table)
        s_fit = fit(student, prepared.train, prepared.val, kd_training, loss_fn=loss,
                    extra_params=loss.parameters(), seed=seed, desc=f"distill seed {seed}")
        baseline = new_student(seed)
        b_fit = fit(baseline, prepared.train, prepared.val, cfg.training, seed=seed,
                    desc=f"baseline seed {seed}")
        runs.append({"seed": seed, "student": student, "s_fit": s_fit, "b_fit": b_fit,
                     "weights": loss.average_weights(),
                     "s_test": accuracy(student, prepared.test),
                     "b_test": accuracy(baseline, prepared.test)})
        history += [{"run": "student", "seed": seed, **h} for h in s_fit.history]
        history += [{"run": "baseline", "seed": seed, **h} for h in b_fit.history]

    best = max(runs, key=lambda r: r["s_fit"].val_accuracy)  # first seed wins ties
    gains = [r["s_test"] - r["b_test"] for r in runs]
    s_fit, b_fit = best["s_fit"], best["b_fit"]
    metrics: dict[str, Any] = {
        "student.test_accuracy": best["s_test"],
        "student.val_accuracy": s_fit.val_accuracy,
        "student.params": count_params(best["student"]),
        "baseline.test_accuracy": best["b_test"],
        "baseline.val_accuracy": b_fit.val_accuracy,
        "kd_gain": best["s_test"] - best["b_test"],
        "teacher_weights": dict(zip(names, best["weights"], strict=True)),
        "teacher_val_accuracies": val_acc,
        "teacher_test_accuracies": test_acc,
        "student.epochs": s_fit.epochs_run,
        "baseline.epochs": b_fit.epochs_run,
        "seed": best["seed"],
        "seeds": cfg.seeds,
        "student_test_accuracies": [r["s_test"] for r in runs],
        "baseline_test_accuracies": [r["b_test"] for r in runs],
        "student.test_accuracy_mean": float(np.mean([r["s_test"] for r in runs])),
        "baseline.test_accuracy_mean": float(np.mean([r["b_test"] for r in runs])),
        "epochs": s_fit.epochs_run,
        "kd_gain_mean": float(np.mean(gains)),
        "kd_gain_std": float(np.std(gains, ddof=1)) if len(gains) > 1 else 0.0,
    }
    metadata = {
        "stage": "distill",
        "teachers": names,
        "teacher_sha256": {n: ckpts[n].sha256 for n in wanted},
        "teacher_weights": metrics["teacher_weights"],
        "kd": cfg.model_dump(mode="json"),
        "data_hash": prepared.manifest.get("data_hash"),
        "metrics": metrics,
        "parent": {n: str(teacher_dirs[n]) for n in wanted},
    }
    with atomic_dir(out_dir) as tmp:
        save_checkpoint(tmp, best["student"], cfg.student, prepared.in_shape,
                        prepared.num_classes, metadata)
    atomic_write_json(metrics_path, metrics)
    timings = {  # durations: tracked, never in the metrics file
        "student.seconds": s_fit.seconds, "baseline.seconds": b_fit.seconds,
        "student.seconds_per_epoch": s_fit.seconds_per_epoch,
        "baseline.seconds_per_epoch": b_fit.seconds_per_epoch,
        "epoch_cost_ratio": s_fit.seconds_per_epoch / max(b_fit.seconds_per_epoch, 1e-9),
        "teacher_table_seconds": table.seconds,
        "seconds": table.seconds + sum(r["s_fit"].seconds + r["b_fit"].seconds for r in runs),
    }
    return {**metrics, "history": history, "timings": timings}


def run(cfg: Params, io: StageIO) -> StageResult:
    """The `distill` stage: the configured teachers into `distill.student`."""
    kd = cfg.required("distill")
    metrics = distill(kd, load_prepared(io.dep("prepared")), teacher_dirs(cfg, io),
                      io.out("student"), io.metrics)
    timings = metrics.pop("timings")
    history: dict[str, list[dict[str, float]]] = {}
    for row in metrics.pop("history"):  # one series per (run, seed): student.seed0, ...
        history.setdefault(f"{row['run']}.seed{row['seed']}", []).append(row)
    return StageResult(metrics=metrics, params=kd.model_dump(), timings=timings,
                       history=history, artifacts=[io.out("student") / "metadata.json"])
