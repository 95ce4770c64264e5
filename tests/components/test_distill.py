"""The `distill` stage: metrics, a loadable student that names its teachers, refusals."""

import pytest

from components.config import CNNConfig, DistillConfig, MLPConfig, TrainingConfig
from components.core.data import Dataset
from components.core.io import read_json
from components.distill import distill
from components.modeling.checkpoint import load_checkpoint
from tests.helpers_data import make_corner_blobs
from tests.helpers_models import save_teacher


@pytest.fixture
def blobs() -> Dataset:
    return make_corner_blobs()


METRIC_KEYS = {
    "student.test_accuracy", "student.val_accuracy", "student.params",
    "baseline.test_accuracy", "baseline.val_accuracy", "kd_gain", "teacher_weights",
    "student.epochs", "baseline.epochs", "seeds",
    "student_test_accuracies", "baseline_test_accuracies", "kd_gain_mean", "kd_gain_std",
}


def test_distill_writes_metrics_and_a_loadable_student(blobs, tmp_path):
    dirs = {"mlp": save_teacher(tmp_path / "t" / "mlp", MLPConfig(hidden=[16])),
            "cnn": save_teacher(tmp_path / "t" / "cnn", CNNConfig(channels=[4]))}
    cfg = DistillConfig(student=CNNConfig(channels=[4]), weighting="confidence",
                        training=TrainingConfig(epochs=2, batch_size=16, device="cpu"),
                        hint_teacher="cnn", hint_weight=0.5, seeds=2)
    out, metrics_path = tmp_path / "student", tmp_path / "metrics" / "distill.json"
    result = distill(cfg, blobs, dirs, out, metrics_path)

    metrics = read_json(metrics_path)
    assert set(metrics) >= METRIC_KEYS
    assert len(metrics["student_test_accuracies"]) == 2
    assert set(metrics["teacher_weights"]) == {"mlp", "cnn"}
    assert sum(metrics["teacher_weights"].values()) == pytest.approx(1.0)
    assert metrics["kd_gain"] == pytest.approx(
        metrics["student.test_accuracy"] - metrics["baseline.test_accuracy"])
    assert {h["run"] for h in result.pop("history")} == {"student", "baseline"}
    timings = result.pop("timings")  # durations are tracked, never in metrics/
    assert timings["student.seconds"] > 0 and timings["baseline.seconds_per_epoch"] > 0
    assert not [k for k in metrics if "seconds" in k]
    assert result == metrics

    student = load_checkpoint(out)
    assert student.num_classes == 3
    meta = student.metadata
    assert meta["teachers"] == ["mlp", "cnn"]
    assert meta["data_hash"] == "abc123"
    assert set(meta["teacher_sha256"]) == {"mlp", "cnn"}
    assert meta["metrics"]["kd_gain"] == metrics["kd_gain"]


def test_distill_refuses_a_teacher_name_without_a_checkpoint(blobs, tmp_path):
    cfg = DistillConfig(student=CNNConfig(channels=[4]), teachers=["absent"])
    with pytest.raises(ValueError, match="absent"):
        distill(cfg, blobs, {}, tmp_path / "s", tmp_path / "m.json")
    assert not (tmp_path / "s").exists()
