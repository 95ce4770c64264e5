"""Config of the `quantize` stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from components.config.base import Section, plugin_names

# fp32 (the exported graph) and one variant per module of `components/quantization/`
VARIANTS = ("fp32", *plugin_names("quantization"))
Variant = Literal[VARIANTS]  # type: ignore[valid-type]
Method = Literal["minmax", "entropy", "percentile"]
QuantFormat = Literal["QDQ", "QOperator"]


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
    calibration_method: Method = Field(
        default="minmax", description="Activation range estimator tried first (the others only "
        "when no int8 candidate passes the accuracy check).")
    per_channel: bool = Field(
        default=False, description="Per-output-channel weight scales tried first (both are tried).")
    quant_formats: list[QuantFormat] = Field(
        default=["QDQ", "QOperator"], min_length=1,
        description="int8 graph forms to try: QDQ (Quantize/Dequantize pairs the runtime fuses) "
        "and/or QOperator (QLinearConv & co.).")
    max_candidates: int = Field(
        default=8, gt=0,
        description="Most int8 quantizations of the candidate grid (profile formats x "
        "per-channel x quant formats, at `calibration_method`); each is scored and timed.")
    max_accuracy_drop: float = Field(
        default=0.005, ge=0, le=1,
        description="Margin of the paired check vs fp32 on val: a variant passes when the 95% "
        "one-sided upper bound of its accuracy drop is at most this (fraction, 0.005 = 0.5 pt).",
    )
    max_float_nodes: int = Field(
        default=4, ge=0, description="Most nodes the fallback may keep in float before giving up."
    )
    variants: list[Variant] = Field(
        default=list(VARIANTS), min_length=1, description="Variants to produce (fp32 always is)."
    )
    seed: int = Field(default=0, description="Seed of the calibration sample.")
    timing_rounds: int = Field(
        default=3, gt=0, description="Interleaved timing rounds of each int8 decision vs fp32.")
    timing_runs: int = Field(
        default=50, gt=0, description="Timed calls per candidate and round.")
