"""`quantize`: export the student to ONNX and derive its int8, dynamic-int8 and fp16 variants.

fp32 is the exported graph, gated by parity with the PyTorch model over the whole test split.
int8 is static QDQ (QInt8 weights and activations) calibrated on a stratified sample of the
training split; when its validation accuracy falls more than ``max_accuracy_drop`` below fp32,
an accuracy-aware search tries the other calibration methods and per-channel settings, then keeps
the nodes that add the most quantization error in float, one at a time. Every attempt is recorded;
an int8 that never gets within tolerance is reported as failed and not written, while the stage
goes on with the other variants. Decisions use the validation split; test figures are reported only.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from components.config import Params, QuantizeConfig
from components.core.data import Dataset, Split, load_prepared, stratified_sample
from components.core.io import atomic_dir, atomic_write_json, sha256_file
from components.core.stage import StageIO, StageResult
from components.export.onnx_utils import (
    check_parity,
    compare_outputs,
    convert_fp16,
    export_onnx,
    make_session,
    onnx_accuracy,
    rank_sensitive_nodes,
    run_session,
    torch_outputs,
)
from components.modeling.checkpoint import load_checkpoint


def _calibration_method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def _reader(split: Split) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    # equal batches: the histogram calibrators (entropy, percentile) stack them
    batch_size = max(d for d in range(1, 33) if len(split) % d == 0)

    class SplitReader(CalibrationDataReader):
        """Feeds ``image`` batches of the calibration sample, once."""

        def __init__(self) -> None:
            self._batches = iter([{"image": split.x[i : i + batch_size]}
                                  for i in range(0, len(split), batch_size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    return SplitReader()


def quantize_int8(pre: Path, out: Path, calib: Split, method: str, per_channel: bool,
                  exclude: list[str] = (), cache_dir: Path | None = None) -> Path:
    """Static QDQ int8 (QInt8 weights and activations) of the pre-processed graph ``pre``.

    Ranges are cached per method in ``cache_dir`` so the fallback's re-quantizations skip
    calibration (ranges come from the float graph and do not depend on exclusions).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    cache = cache_dir / f"ranges-{method}.json" if cache_dir else None
    quantize_static(
        str(pre), str(out),
        calibration_data_reader=None if cache and cache.exists() else _reader(calib),
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8, per_channel=per_channel,
        nodes_to_exclude=list(exclude) or None,
        calibrate_method=_calibration_method(method),
        calibration_providers=["CPUExecutionProvider"],
        calibration_cache_path=str(cache) if cache else None,
    )
    return out


