"""The `evaluate` stage on tiny ONNX models and a tiny prepared folder.

Measurement, selection and the report are tested in `tests/components/evaluation/`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from components.config import Budgets, DeviceProfile, EvaluateConfig, load_params
from components.core.io import atomic_write_bytes, atomic_write_json, read_json
from components.evaluate import evaluate_stage
from tests.helpers_data import REPO, make_dataset, write_dataset
from tests.helpers_models import band_model, export

KEYS = {"accuracy", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "throughput_per_s",
        "size_bytes", "peak_rss_mb", "meets_budget", "failed_budgets", "latency_spread_ms",
        "latency_p95_spread_ms", "val_accuracy_ci", "accuracy_ci", "val_correct",
        "test_correct", "budget_margin", "model_file"}


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    return write_dataset(make_dataset(n_per_class=10), tmp_path / "prepared")


def test_evaluate_stage_measures_every_candidate_and_reports_skipped_gpu(
        tmp_path: Path, prepared: Path, monkeypatch: pytest.MonkeyPatch):
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    good = export(band_model(3), tmp_path / "good.onnx")
    weak = export(band_model(1), tmp_path / "weak.onnx")  # only recognises class 0
    broken = atomic_write_bytes(tmp_path / "broken.onnx", b"not an onnx graph")
    # a bundle whose runtime entry for `cpu` runs another file (class 0 only) with its options
    tuned = export(band_model(3), tmp_path / "tuned" / "model.onnx")
    export(band_model(1), tmp_path / "tuned" / "model.cpu.onnx")
    atomic_write_json(tmp_path / "tuned" / "metadata.json", {"runtime": {"cpu": {
        "model_file": "model.cpu.onnx", "graph_optimization_level": "basic",
        "intra_op_num_threads": 1, "allow_spinning": False}}})
    cfg = EvaluateConfig(runs=5, warmup=1, profiles={
        "cpu": DeviceProfile(threads=1, batch_size=4,
                             budgets=Budgets(min_accuracy=0.9, max_size_bytes=100_000)),
        "gpu": DeviceProfile(providers=["CUDAExecutionProvider"], batch_size=8),
    })
    out = tmp_path / "reports" / "evaluate"
    metrics = evaluate_stage(cfg, {"good": good, "weak": weak, "broken": broken, "tuned": tuned},
                             prepared, out, tmp_path / "metrics" / "evaluate.json")

    assert read_json(tmp_path / "metrics" / "evaluate.json") == metrics
    for name in ("good", "weak"):
        assert set(metrics[name]) == {"cpu"}
        assert set(metrics[name]["cpu"]) >= KEYS
        m = metrics[name]["cpu"]
        assert 0 < m["latency_ms_p50"] <= m["latency_ms_p95"] <= m["latency_ms_p99"]
        assert m["size_bytes"] == Path({"good": good, "weak": weak}[name]).stat().st_size
        assert m["peak_rss_mb"] >= metrics["baseline_rss_mb"]["cpu"] > 0
        assert m["rounds"] == 3 and m["latency_spread_ms"] >= 0
        assert m["val_accuracy_ci"]["n"] == m["val_correct"]["n"] == 6
        ci = m["val_accuracy_ci"]
        assert ci["ci_low"] <= m["val_accuracy"] <= ci["ci_high"]
        assert m["accuracy_ci"]["n"] == 6 and "val_predictions" not in m
    assert metrics["good"]["cpu"]["accuracy"] == 1.0
    assert metrics["weak"]["cpu"]["accuracy"] < 0.5
    assert metrics["good"]["cpu"]["val_accuracy"] == 1.0  # the val split is measured too
    assert metrics["weak"]["cpu"]["failed_budgets"][0].startswith("val_accuracy")
    failed = metrics["broken"]["cpu"]  # reported, never dropped
    assert failed["error"] and failed["accuracy"] is None and not failed["meets_budget"]
    assert failed["failed_budgets"][0].startswith("measurement failed")
    t = metrics["tuned"]["cpu"]  # the runtime entry's file and options were measured
    assert t["model_file"] == "model.cpu.onnx" and t["accuracy"] < 0.5
    assert t["size_bytes"] == (tmp_path / "tuned" / "model.cpu.onnx").stat().st_size
    assert t["session_options"]["graph_optimization_level"] == "basic"
    assert metrics["good"]["cpu"]["model_file"] == "good.onnx"  # no metadata: as before
    assert metrics["selected"] == {"cpu": "good", "gpu": None}
    assert metrics["selection"]["cpu"]["reference"] == "good"
    assert "good is the most accurate within budgets" in metrics["selection"]["cpu"]["reason"]
    predictions = read_json(out / "predictions.json")
    assert len(predictions["good"]["cpu"]["val"]) == 6
    assert predictions["broken"]["cpu"]["val"] is None
    assert "CUDAExecutionProvider" in metrics["skipped"]["gpu"]
    # the per-call floor, timed in the same rounds, for measured profiles only
    assert set(metrics["floor"]) == {"cpu"} and metrics["floor"]["cpu"]["latency_ms_p50"] > 0
    report = (out / "evaluate.md").read_text()
    assert "**good** (selected)" in report and "Skipped: CUDAExecutionProvider" in report
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "cpu-latency.png", "cpu-size.png", "gpu-latency.png", "gpu-size.png"]


def test_evaluate_stage_rejects_missing_and_reserved_candidates(tmp_path: Path, prepared: Path):
    cfg = EvaluateConfig(profiles={"edge": {"threads": 1}})
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        evaluate_stage(cfg, {"x": tmp_path / "nope.onnx"}, prepared, tmp_path / "o",
                       tmp_path / "m.json")
    with pytest.raises(ValueError, match="reserved"):
        evaluate_stage(cfg, {"selected": tmp_path / "a.onnx"}, prepared, tmp_path / "o",
                       tmp_path / "m.json")


def test_profiles_come_from_params_yaml_alone_and_unknown_keys_are_rejected():
    with pytest.raises(ValueError, match="profiles"):
        EvaluateConfig()  # no built-in defaults that could disagree with params.yaml
    params = load_params(REPO / "params.yaml")
    assert list(params.evaluate.profiles) == ["edge-1core", "server-cpu", "gpu"]
    assert params.evaluate.profiles["edge-1core"].budgets.max_size_bytes == 64000
    with pytest.raises(ValueError):
        EvaluateConfig(profiles={"x": {"threads": 1, "thread": 2}})
    with pytest.raises(ValueError):
        EvaluateConfig(profiles={})
