"""The multi-teacher knowledge-distillation loss, for `training.fit`.

Loss = (1 - alpha) * CE(student, y) + alpha * T^2 * KL(p_mix^T || p_student^T)
       [+ hint_weight * MSE(proj(student features), hint-teacher features)],
where p_mix is the weighted mixture of the teachers' softened probabilities (see `weighting`).

Teachers only ever run in eval mode without gradients. Their outputs are a pure function of the
image, and a random shift of at most s pixels takes one of (2s+1)^2 offsets, so the loss looks
teacher outputs up in a table computed once per offset for the whole train split, by the batch's
train-split rows that the fit loop passes (the student then draws its shifts in the loss, not in
`fit`); without a table the teachers run on every augmented batch.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from components.modeling.training import shift_images
from components.modeling.weighting import WeightFn, average_weights, resolve_weighting

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
    layer = classifier_layer(model)
    handle = layer.register_forward_pre_hook(lambda _m, inp: captured.append(inp[0]))
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
    """Multi-teacher KD loss for `training.fit`: ``loss(model, x, y, batch_index)``.

    Trainable state (the hint projection) is in `parameters()`, for fit's ``extra_params``.
    With ``shift`` > 0 the loss shifts the batch itself (run `fit` with shift 0), so that teacher
    outputs can come from ``table`` by the batch's train-split rows ``batch_index`` (None: the
    teachers run on the batch).
    """

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
            self.projection = nn.Linear(student_dim, classifier_layer(self.hint).in_features)
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


def classifier_layer(model: nn.Module) -> nn.Linear:
    """The final Linear of a registry model (``Classifier.body.classifier``)."""
    body = getattr(model, "body", model)
    if not isinstance(getattr(body, "classifier", None), nn.Linear):
        raise ValueError(f"{type(body).__name__} has no final `classifier` Linear layer")
    return body.classifier
