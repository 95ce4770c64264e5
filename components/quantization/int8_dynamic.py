"""`int8_dynamic`: weights quantized offline, activation ranges computed per batch at run time.

Kept only where it measures faster than fp32: it is timed against fp32 on every CPU profile, at
the profile's threads and batch size, and written when it is faster on at least one of them
(dynamic quantization buys speed, not size worth a variant, on these CNNs).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from components.core.timing import faster
from components.quantization import common
from components.quantization.common import VariantContext, VariantResult


def quantize_int8_dynamic(src: Path, out: Path) -> Path:
    """Dynamic int8: weights quantized offline, activation ranges computed per batch at run time.

    Conv becomes ConvInteger, whose CPU kernel needs uint8 weights, hence QUInt8 here.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(out), weight_type=QuantType.QUInt8)
    return out


def keep_dynamic(timings: dict[str, dict[str, dict[str, Any]]]) -> tuple[list[str], str | None]:
    """The profiles where int8_dynamic is faster than fp32, and why it is dropped when none.

    ``timings``: profile -> ``{"fp32": timing, "int8_dynamic": timing}`` (`timing.interleaved`).
    """
    wins = [p for p, t in timings.items() if faster(t["int8_dynamic"], t["fp32"])]
    if wins:
        return wins, None
    notes = "; ".join(f"{p} {common.timing_note(t['int8_dynamic'], t['fp32'])}"
                      for p, t in timings.items())
    return [], f"slower than fp32 on every profile: {notes}"


def make(ctx: VariantContext, out: Path) -> VariantResult:
    cand = quantize_int8_dynamic(ctx.fp32, ctx.work / "int8_dynamic.onnx")
    timings = {}
    for name, profile in ctx.cpu_profiles().items():
        x = common.timing_batch(ctx.prepared.val, profile.batch_size)
        timings[name] = common.measure({"fp32": ctx.fp32, "int8_dynamic": cand}, profile, x,
                                       ctx.cfg.timing_rounds, ctx.cfg.timing_runs)
    wins, reason = keep_dynamic(timings)
    report = {"int8_dynamic_timing": {
        p: {v: {k: t[v][k] for k in ("p50_ms", "spread_ms")} for v in t} | {"faster": p in wins}
        for p, t in timings.items()}}
    if reason is not None:
        return VariantResult(None, report, dropped=reason)
    shutil.copyfile(cand, out)
    return VariantResult(out, report)
