"""`quantize`: export the student to ONNX and derive its quantized variants.

fp32 is the exported graph, gated by parity with the PyTorch model over the whole test split.
Every other variant in `quantize.variants` is made by its module in `components/quantization/`
(`MAKERS`, by file name); one that cannot meet its own check (int8's accuracy search) is reported
and not written, while the stage goes on with the others. Decisions use the validation split;
test figures are reported only.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from components.config import Params, QuantizeConfig, plugin_names
from components.core.data import Dataset, load_prepared
from components.core.io import atomic_dir, atomic_write_json, sha256_file
from components.core.stage import StageIO, StageResult
from components.export.onnx_utils import (
    check_parity,
    compare_outputs,
    export_onnx,
    make_session,
    onnx_accuracy,
    run_session,
    torch_outputs,
)
from components.modeling.checkpoint import load_checkpoint
from components.quantization.common import VariantContext, VariantResult

Maker = Callable[[VariantContext, Path], VariantResult]
MAKERS: dict[str, Maker] = {
    name: importlib.import_module(f"components.quantization.{name}").make
    for name in plugin_names("quantization")
}

def _score(path: Path, data: Dataset, reference_test: np.ndarray) -> dict[str, Any]:
    session = make_session(path)
    test_out = run_session(session, data.test.x)
    parity = compare_outputs(reference_test, test_out, data.test.ids)
    return {
        "test_accuracy": float((test_out.argmax(1) == data.test.y).mean()),
        "val_accuracy": onnx_accuracy(session, data.val),
        "size_bytes": path.stat().st_size,
        "parity_max_abs_diff": parity["max_abs_diff"],
        "top1_agreement": parity["top1_agreement"],
        "parity_worst": parity["worst"],
    }


def quantize_stage(cfg: QuantizeConfig, checkpoint_dir: Path, prepared: Dataset, out_dir: Path,
                   metrics_path: Path) -> dict[str, Any]:
    """Write ``out_dir/{<variant>.onnx, report.json}`` and the metrics JSON; return the metrics.

    Raises :class:`components.export.onnx_utils.ParityError` when the fp32 export disagrees
    with the checkpoint; an int8 that misses the accuracy tolerance is reported, not raised.
    """
    ckpt = load_checkpoint(checkpoint_dir)
    reference_test = torch_outputs(ckpt.model, prepared.test.x)
    variants: dict[str, Any] = {}
    reports: dict[str, Any] = {"int8_status": "skipped", "attempts": [], "float_nodes": []}
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory(prefix="quantize.") as w:
        fp32 = export_onnx(ckpt.model, ckpt.in_shape, tmp / "fp32.onnx", cfg.opset)
        check_parity(reference_test, fp32, prepared.test, cfg.parity_max_abs_diff,
                     cfg.parity_min_top1_agreement)
        variants["fp32"] = _score(fp32, prepared, reference_test)
        fp32_val = variants["fp32"]["val_accuracy"]
        ctx = VariantContext(cfg, fp32, prepared, fp32_val, Path(w))
        for name in cfg.variants:
            if name == "fp32":
                continue
            made = MAKERS[name](ctx, tmp / f"{name}.onnx")
            reports.update(made.report)
            if made.path is not None:
                variants[name] = _score(made.path, prepared, reference_test)
        for name, m in variants.items():
            m["accuracy_drop_vs_fp32"] = fp32_val - m["val_accuracy"]
            # reported for every variant; only int8 is searched and withheld when it fails
            m["within_tolerance"] = m["accuracy_drop_vs_fp32"] <= cfg.max_accuracy_drop + 1e-12
            m["sha256"] = sha256_file(tmp / f"{name}.onnx")
        metrics = {
            "variants": variants,
            **reports,
            "fp32_val_accuracy": fp32_val,
            "source": {"checkpoint": str(ckpt.path), "sha256": ckpt.sha256,
                       "data_hash": prepared.manifest.get("data_hash")},
        }
        atomic_write_json(tmp / "report.json", {"config": cfg.model_dump(), **metrics})
    atomic_write_json(metrics_path, metrics)
    return metrics


def run(cfg: Params, io: StageIO) -> StageResult:
    """The `quantize` stage: the pruned student's fp32 export and its quantized variants."""
    metrics = quantize_stage(cfg.quantize, io.dep("pruned"), load_prepared(io.dep("prepared")),
                             io.out("quantized"), io.metrics)
    return StageResult(metrics=metrics, params=cfg.quantize.model_dump(),
                       artifacts=[io.out("quantized") / "report.json"])
