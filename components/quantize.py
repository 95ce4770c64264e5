"""`quantize`: export the student to ONNX and derive its quantized variants.

fp32 is the exported graph, gated by parity with the PyTorch model over the whole test split.
Every other variant in `quantize.variants` is made by its module in `components/quantization/`
(`MAKERS`, by file name); one that does not meet its own check (int8: the paired accuracy check
and a measured speed-up on the primary profile; int8_dynamic: a speed-up on some CPU profile)
is reported under `variants_dropped` and not written, while the stage goes on with the others.
Decisions use the validation split, paired with fp32 on the same samples; test figures are
reported only, each with its 95% interval and n.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from components.config import Params, QuantizeConfig, plugin_names
from components.config.deployment import DeviceProfile
from components.core.data import Dataset, load_prepared
from components.core.io import atomic_dir, atomic_write_json, sha256_file
from components.core.stage import StageIO, StageResult
from components.core.stats import accuracy_summary, compare
from components.export.onnx_utils import (
    check_parity,
    compare_outputs,
    export_onnx,
    make_session,
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

def _score(path: Path, data: Dataset, reference_test: np.ndarray) -> tuple[dict, np.ndarray]:
    """A written variant's figures, and its val correctness (N_val,) for the paired checks."""
    session = make_session(path)
    test_out = run_session(session, data.test.x)
    val_correct = run_session(session, data.val.x).argmax(1) == data.val.y
    parity = compare_outputs(reference_test, test_out, data.test.ids)
    return {
        "test_accuracy": float((test_out.argmax(1) == data.test.y).mean()),
        "test_accuracy_ci": accuracy_summary(test_out.argmax(1) == data.test.y),
        "val_accuracy": float(val_correct.mean()),
        "size_bytes": path.stat().st_size,
        "parity_max_abs_diff": parity["max_abs_diff"],
        "top1_agreement": parity["top1_agreement"],
        "parity_worst": parity["worst"],
    }, val_correct


def quantize_stage(cfg: QuantizeConfig, checkpoint_dir: Path, prepared: Dataset, out_dir: Path,
                   metrics_path: Path, profiles: dict[str, DeviceProfile] | None = None,
                   primary: str | None = None) -> dict[str, Any]:
    """Write ``out_dir/{<variant>.onnx, report.json}`` and the metrics JSON; return the metrics.

    ``profiles`` (default: one single-thread, batch-1 CPU profile ``host``) and ``primary``
    (default: the first) are where speed decisions are measured: int8 on the primary profile,
    int8_dynamic on every CPU profile. Raises :class:`components.export.onnx_utils.ParityError`
    when the fp32 export disagrees with the checkpoint; a variant that fails its own check is
    reported under ``variants_dropped``, not raised.
    """
    profiles = profiles or {"host": DeviceProfile()}
    primary = primary or next(iter(profiles))
    ckpt = load_checkpoint(checkpoint_dir)
    reference_test = torch_outputs(ckpt.model, prepared.test.x)
    variants: dict[str, Any] = {}
    dropped: dict[str, str] = {}
    reports: dict[str, Any] = {"int8_status": "skipped", "int8_reason": None,
                               "int8_candidates": [], "int8_settings": None, "float_nodes": []}
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory(prefix="quantize.") as w:
        fp32 = export_onnx(ckpt.model, ckpt.in_shape, tmp / "fp32.onnx", cfg.opset)
        check_parity(reference_test, fp32, prepared.test, cfg.parity_max_abs_diff,
                     cfg.parity_min_top1_agreement)
        variants["fp32"], fp32_correct = _score(fp32, prepared, reference_test)
        corrects = {"fp32": fp32_correct}
        fp32_val = variants["fp32"]["val_accuracy"]
        ctx = VariantContext(cfg, fp32, prepared, fp32_val, Path(w), fp32_correct, profiles,
                             primary)
        for name in cfg.variants:
            if name == "fp32":
                continue
            made = MAKERS[name](ctx, tmp / f"{name}.onnx")
            reports.update(made.report)
            if made.path is not None:
                variants[name], corrects[name] = _score(made.path, prepared, reference_test)
            elif made.dropped:
                dropped[name] = made.dropped
        for name, m in variants.items():
            m["accuracy_drop_vs_fp32"] = fp32_val - m["val_accuracy"]
            # the paired check on the same val samples: passes iff the 95% upper bound of the
            # drop is within max_accuracy_drop (fp32 is the reference itself)
            cmp = None if name == "fp32" else compare(fp32_correct, corrects[name],
                                                      cfg.max_accuracy_drop)
            m["val_drop_vs_fp32"] = cmp.drop if cmp else None
            m["passes"] = cmp.passes if cmp else True
            m["sha256"] = sha256_file(tmp / f"{name}.onnx")
        metrics = {
            "variants": variants,
            "variants_dropped": dropped,
            **reports,
            "fp32_val_accuracy": fp32_val,
            "fp32_val_accuracy_ci": accuracy_summary(fp32_correct),
            "timed_on": {"primary": primary, "profiles": {
                n: {"threads": p.threads, "batch_size": p.batch_size, "providers": p.providers,
                    "isa": p.resolved_isa(), "int8_formats": p.resolved_int8_formats()}
                for n, p in profiles.items()}},
            "source": {"checkpoint": str(ckpt.path), "sha256": ckpt.sha256,
                       "data_hash": prepared.manifest.get("data_hash")},
        }
        atomic_write_json(tmp / "report.json", {"config": cfg.model_dump(), **metrics})
    atomic_write_json(metrics_path, metrics)
    return metrics


def run(cfg: Params, io: StageIO) -> StageResult:
    """The `quantize` stage: the pruned student's fp32 export and its quantized variants."""
    metrics = quantize_stage(cfg.quantize, io.dep("pruned"), load_prepared(io.dep("prepared")),
                             io.out("quantized"), io.metrics, cfg.evaluate.profiles,
                             cfg.register_.policy.primary_profile)
    return StageResult(metrics=metrics, params=cfg.quantize.model_dump(),
                       artifacts=[io.out("quantized") / "report.json"])
