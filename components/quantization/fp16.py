"""`fp16`: every float tensor in half precision (inputs and outputs stay float32)."""

from __future__ import annotations

from pathlib import Path

from components.export.onnx_utils import convert_fp16
from components.quantization.common import VariantContext, VariantResult


def make(ctx: VariantContext, out: Path) -> VariantResult:
    return VariantResult(convert_fp16(ctx.fp32, out))
