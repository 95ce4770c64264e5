"""`distill`: multi-teacher knowledge distillation into a small student, against a baseline.

Loss = (1 - alpha) * CE(student, y) + alpha * T^2 * KL(p_mix^T || p_student^T)
       [+ hint_weight * MSE(proj(student features), hint-teacher features)],
where p_mix is the weighted mixture of the teachers' softened probabilities (see `weighting`).
The same student trained on labels alone (same seed and schedule) is the baseline: every run
reports kd_gain = student test accuracy - baseline test accuracy.

Teachers only ever run in eval mode without gradients. Their outputs are a pure function of the
image, and a random shift of at most s pixels takes one of (2s+1)^2 offsets, so when the fit
loop passes ``batch_index`` the loss looks teacher outputs up in a table computed once per
offset for the whole train split (the student then draws its shifts in the loss, not in `fit`);
otherwise the teachers run on every augmented batch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from components.architectures import build_model, count_params
from components.checkpoint import save_checkpoint
from components.config import DistillConfig
from components.data import Dataset
from components.ensemble import load_teachers
from components.io import atomic_dir, atomic_write_json
from components.training import accuracy, fit, resolve_device, seed_everything, shift_images
from components.weighting import WeightFn, average_weights, resolve_weighting

MAX_TABLE_BYTES = 1 << 30  # beyond this the teachers run per batch instead of from a table


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, weights: torch.Tensor,
            labels: torch.Tensor, T: float, alpha: float) -> torch.Tensor:
    """(1 - alpha) * CE(s, y) + alpha * T^2 * KL(sum_m w_m softmax(t_m / T) || softmax(s / T)).

    student_logits (N, K); teacher_logits (M, N, K); weights (M,) or (M, N), summing to one
    over teachers; labels (N,). KL is averaged over the batch.
    """
    loss = student_logits.new_zeros(())
    if alpha < 1:
        loss = loss + (1 - alpha) * F.cross_entropy(student_logits, labels)
    if alpha > 0:
        w = weights[:, None, None] if weights.dim() == 1 else weights[:, :, None]
        p_mix = (w * torch.softmax(teacher_logits.float() / T, dim=-1)).sum(0)  # (N, K)
        log_p_student = F.log_softmax(student_logits / T, dim=-1)
        kl = F.kl_div(log_p_student, p_mix, reduction="batchmean")
        loss = loss + alpha * T * T * kl
    return loss


def forward_with_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, K) and penultimate features (N, D): the input of ``model.body.classifier``."""
    captured: list[torch.Tensor] = []
    handle = _classifier(model).register_forward_pre_hook(lambda _m, inp: captured.append(inp[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    return logits, captured[0]


class TeacherTable:
    """Teacher logits (S, M, N, K) and hint features (S, N, D) for every shift offset of the
    train split, built on first use and shared by every seed's run."""

    def __init__(self, teachers: list[nn.Module], hint_teacher: nn.Module | None,
                 x_train: torch.Tensor, shift: int, batch_size: int = 512):
        self.teachers, self.hint, self.x, self.shift = teachers, hint_teacher, x_train, shift
        self.batch_size = batch_size
        self.logits: torch.Tensor | None = None
        self.features: torch.Tensor | None = None
        self.seconds = 0.0
        self.fits = True

    def lookup(self, offsets: torch.Tensor, index: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(M, B, K) logits and (B, D) features of samples ``index`` at ``offsets``, or None."""
        if self.logits is None and self.fits:
            self._build()
        if self.logits is None:
            return None
        feats = None if self.features is None else self.features[offsets, index]
        return self.logits[offsets, :, index].transpose(0, 1), feats

    @torch.no_grad()
    def _build(self) -> None:
        start = time.perf_counter()
        side = 2 * self.shift + 1
        n = len(self.x)
        probe = run_teachers(self.teachers, self.hint, self.x[:2])
        per_offset = probe[0][:, :1].numel() + (0 if probe[1] is None else probe[1][:1].numel())
        if side * side * n * per_offset * 4 > MAX_TABLE_BYTES:
            self.fits = False
            return
        logits, feats = [], []
        for o in range(side * side):
            dy = torch.full((n,), o // side, device=self.x.device)
            dx = torch.full((n,), o % side, device=self.x.device)
            xo = shift_images(self.x, dy, dx, self.shift)
            outs = [run_teachers(self.teachers, self.hint, xo[i : i + self.batch_size])
                    for i in range(0, n, self.batch_size)]
            logits.append(torch.cat([t for t, _ in outs], dim=1))
            if self.hint is not None:
                feats.append(torch.cat([f for _, f in outs]))
        self.logits = torch.stack(logits)  # (S, M, N, K)
        self.features = torch.stack(feats) if feats else None  # (S, N, D)
        self.seconds = time.perf_counter() - start


@torch.no_grad()
def run_teachers(teachers: list[nn.Module], hint_teacher: nn.Module | None, x: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Teacher logits (M, N, K) and the hint teacher's features (N, D) (None without one)."""
    logits, feats = [], None
    for t in teachers:
        if t is hint_teacher:
            out, feats = forward_with_features(t, x)
        else:
            out = t(x)
        logits.append(out.float())
    if hint_teacher is not None and feats is None:
        feats = forward_with_features(hint_teacher, x)[1]
    return torch.stack(logits), feats


class KDLoss:
    """Multi-teacher KD loss for `training.fit`: ``loss(model, x, y, batch_index=None)``.

    Trainable state (the hint projection) is in `parameters()`, for fit's ``extra_params``.
    With ``shift`` > 0 the loss shifts the batch itself (run `fit` with shift 0), so that teacher
    outputs can come from ``table`` whenever fit passes ``batch_index``.
    """

    wants_batch_index = True  # fit passes the batch's train-split indices when it supports them

    def __init__(self, teachers: list[nn.Module], weighting: str | WeightFn, T: float,
                 alpha: float, *, teacher_accuracies: list[float] | None = None,
                 hint_teacher: nn.Module | None = None, hint_weight: float = 0.0,
                 student_dim: int | None = None, shift: int = 0, seed: int = 0,
                 table: TeacherTable | None = None):
        if not teachers:
            raise ValueError("distillation needs at least one teacher")
        self.teachers = [t.eval() for t in teachers]
        self.weigh = resolve_weighting(weighting)
        if weighting == "accuracy" and teacher_accuracies is None:
            raise ValueError("the `accuracy` weighting needs `teacher_accuracies`")
        self.T, self.alpha, self.shift, self.table = float(T), float(alpha), shift, table
        self.accuracies = None if teacher_accuracies is None else torch.tensor(teacher_accuracies)
        self.hint = hint_teacher.eval() if hint_teacher is not None and hint_weight > 0 else None
        self.hint_weight = hint_weight
        self.projection: nn.Linear | None = None
        if self.hint is not None:
            if student_dim is None:
                raise ValueError("hint distillation needs the student's feature width")
            self.projection = nn.Linear(student_dim, _classifier(self.hint).in_features)
        self.generator = torch.Generator().manual_seed(seed)
        self.weight_sum = torch.zeros(len(teachers))
        self.samples = 0

    def parameters(self) -> list[nn.Parameter]:
        return [] if self.projection is None else list(self.projection.parameters())

    def average_weights(self) -> list[float]:
        """Mean weight of each teacher over every sample seen so far."""
        return (self.weight_sum / max(self.samples, 1)).tolist()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 batch_index: torch.Tensor | None = None) -> torch.Tensor:
        offsets = torch.zeros(len(x), dtype=torch.long)
        if self.shift > 0:
            side = 2 * self.shift + 1
            offsets = torch.randint(0, side * side, (len(x),), generator=self.generator)
            x = shift_images(x, (offsets // side).to(x.device), (offsets % side).to(x.device),
                             self.shift)
        if self.projection is not None:
            student_logits, student_feats = forward_with_features(model, x)
        else:
            student_logits, student_feats = model(x), None
        if self.alpha == 0 and self.projection is None:
            return F.cross_entropy(student_logits, y)
        found = None
        if self.table is not None and batch_index is not None:
            found = self.table.lookup(offsets.to(batch_index.device), batch_index)
        teacher_logits, teacher_feats = found or run_teachers(self.teachers, self.hint, x)
        with torch.no_grad():
            weights = self.weigh(teacher_logits, y, self.accuracies)
            self.weight_sum += average_weights(weights).cpu() * len(x)
            self.samples += len(x)
        loss = kd_loss(student_logits, teacher_logits, weights, y, self.T, self.alpha)
        if self.projection is not None:
            self.projection.to(student_feats.device)
            loss = loss + self.hint_weight * F.mse_loss(self.projection(student_feats),
                                                        teacher_feats)
        return loss


def make_kd_loss(teachers: list[nn.Module], weights_strategy: str | WeightFn, T: float,
                 alpha: float, **options: Any) -> KDLoss:
    """The multi-teacher KD loss as a `fit` loss function (options: see `KDLoss`)."""
    return KDLoss(teachers, weights_strategy, T, alpha, **options)


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
            hint_weight=cfg.hint_weight, student_dim=_classifier(student).in_features,
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
        "student.seconds": s_fit.seconds,
        "baseline.seconds": b_fit.seconds,
        "student.seconds_per_epoch": s_fit.seconds_per_epoch,
        "baseline.seconds_per_epoch": b_fit.seconds_per_epoch,
        "epoch_cost_ratio": s_fit.seconds_per_epoch / max(b_fit.seconds_per_epoch, 1e-9),
        "teacher_table_seconds": table.seconds,
        "seed": best["seed"],
        "seeds": cfg.seeds,
        "student_test_accuracies": [r["s_test"] for r in runs],
        "baseline_test_accuracies": [r["b_test"] for r in runs],
        "student.test_accuracy_mean": float(np.mean([r["s_test"] for r in runs])),
        "baseline.test_accuracy_mean": float(np.mean([r["b_test"] for r in runs])),
        "epochs": s_fit.epochs_run,
        "seconds": table.seconds + sum(r["s_fit"].seconds + r["b_fit"].seconds for r in runs),
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
    return {**metrics, "history": history}


def _classifier(model: nn.Module) -> nn.Linear:
    """The final Linear of a registry model (``Classifier.body.classifier``)."""
    body = getattr(model, "body", model)
    if not isinstance(getattr(body, "classifier", None), nn.Linear):
        raise ValueError(f"{type(body).__name__} has no final `classifier` Linear layer")
    return body.classifier
