"""`quantize`: int8 configured per target (candidate grid, paired accuracy check, speed rule),
int8_dynamic kept only where faster, fp16, and the accuracy-aware fallback.

The parity gate on the export is tested in `tests/components/export/test_onnx_utils.py`; the
choice rules on constructed tables in `tests/components/quantization/`. Most tests here replace
the timing (`common.measure`) so that the decision does not hang on this machine's noise; one
times for real and checks that the decision agrees with what it measured.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from pydantic import ValidationError

from components.config import QuantizeConfig
from components.config.deployment import DeviceProfile
from components.core.data import Dataset
from components.core.io import read_json
from components.core.timing import faster
from components.quantization import common
from components.quantize import quantize_stage
from tests.helpers_models import make_checkpoint, make_digits


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_digits()


@pytest.fixture(scope="module")
def checkpoint(data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"), data)


def fake_timing(monkeypatch: pytest.MonkeyPatch, variant_ms: float) -> list[dict]:
    """fp32 takes 1 ms, every other graph ``variant_ms`` (+0.01 ms per place in the call, so
    the first listed is fastest); returns the recorded calls."""
    calls: list[dict] = []

    def measure(paths, profile, x, rounds=3, runs=50):
        calls.append({"names": list(paths), "threads": profile.threads, "batch": len(x)})
        return {n: {"p50_ms": 1.0 if n == "fp32" else variant_ms + 0.01 * i, "spread_ms": 0.01}
                for i, n in enumerate(paths)}

    monkeypatch.setattr(common, "measure", measure)
    return calls


def test_quantize_stage_writes_every_variant_that_is_faster(data: Dataset, checkpoint: Path,
                                                             tmp_path: Path, monkeypatch):
    calls = fake_timing(monkeypatch, variant_ms=0.5)
    cfg = QuantizeConfig(calibration_size=64, max_accuracy_drop=0.2)
    profiles = {"edge": DeviceProfile(threads=1, batch_size=1),
                "server": DeviceProfile(threads=2, batch_size=16),
                "gpu": DeviceProfile(providers=["CUDAExecutionProvider"], batch_size=256)}
    metrics = quantize_stage(cfg, checkpoint, data, tmp_path / "q", tmp_path / "m.json",
                             profiles, primary="server")
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == [
        "fp16.onnx", "fp32.onnx", "int8.onnx", "int8_dynamic.onnx", "report.json"]
    v = metrics["variants"]
    assert set(v) == {"fp32", "int8", "int8_dynamic", "fp16"} and metrics["variants_dropped"] == {}
    assert v["fp32"]["parity_max_abs_diff"] <= 1e-4 and v["fp32"]["top1_agreement"] == 1.0
    assert v["fp16"]["top1_agreement"] >= 0.95
    for m in v.values():
        ci = m["test_accuracy_ci"]
        assert ci["n"] == len(data.test) and ci["ci_low"] <= m["test_accuracy"] <= ci["ci_high"]
        assert m["size_bytes"] > 0
    for name in ("int8", "int8_dynamic", "fp16"):
        drop = v[name]["val_drop_vs_fp32"]
        assert drop["n"] == len(data.val) and v[name]["passes"] == (drop["upper"] <= 0.2)
    # int8 timed on the primary profile (threads, batch), int8_dynamic on both CPU profiles
    assert calls[0]["threads"] == 2 and calls[0]["batch"] == 16 and len(calls[0]["names"]) == 9
    assert [(c["threads"], c["batch"]) for c in calls[1:]] == [(1, 1), (2, 16)]
    assert metrics["int8_status"] == "ok" and len(metrics["int8_candidates"]) == 8
    assert sum(c["chosen"] for c in metrics["int8_candidates"]) == 1
    chosen = metrics["int8_settings"]
    assert chosen["profile"] == "server" and chosen["speedup"] == pytest.approx(1 / 0.51)
    assert (chosen["format"], chosen["quant_format"]) == ("U8S8", "QDQ")  # the fake's fastest
    int8 = onnx.load(str(tmp_path / "q" / "int8.onnx"))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in int8.graph.node}
    assert int8.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    written = read_json(tmp_path / "m.json")
    assert written["variants"]["int8"]["test_accuracy"] == pytest.approx(v["int8"]["test_accuracy"])
    assert set(written["timed_on"]["profiles"]) == set(profiles)


def test_quantize_drops_int8_and_dynamic_that_are_not_faster(data: Dataset, checkpoint: Path,
                                                            tmp_path: Path, monkeypatch):
    fake_timing(monkeypatch, variant_ms=1.5)
    cfg = QuantizeConfig(calibration_size=64, max_accuracy_drop=0.2)
    metrics = quantize_stage(cfg, checkpoint, data, tmp_path / "q", tmp_path / "m.json")
    assert set(metrics["variants"]) == {"fp32", "fp16"}
    assert not (tmp_path / "q" / "int8.onnx").exists()
    assert not (tmp_path / "q" / "int8_dynamic.onnx").exists()
    assert metrics["int8_status"] == "dropped" and metrics["int8_settings"] is None
    assert "slower than fp32 on host: p50 1.5" in metrics["int8_reason"]
    assert metrics["variants_dropped"]["int8"] == metrics["int8_reason"]
    assert metrics["variants_dropped"]["int8_dynamic"].startswith(
        "slower than fp32 on every profile: host p50 1.5")
    assert all(c["rejected"].startswith("speed:") for c in metrics["int8_candidates"])


def test_quantize_int8_candidates_follow_the_profile_pinned_formats(data: Dataset,
                                                                    checkpoint: Path,
                                                                    tmp_path: Path, monkeypatch):
    fake_timing(monkeypatch, variant_ms=0.5)
    cfg = QuantizeConfig(calibration_size=64, max_accuracy_drop=0.2, variants=["fp32", "int8"])
    metrics = quantize_stage(cfg, checkpoint, data, tmp_path / "q", tmp_path / "m.json",
                             {"arm": DeviceProfile(isa="arm64")})
    table = metrics["int8_candidates"]
    assert len(table) == 4 and {c["format"] for c in table} == {"S8S8"}
    assert metrics["int8_settings"]["activation_type"] == "QInt8"


def test_quantize_real_timing_decides_as_measured(data: Dataset, checkpoint: Path,
                                                  tmp_path: Path):
    cfg = QuantizeConfig(calibration_size=64, max_accuracy_drop=0.2, max_candidates=2,
                         timing_runs=20, variants=["fp32", "int8", "int8_dynamic"])
    metrics = quantize_stage(cfg, checkpoint, data, tmp_path / "q", tmp_path / "m.json")
    table = metrics["int8_candidates"]
    assert len(table) == 2 and all(c["p50_ms"] > 0 for c in table)
    if metrics["int8_status"] == "ok":
        s = metrics["int8_settings"]
        assert s["p50_ms"] < s["fp32_p50_ms"] and (tmp_path / "q" / "int8.onnx").exists()
    else:  # on 8x8 digits int8 sits at ORT's per-call floor, slower than fp32
        assert metrics["int8_status"] == "dropped" and "fp32 on host" in metrics["int8_reason"]
        assert "int8" not in metrics["variants"]
    timing = metrics["int8_dynamic_timing"]["host"]
    kept = faster(timing["int8_dynamic"], timing["fp32"])
    assert kept == ("int8_dynamic" in metrics["variants"])
    assert kept != ("int8_dynamic" in metrics["variants_dropped"])


def test_quantize_fallback_keeps_sensitive_nodes_in_float(data: Dataset, tmp_path: Path,
                                                          monkeypatch):
    fake_timing(monkeypatch, variant_ms=0.5)
    ckpt = make_checkpoint(tmp_path / "ckpt", data, outlier=True)
    cfg = QuantizeConfig(calibration_size=64, max_accuracy_drop=0.06, per_channel=True,
                         variants=["fp32", "int8"])
    metrics = quantize_stage(cfg, ckpt, data, tmp_path / "q", tmp_path / "m.json")
    table = metrics["int8_candidates"]
    grid = [c for c in table if c["phase"] == "grid"]
    calibration = [c for c in table if c["phase"] == "calibration"]
    # every grid candidate fails, then the other methods on the fastest form, then float nodes
    assert len(grid) == 8 and not any(c["passes"] for c in grid)
    assert {(c["method"], c["per_channel"]) for c in calibration} == {
        (m, pc) for m in ("entropy", "percentile") for pc in (False, True)}
    assert all((c["format"], c["quant_format"]) == ("U8S8", "QDQ") for c in calibration)
    assert metrics["int8_status"] == "ok", metrics["int8_reason"]
    assert metrics["float_nodes"] and len(metrics["float_nodes"]) <= cfg.max_float_nodes
    assert any("features.2" in n for n in metrics["float_nodes"])  # the conv fed by the outlier
    assert metrics["variants"]["int8"]["passes"]
    assert metrics["variants"]["int8"]["val_drop_vs_fp32"]["upper"] <= 0.06


def test_quantize_reports_int8_failure_and_keeps_other_variants(data: Dataset, tmp_path: Path,
                                                                monkeypatch):
    fake_timing(monkeypatch, variant_ms=0.5)
    ckpt = make_checkpoint(tmp_path / "ckpt", data, outlier=True)
    cfg = QuantizeConfig(calibration_size=64, max_accuracy_drop=0.06, max_float_nodes=0,
                         variants=["fp32", "int8", "fp16"])
    metrics = quantize_stage(cfg, ckpt, data, tmp_path / "q", tmp_path / "m.json")
    assert metrics["int8_status"] == "failed"
    assert "max_accuracy_drop" in metrics["int8_reason"]
    assert "after 12 quantizations" in metrics["int8_reason"]
    assert len(metrics["int8_candidates"]) == 12
    assert set(metrics["variants"]) == {"fp32", "fp16"}
    assert not (tmp_path / "q" / "int8.onnx").exists()
    assert read_json(tmp_path / "q" / "report.json")["int8_status"] == "failed"


def test_quantize_says_when_the_val_split_cannot_show_the_margin(data: Dataset, tmp_path: Path,
                                                                 monkeypatch):
    fake_timing(monkeypatch, variant_ms=0.5)
    ckpt = make_checkpoint(tmp_path / "ckpt", data, outlier=True)
    cfg = QuantizeConfig(calibration_size=64, max_accuracy_drop=0.005, max_candidates=2,
                         variants=["fp32", "int8"])
    metrics = quantize_stage(cfg, ckpt, data, tmp_path / "q", tmp_path / "m.json")
    assert metrics["int8_status"] == "failed" and len(metrics["int8_candidates"]) == 2
    assert f"below what {len(data.val)} val samples can show" in metrics["int8_reason"]


@pytest.mark.parametrize("bad", [{"opset": 13}, {"variants": ["int4"]},
                                 {"calibration_method": "kl"}, {"unknown": 1},
                                 {"max_candidates": 0}, {"quant_formats": ["QLinear"]},
                                 {"quant_formats": []}])
def test_quantize_config_rejects_impossible_values(bad: dict):
    with pytest.raises(ValidationError):
        QuantizeConfig(**bad)
