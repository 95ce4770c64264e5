"""`evaluate` on tiny ONNX models and a tiny prepared folder; selection on constructed numbers."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch import nn

from components.config import Budgets, DeviceProfile, EvaluateConfig, load_params
from components.core.io import atomic_write_bytes, read_json
from components.evaluate import evaluate_stage
from components.evaluation import profiles
from components.evaluation.selection import check_budgets, select_candidate
from tests.helpers_data import REPO, make_dataset, write_dataset

KEYS = {"accuracy", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "throughput_per_s",
        "size_bytes", "peak_rss_mb", "meets_budget", "failed_budgets"}


def band_model(classes_seen: int = 3, classes: int = 3, shape=(1, 8, 8)) -> nn.Module:
    """Linear classifier for `make_blobs`: class k scores its own band (the first few only)."""
    c, h, w = shape
    model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, classes))
    band = h // classes
    weight = torch.zeros(classes, c, h, w)
    for k in range(classes_seen):
        weight[k, :, k * band : (k + 1) * band, :] = 1.0
    with torch.no_grad():
        model[1].weight.copy_(weight.reshape(classes, -1))
        model[1].bias.zero_()
    return model.eval()


def export(model: nn.Module, path: Path, dynamic: bool = True, shape=(1, 8, 8)) -> Path:
    buf = io.BytesIO()
    batch = 2 if dynamic else 1
    torch.onnx.export(model, (torch.zeros(batch, *shape),), buf, dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}
                      if dynamic else None)
    return atomic_write_bytes(path, buf.getvalue())


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
    cfg = EvaluateConfig(runs=5, warmup=1, profiles={
        "cpu": DeviceProfile(threads=1, batch_size=4,
                             budgets=Budgets(min_accuracy=0.9, max_size_bytes=100_000)),
        "gpu": DeviceProfile(providers=["CUDAExecutionProvider"], batch_size=8),
    })
    out = tmp_path / "reports" / "evaluate"
    metrics = evaluate_stage(cfg, {"good": good, "weak": weak, "broken": broken}, prepared, out,
                             tmp_path / "metrics" / "evaluate.json")

    assert read_json(tmp_path / "metrics" / "evaluate.json") == metrics
    for name in ("good", "weak"):
        assert set(metrics[name]) == {"cpu"}
        assert set(metrics[name]["cpu"]) >= KEYS
        m = metrics[name]["cpu"]
        assert 0 < m["latency_ms_p50"] <= m["latency_ms_p95"] <= m["latency_ms_p99"]
        assert m["size_bytes"] == Path({"good": good, "weak": weak}[name]).stat().st_size
        assert m["peak_rss_mb"] >= metrics["baseline_rss_mb"]["cpu"] > 0
    assert metrics["good"]["cpu"]["accuracy"] == 1.0
    assert metrics["weak"]["cpu"]["accuracy"] < 0.5
    assert metrics["good"]["cpu"]["val_accuracy"] == 1.0  # the val split is measured too
    assert metrics["weak"]["cpu"]["failed_budgets"][0].startswith("val_accuracy")
    failed = metrics["broken"]["cpu"]  # reported, never dropped
    assert failed["error"] and failed["accuracy"] is None and not failed["meets_budget"]
    assert failed["failed_budgets"][0].startswith("measurement failed")
    assert metrics["selected"] == {"cpu": "good", "gpu": None}
    assert "CUDAExecutionProvider" in metrics["skipped"]["gpu"]
    report = (out / "evaluate.md").read_text()
    assert "**good** (selected)" in report and "Skipped: CUDAExecutionProvider" in report
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "cpu-latency.png", "cpu-size.png", "gpu-latency.png", "gpu-size.png"]


def test_measure_pads_a_fixed_batch_graph_and_reports_a_baseline(tmp_path: Path, prepared: Path):
    fixed = export(band_model(3), tmp_path / "fixed.onnx", dynamic=False)
    m = profiles.measure(fixed, prepared / "test.npz", ["CPUExecutionProvider"], threads=1,
                         batch_size=4, warmup=0, runs=3)
    assert m["accuracy"] == 1.0 and m["batch_size"] == 1
    assert set(profiles.measure(None, prepared / "test.npz", ["CPUExecutionProvider"], 1, 4, 0,
                                3)) == {"peak_rss_mb"}


def test_evaluate_stage_rejects_missing_and_reserved_candidates(tmp_path: Path, prepared: Path):
    cfg = EvaluateConfig(profiles={"edge": {"threads": 1}})
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        evaluate_stage(cfg, {"x": tmp_path / "nope.onnx"}, prepared, tmp_path / "o",
                       tmp_path / "m.json")
    with pytest.raises(ValueError, match="reserved"):
        evaluate_stage(cfg, {"selected": tmp_path / "a.onnx"}, prepared, tmp_path / "o",
                       tmp_path / "m.json")


def m(acc: float, p50: float, meets: bool = True) -> dict:
    return {"accuracy": acc, "latency_ms_p50": p50, "meets_budget": meets}


def test_select_candidate_prefers_budget_meeting_best_accuracy():
    picked = select_candidate({"big": m(0.99, 0.5, meets=False), "a": m(0.97, 0.1),
                               "b": m(0.98, 0.3)})
    assert picked == "b"


def test_select_candidate_breaks_accuracy_ties_by_p50_latency():
    assert select_candidate({"slow": m(0.98, 0.3), "fast": m(0.98, 0.1)}) == "fast"
    assert select_candidate({"y": m(0.98, 0.1), "x": m(0.98, 0.1)}) == "x"  # then by name


def test_select_candidate_decides_on_val_accuracy_when_measured():
    a = {**m(0.97, 0.1), "val_accuracy": 0.99}  # worse on test, better on val
    b = {**m(0.99, 0.1), "val_accuracy": 0.98}
    assert select_candidate({"a": a, "b": b}) == "a"


def test_select_candidate_returns_none_when_nothing_meets_the_budgets():
    assert select_candidate({"a": m(0.99, 0.1, meets=False)}) is None
    assert select_candidate({}) is None


def test_check_budgets_names_each_broken_budget():
    b = Budgets(max_latency_ms_p95=1.0, max_size_bytes=200_000, max_peak_rss_mb=256,
                min_accuracy=0.97)
    ok = {"latency_ms_p95": 0.5, "size_bytes": 1000, "peak_rss_mb": 60, "accuracy": 0.98}
    assert check_budgets(ok, b) == []
    bad = {**ok, "latency_ms_p95": 1.5, "accuracy": 0.9}
    assert [f.split()[0] for f in check_budgets(bad, b)] == ["latency_ms_p95", "accuracy"]
    assert check_budgets({"error": "boom"}, b) == ["measurement failed: boom"]
    on_val = {**ok, "accuracy": 0.99, "val_accuracy": 0.9}  # the budget is judged on val
    assert [f.split()[0] for f in check_budgets(on_val, b)] == ["val_accuracy"]


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
