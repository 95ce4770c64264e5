"""`int8_dynamic`: weights quantized offline, activation ranges computed per batch at run time."""

from __future__ import annotations

from pathlib import Path

from components.quantization.common import VariantContext, VariantResult


def quantize_int8_dynamic(src: Path, out: Path) -> Path:
    """Dynamic int8: weights quantized offline, activation ranges computed per batch at run time.

    Conv becomes ConvInteger, whose CPU kernel needs uint8 weights, hence QUInt8 here.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(out), weight_type=QuantType.QUInt8)
    return out


def make(ctx: VariantContext, out: Path) -> VariantResult:
    return VariantResult(quantize_int8_dynamic(ctx.fp32, out))
