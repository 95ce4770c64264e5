"""Config of the `prune` stage."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from components.config.base import Section, plugin_names


class PruneConfig(Section):
    method: Literal["structured", "unstructured"] = Field(
        default="structured",
        description="Remove whole channels (smaller, faster model) or zero single weights.",
    )
    criterion: Literal[plugin_names("pruning/criteria")] = Field(  # type: ignore[valid-type]
        default="l1", description="Structured: channel importance criterion (lowest removed), "
        "a module of `components/pruning/criteria/`."
    )
    target: Literal["params", "macs", "latency"] = Field(
        default="params", description="Structured: what `target_ratio` is a reduction of "
        "(`latency`: measured p50 on the primary profile, ONNX Runtime)."
    )
    target_ratio: float = Field(
        default=0.5, description="Structured: share of params/MACs to remove, in [0, 1)."
    )
    steps: int = Field(default=3, ge=1, description="Prune in this many equal increments.")
    max_accuracy_drop: float = Field(
        default=0.01, ge=0, description="Largest allowed val-accuracy drop vs the unpruned model: "
        "a step qualifies when the paired 95% upper bound of its drop is within it."
    )
    round_to: int | None = Field(
        default=None, ge=1, description="Structured: every pruned width is a multiple of this "
        "channel block (a layer of one block or less is left whole); None: the primary "
        "profile's `channel_multiple`; 1: no rounding."
    )
    seeds: int = Field(
        default=1, ge=1, description="Each step's fine-tune is repeated over this many seeds "
        "(offsets on the training seed); the best-val one is kept, mean and spread reported."
    )
    finetune_epochs: int = Field(default=5, gt=0, description="Fine-tuning epochs after a step.")
    finetune_lr: float = Field(
        default=1e-3, gt=0, le=10,
        description="Peak learning rate of each fine-tune (cosine decay): low, to keep weights.",
    )
    sparsity: float = Field(
        default=0.5, description="Unstructured: share of conv/linear weights to zero, in [0, 1)."
    )
    calibration_samples: int = Field(
        default=256, gt=0, description="`taylor`: training samples used to score channels."
    )

    @field_validator("target_ratio", "sparsity")
    @classmethod
    def _share(cls, v: float, info: Any) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"{info.field_name} must be in [0, 1) (a share to remove), got {v}")
        return v
