"""Multiply-accumulate counts of Conv2d and Linear layers, measured with forward hooks.

Counts are per forward pass of ONE sample. BatchNorm, activations, pooling and the input
normalisation are left out: they are elementwise and cheap next to the convolutions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

_COUNTED = (nn.Conv2d, nn.Linear)


@dataclass
class LayerCost:
    name: str
    type: str
    in_channels: int
    out_channels: int
    params: int
    macs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _layer_macs(module: nn.Module, out: torch.Tensor) -> int:
    per_sample_out = out[0].numel()  # out: (1, C_out, H, W) or (1, F_out)
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        # each output value sums (C_in / groups) * kh * kw products
        return per_sample_out * (module.in_channels // module.groups) * kh * kw
    return per_sample_out * module.in_features  # Linear: (1, F_out) values, F_in products each


@torch.no_grad()
def layer_report(model: nn.Module, in_shape: tuple[int, int, int] | list[int]) -> list[LayerCost]:
    """Per Conv2d/Linear layer: name, type, in/out channels, parameters and MACs per sample."""
    costs: dict[str, int] = {}
    modules = {n: m for n, m in model.named_modules() if isinstance(m, _COUNTED)}

    def hook(name: str):
        def record(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
            costs[name] = costs.get(name, 0) + _layer_macs(module, out)

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    was_training = model.training
    model.eval()  # one sample: BatchNorm1d cannot take train-mode statistics of a batch of 1
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, *in_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    report = []
    for name, m in modules.items():
        is_conv = isinstance(m, nn.Conv2d)
        report.append(LayerCost(
            name=name,
            type=type(m).__name__,
            in_channels=m.in_channels if is_conv else m.in_features,
            out_channels=m.out_channels if is_conv else m.out_features,
            params=sum(p.numel() for p in m.parameters()),
            macs=costs.get(name, 0),
        ))
    return report


def count_macs(model: nn.Module, in_shape: tuple[int, int, int] | list[int]) -> int:
    """Multiply-accumulates of all Conv2d/Linear layers for one sample of shape ``in_shape``."""
    return sum(layer.macs for layer in layer_report(model, in_shape))
