"""`taylor: first-order Taylor estimate of the loss change when a channel is zeroed`."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from components.pruning.criteria.common import Batches
from components.pruning.surgery import Group


def score(model: nn.Module, groups: list[Group], calibration: Batches | None = None
           ) -> list[torch.Tensor]:
    """First-order Taylor estimate of the loss change when a channel is zeroed.

    Per sample and channel |sum over positions of activation * dL/dactivation| with
    cross-entropy on the calibration labels, summed over samples; the activation is the output
    of the channel's BatchNorm (or of its producer when it has none).
    """
    if not calibration:
        raise ValueError("criterion `taylor` needs calibration batches (x, y) to score channels")
    # a copy with out-of-place ReLUs, so the stored activations are not overwritten in place
    probe = copy.deepcopy(model).eval()
    for m in probe.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    points = {name for g in groups for name in (g.norms or g.producers)}
    acts: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
            out.retain_grad()
            acts[name] = out

        return hook

    handles = [probe.get_submodule(n).register_forward_hook(keep(n)) for n in points]
    totals: dict[str, torch.Tensor] = {}
    device = next(probe.parameters()).device
    try:
        for x, y in calibration:
            probe.zero_grad(set_to_none=True)
            F.cross_entropy(probe(x.to(device)), y.to(device)).backward()
            for name, a in acts.items():
                contrib = a * a.grad  # (N, C, H, W) or (N, C)
                per = contrib.flatten(2).sum(2) if contrib.dim() > 2 else contrib  # (N, C)
                totals[name] = totals.get(name, 0) + per.abs().sum(0).detach().cpu()
    finally:
        for h in handles:
            h.remove()
    return [sum(totals[n] for n in (g.norms or g.producers)) for g in groups]
