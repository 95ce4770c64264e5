import math
from pathlib import Path

import numpy as np
import pytest
import torch

from components.config import CNNConfig, DistillConfig, MLPConfig, TrainingConfig
from components.core.data import Dataset, Split
from components.core.io import read_json
from components.distill import distill
from components.modeling.architectures import build_model
from components.modeling.checkpoint import load_checkpoint, save_checkpoint
from components.modeling.kd import TeacherTable, kd_loss, make_kd_loss, run_teachers
from components.modeling.teachers import load_teachers
from components.modeling.training import random_shift, shift_images

LN3 = math.log(3.0)
KL_75_50 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # KL([.75, .25] || [.5, .5])


def _blobs(n_per_class: int, rng: np.random.Generator) -> Split:
    """3 classes of 1x8x8 images: a bright 3x3 blob top-left, centre or bottom-right."""
    corners = [(0, 0), (2, 2), (5, 5)]
    x = rng.uniform(0, 0.2, (3 * n_per_class, 1, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(3), n_per_class)
    for i, label in enumerate(y):
        r, c = corners[label]
        x[i, 0, r : r + 3, c : c + 3] = 1.0
    return Split(x=x, y=y.astype(np.int64), ids=np.array([f"s{i}" for i in range(len(y))]))


@pytest.fixture
def blobs() -> Dataset:
    rng = np.random.default_rng(0)
    train = _blobs(12, rng)
    return Dataset(train=train, val=_blobs(4, rng), test=_blobs(4, rng),
                   manifest={"num_classes": 3, "shape": [1, 8, 8], "data_hash": "abc123",
                             "normalization": {"mean": float(train.x.mean()),
                                               "std": float(train.x.std())}})


def _save_teacher(folder: Path, arch, in_shape=(1, 8, 8), classes=3, data_hash="abc123") -> Path:
    torch.manual_seed(0)
    model = build_model(arch, in_shape, classes)
    save_checkpoint(folder, model, arch, in_shape, classes, {"data_hash": data_hash})
    return folder


# ---- kd_loss against hand-computed values ----

@pytest.mark.parametrize("T", [1.0, 2.0])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_kd_loss_matches_hand_computed_single_teacher(T, alpha):
    student = torch.zeros(1, 2)  # p_student = [.5, .5] at any T
    teacher = torch.tensor([[[T * LN3, 0.0]]])  # p_teacher^T = [.75, .25]
    loss = kd_loss(student, teacher, torch.ones(1), torch.tensor([0]), T, alpha)
    expected = (1 - alpha) * math.log(2) + alpha * T * T * KL_75_50
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_kd_loss_mixes_teacher_probabilities_with_their_weights():
    student = torch.zeros(1, 2)
    teachers = torch.tensor([[[LN3, 0.0]], [[0.0, LN3]]])  # [.75, .25] and [.25, .75]
    labels = torch.tensor([0])
    assert float(kd_loss(student, teachers, torch.tensor([0.5, 0.5]), labels, 1.0, 1.0)) \
        == pytest.approx(0.0, abs=1e-6)  # the mixture is uniform, like the student
    mix = [0.625, 0.375]  # 0.75 * [.75, .25] + 0.25 * [.25, .75]
    expected = sum(p * math.log(p / 0.5) for p in mix)
    loss = kd_loss(student, teachers, torch.tensor([0.75, 0.25]), labels, 1.0, 1.0)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_kd_loss_takes_per_sample_weights():
    student = torch.zeros(2, 2)
    teachers = torch.tensor([[[LN3, 0.0], [LN3, 0.0]], [[0.0, LN3], [0.0, LN3]]])
    weights = torch.tensor([[1.0, 0.5], [0.0, 0.5]])  # sample 0: teacher 0 only; 1: uniform mix
    loss = kd_loss(student, teachers, weights, torch.tensor([0, 1]), 1.0, 1.0)
    assert float(loss) == pytest.approx((KL_75_50 + 0.0) / 2, rel=1e-5)


# ---- teachers: inference only, and a table equal to running them per batch ----

def test_kd_loss_trains_the_student_and_leaves_teachers_untouched():
    torch.manual_seed(0)
    teacher = build_model(MLPConfig(hidden=[8]), (1, 8, 8), 3)
    student = build_model(CNNConfig(channels=[4]), (1, 8, 8), 3).train()
    loss_fn = make_kd_loss([teacher], "confidence", 2.0, 0.5, hint_teacher=teacher,
                           hint_weight=1.0, student_dim=4)
    loss = loss_fn(student, torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1]))
    loss.backward()
    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is not None for p in loss_fn.parameters())  # the hint projection
    assert sum(loss_fn.average_weights()) == pytest.approx(1.0)


