"""What every criterion shares: the signature and a channel's outgoing filter weights."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from components.pruning.surgery import Group

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]  # (x: (N, C, H, W), y: (N,)) pairs
Importance = Callable[[nn.Module, list[Group], Batches | None], list[torch.Tensor]]


def filter_weights(model: nn.Module, name: str) -> torch.Tensor:
    w = model.get_submodule(name).weight.detach().float().cpu()
    return w.reshape(w.shape[0], -1)  # (C_out, everything a channel's filter reads)
