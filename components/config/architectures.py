"""Architecture configs: one per model in `components.modeling.architectures.ARCHITECTURES`.

Configs list every layer width explicitly so that a pruned model is just the same architecture
with smaller widths: rebuilding it needs only the config, never a pickled module. The `arch`
discriminator of each config is a key of `ARCHITECTURES` (tested).

Pooling may be `"auto"`: resolved when the model is built, from the input shape alone (which
every checkpoint stores), so an `"auto"` config always rebuilds the same model for the same
input. `"auto"` pools 2x2 after each block until the feature map is at most `AUTO_POOL_SIZE`
on each side, so compute and head size follow the image size instead of growing with it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from components.config.base import Section

AUTO_POOL_SIZE = 4  # "auto" pools until the feature map is at most this on each side

Auto = Literal["auto"]


class _ArchConfig(Section):
    """An architecture's config: refuses unknown keys, nan/inf and booleans for numbers."""


class MLPConfig(_ArchConfig):
    """Fully connected network: no spatial prior at all (sees pixels as an unordered vector)."""

    arch: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(gt=0)]] = Field(
        default=[512, 256], min_length=1, description="Width of each hidden layer."
    )
    dropout: float = Field(default=0.2, ge=0, lt=1, description="Dropout after each hidden layer.")


class CNNConfig(_ArchConfig):
    """Plain VGG-style CNN: conv3x3-BN-ReLU blocks, 2x2 max-pool after the first `pools`.

    A `flatten` head first average-pools a map larger than `flatten_size` down to at most
    `flatten_size` per side, so the classifier's inputs stay bounded on large images.
    """

    arch: Literal["cnn"] = "cnn"
    channels: list[Annotated[int, Field(gt=0)]] = Field(
        default=[64, 128], min_length=1, description="Output channels of each conv block."
    )
    pools: Annotated[int, Field(ge=0)] | Auto = Field(
        default=2,
        description='Max-pool (2x2) after this many first blocks; "auto": until the map is <= 4x4.',
    )
    head: Literal["gap", "flatten"] = Field(
        default="gap", description="Global average pooling or flatten before the classifier."
    )
    flatten_size: int | None = Field(
        default=AUTO_POOL_SIZE,
        gt=0,
        description="`flatten` head: average-pool a larger map to at most this per side first; "
        "null: flatten the map whatever its size.",
    )
    hidden: int = Field(default=0, ge=0, description="Hidden units before the classifier, 0: none.")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout before the classifier.")


class ResNetConfig(_ArchConfig):
    """Residual CNN: a stem, then basic blocks (conv-BN-ReLU-conv-BN + identity) at `width`."""

    arch: Literal["resnet"] = "resnet"
    width: int = Field(default=32, gt=0, description="Channels of the residual stream.")
    blocks: list[Annotated[int, Field(gt=0)]] = Field(
        default=[32, 32, 32], min_length=1, description="Inner channels of each residual block."
    )
    pool_after: list[Annotated[int, Field(ge=0)]] | Auto = Field(
        default=[0],
        description='Indices of blocks followed by a 2x2 max-pool; "auto": the first blocks, '
        "until the map is <= 4x4.",
    )


class DSCNNConfig(_ArchConfig):
    """Depthwise-separable CNN (MobileNet-style), built for small students on edge CPUs."""

    arch: Literal["dscnn"] = "dscnn"
    stem: int = Field(default=16, gt=0, description="Channels of the first full 3x3 conv.")
    channels: list[Annotated[int, Field(gt=0)]] = Field(
        default=[32, 48], min_length=1, description="Pointwise output channels of each DS block."
    )
    pools: Annotated[int, Field(ge=0)] | Auto = Field(
        default=2,
        description='Max-pool (2x2) after this many first stages; "auto": until the map is <= 4x4.',
    )


ArchConfig = Annotated[
    MLPConfig | CNNConfig | ResNetConfig | DSCNNConfig, Field(discriminator="arch")
]
