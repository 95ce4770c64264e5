"""Default architectures sized from the data: `default_arch(role, in_shape, num_classes)`.

A starting point for a new dataset, not a tuned search. Depth follows the image size (one block
per 2x2 pool that `"auto"` pooling makes, plus one), width follows the number of classes and
input channels, and every width is a multiple of 16: ONNX Runtime's CPU kernels work in blocks
of 16 channels, so a width in between costs the next multiple's time for less capacity.

At 8x8 grey digits (10 classes) this gives a 2-block, 32-wide ResNet teacher and a [16, 32] CNN
student; at 32x32 a 4-block ResNet and a [16, 32, 64, 128] CNN, both with bounded heads.
Meant for images up to about 64x64: the registry's models have no strided stem, so larger
images keep a large map after the at most four pools (resize them at ingest).
"""

from __future__ import annotations

from typing import Literal

from components.config.architectures import CNNConfig, ResNetConfig
from components.modeling.architectures import auto_pools

CHANNEL_MULTIPLE = 16
MAX_STAGES = 4  # blocks of the teacher / conv stages of the student
MAX_WIDTH = 256


def round_channels(value: float, multiple: int = CHANNEL_MULTIPLE) -> int:
    """``value`` to the nearest multiple of ``multiple`` (at least one multiple, at most 256)."""
    return int(min(MAX_WIDTH, max(multiple, multiple * round(value / multiple))))


def width_factor(in_channels: int, num_classes: int) -> float:
    """1 for grey images of up to 10 classes; grows with the fourth root of channels x classes.

    A fourth root, since a conv's cost grows with the square of its width: 100 RGB classes get
    2.3x the width (5.5x the MACs), not the 5.5x width a square root would give.
    """
    return max(1.0, (in_channels * num_classes / 10) ** 0.25)


def default_arch(role: Literal["teacher", "student"], in_shape: tuple[int, int, int] | list[int],
                 num_classes: int) -> ResNetConfig | CNNConfig:
    """A teacher (ResNet) or student (CNN) config for images of ``in_shape`` = (C, H, W)."""
    c, h, w = (int(v) for v in in_shape)
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    stages = min(MAX_STAGES, max(2, auto_pools(h, w, MAX_STAGES) + 1))
    factor = width_factor(c, num_classes)
    if role == "teacher":
        width = round_channels(32 * factor)
        return ResNetConfig(width=width, blocks=[width] * stages, pool_after="auto")
    if role == "student":
        channels = [round_channels(16 * factor * 2**i) for i in range(stages)]
        return CNNConfig(channels=channels, pools="auto", head="gap")
    raise ValueError(f"role must be `teacher` or `student`, got `{role}`")
