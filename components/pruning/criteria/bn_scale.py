"""`bn_scale: |gamma| of the BatchNorm after each channel (network slimming)`."""

from __future__ import annotations

import torch
from torch import nn

from components.pruning.criteria import l2
from components.pruning.criteria.common import Batches
from components.pruning.surgery import Group


def score(model: nn.Module, groups: list[Group], _calibration: Batches | None = None
             ) -> list[torch.Tensor]:
    """|gamma| of the BatchNorm after the channel (network slimming).

    A group with no BatchNorm (the CNN's optional hidden Linear) falls back to the l2 norm.
    """
    out = []
    for g in groups:
        if g.norms:
            out.append(sum(model.get_submodule(n).weight.detach().abs().float().cpu()
                           for n in g.norms))
        else:
            out.append(l2.score(model, [g])[0])
    return out
