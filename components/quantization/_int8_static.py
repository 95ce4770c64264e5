"""Static int8 quantization of the pre-processed fp32 graph, in any of the candidate settings.

Not a variant (the leading underscore keeps it out of `quantize.variants`): the quantizer and
its calibration that `int8` searches over.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from components.core.data import Split

# calibration_method -> onnxruntime's CalibrationMethod member (the config's choices, tested)
CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# int8 format -> (activation type, weight type), onnxruntime QuantType members
FORMATS = {"U8S8": ("QUInt8", "QInt8"), "S8S8": ("QInt8", "QInt8")}


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
                  exclude: Sequence[str] = (), cache_dir: Path | None = None,
                  fmt: str = "S8S8", quant_format: str = "QDQ") -> Path:
    """Static int8 of the pre-processed graph ``pre``: ``fmt`` (U8S8 = uint8 activations, int8
    weights; S8S8 = int8 both) in ``quant_format`` (QDQ or QOperator).

    Ranges are cached per method in ``cache_dir``: they come from the float graph, so every
    format, form and exclusion list re-uses one calibration.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    activation, weight = FORMATS[fmt]
    cache = cache_dir / f"ranges-{method}.json" if cache_dir else None
    quantize_static(
        str(pre), str(out),
        calibration_data_reader=None if cache and cache.exists() else _reader(calib),
        quant_format=getattr(QuantFormat, quant_format),
        activation_type=getattr(QuantType, activation), weight_type=getattr(QuantType, weight),
        per_channel=per_channel, nodes_to_exclude=list(exclude) or None,
        calibrate_method=_calibration_method(method),
        calibration_providers=["CPUExecutionProvider"],
        calibration_cache_path=str(cache) if cache else None,
    )
    return out


def quantize_candidate(cand: dict[str, Any], pre: Path, out: Path, calib: Split,
                       cache_dir: Path) -> Path:
    """Quantize ``pre`` with a candidate's settings (format, per_channel, method, quant_format,
    excluded_nodes)."""
    return quantize_int8(pre, out, calib, cand["method"], cand["per_channel"],
                         cand.get("excluded_nodes", ()), cache_dir, cand["format"],
                         cand["quant_format"])


def describe(cand: dict[str, Any]) -> str:
    """e.g. ``U8S8 QDQ per-tensor minmax`` (+ the nodes kept in float)."""
    text = (f"{cand['format']} {cand['quant_format']} "
            f"{'per-channel' if cand['per_channel'] else 'per-tensor'} {cand['method']}")
    return text + (f" with {len(cand['excluded_nodes'])} float nodes"
                   if cand["excluded_nodes"] else "")
