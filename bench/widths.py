"""Latency against channel width on this host: the measurement behind `round_to`.

One ResNet block stack (the `large` student's shape) at 32x32 is exported at each width and
timed with ONNX Runtime at 1 thread, batch 1, in interleaved rounds (the median round kept), so
the channel block the runtime computes in (16 with AVX-512 here, 8 on narrower SIMD) shows as
steps in the curve: a width just past a block costs as much as the next full block.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

WIDTHS = (8, 12, 16, 20, 23, 24, 28, 32, 40, 46, 48, 56, 64)
SHAPE = (1, 32, 32)


def width_sweep(widths: tuple[int, ...] = WIDTHS, rounds: int = 3, runs: int = 60,
                classes: int = 10) -> list[dict[str, Any]]:
    """Per width: params, MACs, p50 and spread (ms) at 1 thread, batch 1."""
    import onnxruntime as ort
    import torch

    from components.config import ResNetConfig
    from components.core.timing import interleaved
    from components.export.onnx_utils import export_onnx
    from components.modeling.architectures import build_model, count_params
    from components.pruning.macs import count_macs

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    x = np.random.default_rng(0).random((1, *SHAPE), dtype=np.float32)
    rows, calls = {}, {}
    with tempfile.TemporaryDirectory(prefix="widths.") as tmp:
        for w in widths:
            torch.manual_seed(0)
            model = build_model(ResNetConfig(width=w, blocks=[w, w, w], pool_after=[0, 1]),
                                SHAPE, classes).eval()
            path = export_onnx(model, SHAPE, Path(tmp) / f"w{w}.onnx", 17)
            session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            calls[str(w)] = (lambda s: lambda: s.run(None, {"image": x}))(session)
            rows[str(w)] = {"width": w, "params": count_params(model),
                            "macs": count_macs(model, SHAPE)}
        timed = interleaved(calls, rounds=rounds, runs=runs, warmup=10)
    return [{**rows[k], "p50_ms": timed[k]["p50_ms"], "spread_ms": timed[k]["spread_ms"]}
            for k in rows]


def render(rows: list[dict[str, Any]]) -> str:
    lines = ["| width | params | MACs | p50 ms (1 thread, batch 1) | spread ms | ms per MMAC |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['width']} | {r['params']:,} | {r['macs']:,} | {r['p50_ms']:.3f} "
                     f"| {r['spread_ms']:.3f} | {r['p50_ms'] / (r['macs'] / 1e6):.4f} |")
    return "\n".join(lines)


HEADER = ("# Latency against channel width (ResNet, 3 blocks, 1x32x32, ONNX Runtime, 1 thread, "
          "batch 1)\n\n`python -m bench.widths`: interleaved rounds, median round p50. A width "
          "just past a channel block costs about as much as the next full block.\n\n")


if __name__ == "__main__":
    from components.core.io import atomic_write_text

    table = render(width_sweep())
    atomic_write_text(Path(__file__).parent / "results" / "widths.md", HEADER + table + "\n")
    print(table)
