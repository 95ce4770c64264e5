"""Teacher-weighting strategies for multi-teacher distillation, selected by name.

Each strategy maps the teachers' logits on a batch, the labels and the teachers' validation
accuracies to mixture weights that sum to one over teachers: shape (M,) for one weight per
teacher, or (M, N) for one weight per teacher per sample.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# weights(teacher_logits (M, N, K), labels (N,), val_accuracies (M,) or None) -> (M,) or (M, N)
WeightFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

# A 2-point gap in validation accuracy gives the better teacher e (2.7) times the weight: a
# plain proportional rule (0.99 vs 0.97 -> 0.505 vs 0.495) would be `mean` in all but name.
ACCURACY_TEMPERATURE = 0.02


def mean_weights(teacher_logits: torch.Tensor, labels: torch.Tensor,
                 val_accuracies: torch.Tensor | None = None) -> torch.Tensor:
    """Equal weight 1/M for every teacher: (M,)."""
    m = teacher_logits.shape[0]
    return torch.full((m,), 1.0 / m, device=teacher_logits.device)


def accuracy_weights(teacher_logits: torch.Tensor, labels: torch.Tensor,
                     val_accuracies: torch.Tensor | None,
                     temperature: float = ACCURACY_TEMPERATURE) -> torch.Tensor:
    """softmax(val_accuracy / temperature) over teachers: (M,), fixed for the whole run."""
    if val_accuracies is None:
        raise ValueError("the `accuracy` weighting needs each teacher's validation accuracy")
    acc = torch.as_tensor(val_accuracies, dtype=torch.float32, device=teacher_logits.device)
    return torch.softmax(acc / temperature, dim=0)


def confidence_weights(teacher_logits: torch.Tensor, labels: torch.Tensor,
                       val_accuracies: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample weights from each teacher's cross-entropy to the true label: (M, N).

    In the spirit of CA-MKD (Zhang et al. 2022): w[m, n] = softmax_m(-CE_m(n)), which is
    p_m(y_n | x_n) / sum_j p_j(y_n | x_n): a teacher that is right and sure on the sample gets
    the most say, one that is wrong (or right but unsure) the least. Computed at T = 1.
    """
    m, n, k = teacher_logits.shape
    ce = F.cross_entropy(teacher_logits.reshape(m * n, k).float(), labels.repeat(m),
                         reduction="none").view(m, n)
    return torch.softmax(-ce, dim=0)


WEIGHTINGS: dict[str, WeightFn] = {
    "mean": mean_weights,
    "accuracy": accuracy_weights,
    "confidence": confidence_weights,
}


def resolve_weighting(strategy: str | WeightFn) -> WeightFn:
    """The registry entry named ``strategy``, or ``strategy`` itself when it is a callable."""
    if callable(strategy):
        return strategy
    try:
        return WEIGHTINGS[strategy]
    except KeyError:
        raise ValueError(
            f"unknown teacher weighting `{strategy}` (known: {sorted(WEIGHTINGS)})"
        ) from None


def average_weights(weights: torch.Tensor) -> torch.Tensor:
    """Average weight of each teacher over the batch: (M,) or (M, N) -> (M,)."""
    return weights if weights.dim() == 1 else weights.mean(dim=1)