def quantize_int8_dynamic(src: Path, out: Path) -> Path:
    """Dynamic int8: weights quantized offline, activation ranges computed per batch at run time.

    Conv becomes ConvInteger, whose CPU kernel needs uint8 weights, hence QUInt8 here.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(out), weight_type=QuantType.QUInt8)
    return out


def search_int8(cfg: QuantizeConfig, pre: Path, calib: Split, val: Split, fp32_val: float,
                work: Path) -> dict[str, Any]:
    """Accuracy-aware int8: configured settings, then the others, then float fallback nodes.

    Returns ``{status, path (or None), attempts, float_nodes, reason}``.
    """
    attempts: list[dict[str, Any]] = []

    def attempt(method: str, per_channel: bool, exclude: list[str]) -> dict[str, Any]:
        path = work / f"int8-{len(attempts)}.onnx"
        quantize_int8(pre, path, calib, method, per_channel, exclude, cache_dir=work)
        acc = onnx_accuracy(make_session(path), val)
        rec = {"method": method, "per_channel": per_channel, "excluded_nodes": list(exclude),
               "val_accuracy": acc, "drop": fp32_val - acc,
               "within_tolerance": fp32_val - acc <= cfg.max_accuracy_drop + 1e-12,
               "path": path}
        attempts.append(rec)
        return rec

    settings = [(cfg.calibration_method, cfg.per_channel)] + [
        s for s in itertools.product(("minmax", "entropy", "percentile"), (False, True))
        if s != (cfg.calibration_method, cfg.per_channel)]
    for method, per_channel in settings:
        if attempt(method, per_channel, [])["within_tolerance"]:
            break
    best = max(attempts, key=lambda a: a["val_accuracy"])  # first best wins ties
    excluded: list[str] = []
    current = best
    while not best["within_tolerance"] and len(excluded) < cfg.max_float_nodes:
        # re-rank on the latest graph: keeping one node in float moves where the error appears
        ranked = [n for n, _ in rank_sensitive_nodes(pre, current["path"], val.x[:256])
                  if n not in excluded]
        if not ranked:
            break
        excluded.append(ranked[0])
        current = attempt(best["method"], best["per_channel"], excluded)
        if current["val_accuracy"] > best["val_accuracy"] or current["within_tolerance"]:
            best = current
    ok = best["within_tolerance"]
    reason = None if ok else (
        f"int8 val accuracy {best['val_accuracy']:.4f} is {best['drop']:.4f} below fp32 "
        f"({fp32_val:.4f}), more than max_accuracy_drop {cfg.max_accuracy_drop:g}, after "
        f"{len(attempts)} attempts (3 calibration methods x per-channel on/off, then up to "
        f"{cfg.max_float_nodes} nodes kept in float)")
    return {"status": "ok" if ok else "failed", "reason": reason,
            "path": best["path"] if ok else None,
            "float_nodes": best["excluded_nodes"] if ok else [],
            "best_attempt": attempts.index(best),
            "attempts": [{k: v for k, v in a.items() if k != "path"} for a in attempts]}


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

    Raises :class:`components.export.onnx_utils.ParityError` when the fp32 export disagrees with the
    checkpoint; an int8 that misses the accuracy tolerance is reported, not raised.
    """
    from onnxruntime.quantization import quant_pre_process

    ckpt = load_checkpoint(checkpoint_dir)
    reference_test = torch_outputs(ckpt.model, prepared.test.x)
    variants: dict[str, Any] = {}
    search: dict[str, Any] = {"status": "skipped", "attempts": [], "float_nodes": []}
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory(prefix="quantize.") as w:
        work = Path(w)
        fp32 = export_onnx(ckpt.model, ckpt.in_shape, tmp / "fp32.onnx", cfg.opset)
        check_parity(reference_test, fp32, prepared.test, cfg.parity_max_abs_diff,
                     cfg.parity_min_top1_agreement)
        variants["fp32"] = _score(fp32, prepared, reference_test)
        fp32_val = variants["fp32"]["val_accuracy"]
        if "int8" in cfg.variants:
            pre = work / "fp32-pre.onnx"
            quant_pre_process(str(fp32), str(pre))  # fold constants, shapes for the quantizer
            calib = stratified_sample(prepared.train, cfg.calibration_size, cfg.seed)
            search = search_int8(cfg, pre, calib, prepared.val, fp32_val, work)
            if search["path"] is not None:
                (tmp / "int8.onnx").write_bytes(search["path"].read_bytes())
                variants["int8"] = _score(tmp / "int8.onnx", prepared, reference_test)
        if "int8_dynamic" in cfg.variants:
            quantize_int8_dynamic(fp32, work / "int8_dynamic.onnx")
            (tmp / "int8_dynamic.onnx").write_bytes((work / "int8_dynamic.onnx").read_bytes())
            variants["int8_dynamic"] = _score(tmp / "int8_dynamic.onnx", prepared, reference_test)
        if "fp16" in cfg.variants:
            variants["fp16"] = _score(convert_fp16(fp32, tmp / "fp16.onnx"), prepared,
                                      reference_test)
        for name, m in variants.items():
            m["accuracy_drop_vs_fp32"] = fp32_val - m["val_accuracy"]
            # reported for every variant; only int8 is searched and withheld when it fails
            m["within_tolerance"] = m["accuracy_drop_vs_fp32"] <= cfg.max_accuracy_drop + 1e-12
            m["sha256"] = sha256_file(tmp / f"{name}.onnx")
        metrics = {
            "variants": variants,
            "int8_status": search["status"],
            "int8_reason": search.get("reason"),
            "attempts": search["attempts"],
            "float_nodes": search["float_nodes"],
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