def test_shift_images_matches_the_fit_loops_random_shift():
    x = torch.rand(6, 1, 8, 8)
    expected = random_shift(x, 2, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 5, (6,), generator=g), torch.randint(0, 5, (6,), generator=g)
    assert torch.equal(shift_images(x, dy, dx, 2), expected)


def test_teacher_table_matches_running_teachers_on_the_shifted_batch():
    torch.manual_seed(0)
    teachers = [build_model(a, (1, 8, 8), 3).eval()
                for a in (MLPConfig(hidden=[8]), CNNConfig(channels=[4]))]
    x = torch.rand(10, 1, 8, 8)
    table = TeacherTable(teachers, teachers[1], x, shift=1, batch_size=4)
    index, offsets = torch.tensor([7, 2, 2, 9]), torch.tensor([0, 4, 8, 5])
    logits, feats = table.lookup(offsets, index)
    direct_logits, direct_feats = run_teachers(
        teachers, teachers[1], shift_images(x[index], offsets // 3, offsets % 3, 1))
    assert torch.allclose(logits, direct_logits, atol=1e-5)
    assert torch.allclose(feats, direct_feats, atol=1e-5)


# ---- bad teachers are refused before any training ----

def test_teacher_with_wrong_class_count_is_refused_by_name(blobs, tmp_path):
    path = _save_teacher(tmp_path / "wide", MLPConfig(hidden=[8]), classes=5)
    with pytest.raises(ValueError, match=r"teacher `wide`.*5 classes"):
        load_teachers({"wide": path}, blobs)


def test_teacher_with_wrong_input_shape_is_refused_by_name(blobs, tmp_path):
    path = _save_teacher(tmp_path / "rgb", MLPConfig(hidden=[8]), in_shape=(3, 8, 8))
    with pytest.raises(ValueError, match=r"teacher `rgb`.*input shape"):
        load_teachers({"rgb": path}, blobs)


def test_teacher_trained_on_other_data_is_refused_by_name(blobs, tmp_path):
    path = _save_teacher(tmp_path / "old", MLPConfig(hidden=[8]), data_hash="fff999")
    with pytest.raises(ValueError, match=r"teacher `old`.*trained on data fff999"):
        load_teachers({"old": path}, blobs)


def test_missing_teacher_checkpoint_is_refused_with_its_path(blobs, tmp_path):
    with pytest.raises(ValueError, match=r"teacher `ghost`.*not found.*ghost"):
        load_teachers({"ghost": tmp_path / "ghost"}, blobs)


# ---- end to end ----

METRIC_KEYS = {
    "student.test_accuracy", "student.val_accuracy", "student.params",
    "baseline.test_accuracy", "baseline.val_accuracy", "kd_gain", "teacher_weights",
    "student.epochs", "baseline.epochs", "seeds",
    "student_test_accuracies", "baseline_test_accuracies", "kd_gain_mean", "kd_gain_std",
}


def test_distill_writes_metrics_and_a_loadable_student(blobs, tmp_path):
    dirs = {"mlp": _save_teacher(tmp_path / "t" / "mlp", MLPConfig(hidden=[16])),
            "cnn": _save_teacher(tmp_path / "t" / "cnn", CNNConfig(channels=[4]))}
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


def test_accuracy_weighting_without_teacher_accuracies_is_refused_up_front():
    teacher = build_model(MLPConfig(hidden=[8]), (1, 8, 8), 3)
    with pytest.raises(ValueError, match="teacher_accuracies"):
        make_kd_loss([teacher], "accuracy", 2.0, 0.5)
