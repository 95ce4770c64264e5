"""Model registry: every teacher and student architecture, each a config plus a small nn.Module.

Configs list every layer width explicitly so that a pruned model is just the same architecture
with smaller widths: rebuilding it needs only the config, never a pickled module.
Input to every model is an image batch scaled to [0, 1], shape (N, C, H, W); the dataset's
normalisation (training-split mean and std) is the first layer, so exported graphs are complete.
Pooling given as `"auto"` is resolved here from the input shape (`auto_pools`), so it needs
nothing a checkpoint lacks; `resolve_arch` writes the resolved, explicit config.
"""

from __future__ import annotations

import torch
from torch import nn

from components.config.architectures import (
    AUTO_POOL_SIZE,
    CNNConfig,
    DSCNNConfig,
    MLPConfig,
    ResNetConfig,
)

ArchCfg = MLPConfig | CNNConfig | ResNetConfig | DSCNNConfig


class Normalize(nn.Module):
    """(x - mean) / std with the training split's statistics, kept as buffers in the checkpoint."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv_bn(c_in: int, c_out: int, groups: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def auto_pools(h: int, w: int, max_pools: int, target: int = AUTO_POOL_SIZE) -> int:
    """How many 2x2 pools (at most ``max_pools``) bring an (h, w) map to <= ``target`` a side."""
    n = 0
    while n < max_pools and max(h, w) > target and min(h, w) >= 2:
        h, w, n = h // 2, w // 2, n + 1
    return n


def _pool_count(pools: int | str, h: int, w: int, blocks: int) -> int:
    return auto_pools(h, w, blocks) if pools == "auto" else int(pools)


def resolve_arch(cfg: ArchCfg, in_shape: tuple[int, int, int] | list[int]) -> ArchCfg:
    """``cfg`` with `"auto"` pooling replaced by what it means at ``in_shape`` (same model)."""
    h, w = int(in_shape[1]), int(in_shape[2])
    if isinstance(cfg, CNNConfig | DSCNNConfig) and cfg.pools == "auto":
        return cfg.model_copy(update={"pools": auto_pools(h, w, len(cfg.channels))})
    if isinstance(cfg, ResNetConfig) and cfg.pool_after == "auto":
        return cfg.model_copy(update={"pool_after": list(range(auto_pools(h, w, len(cfg.blocks))))})
    return cfg


def _bounding_pool(h: int, w: int, size: int | None) -> tuple[nn.Module | None, int, int]:
    """An average pool taking an (h, w) map to at most ``size`` a side, or None if it fits.

    A fixed kernel (ceil(h / size)), not `AdaptiveAvgPool2d`: the TorchScript ONNX exporter
    refuses adaptive pooling to a size that does not divide the input (7x7 -> 4x4).
    """
    if size is None or (h <= size and w <= size):
        return None, h, w
    kh, kw = -(-h // size), -(-w // size)
    return nn.AvgPool2d((kh, kw), stride=(kh, kw)), h // kh, w // kw


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig, in_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_shape[0] * in_shape[1] * in_shape[2]
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            if cfg.dropout:
                layers.append(nn.Dropout(cfg.dropout))
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class CNN(nn.Module):
    def __init__(self, cfg: CNNConfig, in_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c, h, w = in_shape
        layers: list[nn.Module] = []
        pools = _pool_count(cfg.pools, h, w, len(cfg.channels))
        for i, out in enumerate(cfg.channels):
            layers.append(conv_bn(c, out))
            if i < pools and min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out
        if cfg.head == "gap":
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            width = c
        else:
            bound, h, w = _bounding_pool(h, w, cfg.flatten_size)
            layers += ([bound] if bound else []) + [nn.Flatten()]  # (N, C, h, w) -> (N, C*h*w)
            width = c * h * w
        if cfg.hidden:
            layers += [nn.Linear(width, cfg.hidden), nn.ReLU(inplace=True)]
            width = cfg.hidden
        if cfg.dropout:
            layers.append(nn.Dropout(cfg.dropout))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, width: int, inner: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, inner, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(out)))


class ResNet(nn.Module):
    def __init__(self, cfg: ResNetConfig, in_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        self.stem = conv_bn(in_shape[0], cfg.width)
        pool_after = resolve_arch(cfg, in_shape).pool_after
        layers: list[nn.Module] = []
        for i, inner in enumerate(cfg.blocks):
            layers.append(BasicBlock(cfg.width, inner))
            if i in pool_after:
                layers.append(nn.MaxPool2d(2))
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(cfg.width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.blocks(self.stem(x))))


class DSCNN(nn.Module):
    def __init__(self, cfg: DSCNNConfig, in_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        h, w = in_shape[1:]
        layers: list[nn.Module] = [conv_bn(in_shape[0], cfg.stem)]
        c = cfg.stem
        pools = _pool_count(cfg.pools, h, w, len(cfg.channels))
        for i, out in enumerate(cfg.channels):
            # depthwise 3x3 (spatial), then pointwise 1x1 (channel mixing)
            layers += [conv_bn(c, c, groups=c), conv_bn(c, out, k=1)]
            if i < pools and min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "cnn": CNN,
    "resnet": ResNet,
    "dscnn": DSCNN,
}


class Classifier(nn.Module):
    """Normalisation + backbone; `body` is the registry module, `norm` the dataset statistics."""

    def __init__(self, arch: nn.Module, mean: float, std: float):
        super().__init__()
        self.norm = Normalize(mean, std)
        self.body = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1] -> (N, K) logits
        return self.body(self.norm(x))


def build_model(
    cfg: ArchCfg,
    in_shape: tuple[int, int, int] | list[int],
    num_classes: int,
    mean: float = 0.0,
    std: float = 1.0,
) -> Classifier:
    """Instantiate the architecture that ``cfg.arch`` names, preceded by input normalisation."""
    in_shape = tuple(int(v) for v in in_shape)
    body = ARCHITECTURES[cfg.arch](cfg, in_shape, num_classes)  # type: ignore[arg-type]
    return Classifier(body, mean, std)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
