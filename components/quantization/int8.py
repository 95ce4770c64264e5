"""`int8`: static QDQ (QInt8 weights and activations), calibrated on a stratified sample of the
training split, with an accuracy-aware search.

When its validation accuracy falls more than ``max_accuracy_drop`` below fp32, the search tries
the other calibration methods and per-channel settings, then keeps the nodes that add the most
quantization error in float, one at a time. Every attempt is recorded; an int8 that never gets
within tolerance is reported as failed and not written.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from components.config import QuantizeConfig
from components.core.data import Split, stratified_sample
from components.export.onnx_utils import make_session, onnx_accuracy, rank_sensitive_nodes
from components.quantization.common import VariantContext, VariantResult

# calibration_method -> onnxruntime's CalibrationMethod member (the config's choices, tested)
CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


def _calibration_method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return getattr(CalibrationMethod, CALIBRATION[name])


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


def make(ctx: VariantContext, out: Path) -> VariantResult:
    calib = stratified_sample(ctx.prepared.train, ctx.cfg.calibration_size, ctx.cfg.seed)
    search = search_int8(ctx.cfg, ctx.preprocessed(), calib, ctx.prepared.val,
                         ctx.fp32_val_accuracy, ctx.work)
    if search["path"] is not None:
        shutil.copyfile(search["path"], out)
    report = {"int8_status": search["status"], "int8_reason": search.get("reason"),
              "attempts": search["attempts"], "float_nodes": search["float_nodes"]}
    return VariantResult(out if search["path"] is not None else None, report)
