"""`components.modeling.kd`: the distillation loss against hand-computed values, teachers kept
inference-only, and the precomputed teacher table."""

import math

import pytest
import torch

from components.config import CNNConfig, MLPConfig
from components.modeling.architectures import build_model
from components.modeling.kd import TeacherTable, kd_loss, make_kd_loss, run_teachers
from components.modeling.training import shift_images

LN3 = math.log(3.0)
KL_75_50 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)  # KL([.75, .25] || [.5, .5])


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


def test_accuracy_weighting_without_teacher_accuracies_is_refused_up_front():
    teacher = build_model(MLPConfig(hidden=[8]), (1, 8, 8), 3)
    with pytest.raises(ValueError, match="teacher_accuracies"):
        make_kd_loss([teacher], "accuracy", 2.0, 0.5)
