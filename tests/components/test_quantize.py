"""`quantize`: int8/fp16/dynamic variants and the accuracy-aware fallback.

The parity gate on the export is tested in `tests/components/export/test_onnx_utils.py`.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from pydantic import ValidationError

from components.config import QuantizeConfig
from components.core.data import Dataset
from components.core.io import read_json
from components.quantize import quantize_stage
from tests.helpers_models import make_checkpoint, make_digits


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_digits()


@pytest.fixture(scope="module")
def checkpoint(data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"), data)


def test_quantize_stage_writes_every_variant_with_metrics(data: Dataset, checkpoint: Path,
                                                          tmp_path: Path):
    cfg = QuantizeConfig(calibration_size=64, max_accuracy_drop=1.0)
    metrics = quantize_stage(cfg, checkpoint, data, tmp_path / "q", tmp_path / "m.json")
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == [
        "fp16.onnx", "fp32.onnx", "int8.onnx", "int8_dynamic.onnx", "report.json"]
    v = metrics["variants"]
    assert set(v) == {"fp32", "int8", "int8_dynamic", "fp16"}
    assert v["fp32"]["parity_max_abs_diff"] <= 1e-4 and v["fp32"]["top1_agreement"] == 1.0
    assert v["fp16"]["top1_agreement"] >= 0.95
    for m in v.values():
        assert 0.0 <= m["test_accuracy"] <= 1.0 and m["size_bytes"] > 0
    # the int8 graph really is quantized: its weights are stored as 8-bit integers
    int8 = onnx.load(str(tmp_path / "q" / "int8.onnx"))
    assert any(n.op_type == "DequantizeLinear" for n in int8.graph.node)
    assert metrics["int8_status"] == "ok" and len(metrics["attempts"]) == 1
    written = read_json(tmp_path / "m.json")["variants"]
    assert written["int8"]["test_accuracy"] == pytest.approx(v["int8"]["test_accuracy"])


def test_quantize_fallback_keeps_sensitive_nodes_in_float(data: Dataset, tmp_path: Path):
    ckpt = make_checkpoint(tmp_path / "ckpt", data, outlier=True)
    cfg = QuantizeConfig(calibration_size=64, max_accuracy_drop=0.03, per_channel=True,
                         variants=["fp32", "int8"])
    metrics = quantize_stage(cfg, ckpt, data, tmp_path / "q", tmp_path / "m.json")
    attempts = metrics["attempts"]
    # every calibration method x per-channel setting fails, then nodes go back to float
    assert [a["excluded_nodes"] for a in attempts[:6]] == [[]] * 6
    assert not any(a["within_tolerance"] for a in attempts[:6])
    assert {(a["method"], a["per_channel"]) for a in attempts[:6]} == {
        (m, pc) for m in ("minmax", "entropy", "percentile") for pc in (False, True)}
    assert metrics["int8_status"] == "ok", metrics["int8_reason"]
    assert metrics["float_nodes"] and len(metrics["float_nodes"]) <= cfg.max_float_nodes
    assert any("features.2" in n for n in metrics["float_nodes"])  # the conv fed by the outlier
    assert metrics["variants"]["int8"]["accuracy_drop_vs_fp32"] <= 0.03


def test_quantize_reports_int8_failure_and_keeps_other_variants(data: Dataset, tmp_path: Path):
    ckpt = make_checkpoint(tmp_path / "ckpt", data, outlier=True)
    cfg = QuantizeConfig(calibration_size=64, max_accuracy_drop=0.03, max_float_nodes=0,
                         variants=["fp32", "int8", "fp16"])
    metrics = quantize_stage(cfg, ckpt, data, tmp_path / "q", tmp_path / "m.json")
    assert metrics["int8_status"] == "failed"
    assert "max_accuracy_drop" in metrics["int8_reason"] and "6 attempts" in metrics["int8_reason"]
    assert len(metrics["attempts"]) == 6
    assert set(metrics["variants"]) == {"fp32", "fp16"}
    assert not (tmp_path / "q" / "int8.onnx").exists()
    assert read_json(tmp_path / "q" / "report.json")["int8_status"] == "failed"


@pytest.mark.parametrize("bad", [{"opset": 13}, {"variants": ["int4"]},
                                 {"calibration_method": "kl"}, {"unknown": 1}])
def test_quantize_config_rejects_impossible_values(bad: dict):
    with pytest.raises(ValidationError):
        QuantizeConfig(**bad)
