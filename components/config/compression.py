"""Config of the compression stages: `prune` and `quantize`."""

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
    target: Literal["params", "macs"] = Field(
        default="params", description="Structured: what `target_ratio` is a reduction of."
    )
    target_ratio: float = Field(
        default=0.5, description="Structured: share of params/MACs to remove, in [0, 1)."
    )
    steps: int = Field(default=3, ge=1, description="Prune in this many equal increments.")
    max_accuracy_drop: float = Field(
        default=0.01, ge=0, description="Largest allowed val-accuracy drop vs the unpruned model."
    )
    finetune_epochs: int = Field(default=5, gt=0, description="Fine-tuning epochs after a step.")
    finetune_lr: float = Field(
        default=1e-3, gt=0,
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


# fp32 (the exported graph) and one variant per module of `components/quantization/`
VARIANTS = ("fp32", *plugin_names("quantization"))
Variant = Literal[VARIANTS]  # type: ignore[valid-type]
Method = Literal["minmax", "entropy", "percentile"]


class QuantizeConfig(Section):
    opset: int = Field(default=17, ge=17, description="ONNX opset of the exported graphs.")
    parity_max_abs_diff: float = Field(
        default=1e-4, gt=0, description="fp32 ONNX vs PyTorch: largest allowed |logit difference|."
    )
    parity_min_top1_agreement: float = Field(
        default=1.0, ge=0, le=1, description="fp32 ONNX vs PyTorch: minimum share of equal top-1."
    )
    calibration_size: int = Field(
        default=256, gt=0, description="Stratified sample of the training split used to calibrate."
    )
    calibration_method: Method = Field(default="minmax", description="Activation range estimator.")
    per_channel: bool = Field(default=False, description="Per-output-channel weight scales.")
    max_accuracy_drop: float = Field(
        default=0.005, ge=0, le=1,
        description="Largest allowed val-accuracy drop of int8 vs fp32 (fraction, 0.005 = 0.5 pt).",
    )
    max_float_nodes: int = Field(
        default=4, ge=0, description="Most nodes the fallback may keep in float before giving up."
    )
    variants: list[Variant] = Field(
        default=list(VARIANTS), min_length=1, description="Variants to produce (fp32 always is)."
    )
    seed: int = Field(default=0, description="Seed of the calibration sample.")
