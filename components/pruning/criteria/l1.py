"""`l1: sum of |w| of each channel's outgoing filter`."""

from __future__ import annotations

import torch
from torch import nn

from components.pruning.criteria.common import Batches, filter_weights
from components.pruning.surgery import Group


def score(model: nn.Module, groups: list[Group], _calibration: Batches | None = None
       ) -> list[torch.Tensor]:
    """Sum of |w| of each channel's outgoing filter."""
    return [sum(filter_weights(model, p).abs().sum(1) for p in g.producers) for g in groups]
