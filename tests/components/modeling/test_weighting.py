import pytest
import torch

from components.modeling.weighting import WEIGHTINGS, average_weights, resolve_weighting


def _logits_right_wrong(labels: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Two teachers (2, N, K): the first puts 4 nats on the true class, the second on another."""
    n = len(labels)
    right = torch.zeros(n, k)
    right[torch.arange(n), labels] = 4.0
    wrong = torch.zeros(n, k)
    wrong[torch.arange(n), (labels + 1) % k] = 4.0
    return torch.stack([right, wrong])


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_every_weighting_sums_to_one_over_teachers(name):
    torch.manual_seed(0)
    logits = torch.randn(3, 10, 4)
    labels = torch.randint(0, 4, (10,))
    w = WEIGHTINGS[name](logits, labels, torch.tensor([0.9, 0.8, 0.95]))
    assert w.shape in {(3,), (3, 10)}
    assert (w >= 0).all()
    assert torch.allclose(w.sum(0), torch.ones(w.shape[1:]), atol=1e-6)
    assert torch.isclose(average_weights(w).sum(), torch.tensor(1.0), atol=1e-6)


def test_mean_weighting_is_equal():
    w = WEIGHTINGS["mean"](torch.zeros(4, 2, 3), torch.zeros(2, dtype=torch.long), None)
    assert torch.allclose(w, torch.full((4,), 0.25))


def test_accuracy_weighting_favours_the_more_accurate_teacher():
    w = WEIGHTINGS["accuracy"](torch.zeros(3, 2, 3), torch.zeros(2, dtype=torch.long),
                               torch.tensor([0.97, 1.0, 0.99]))
    assert w.argmax() == 1
    assert w[1] > w[2] > w[0]


def test_accuracy_weighting_needs_validation_accuracies():
    with pytest.raises(ValueError, match="validation accuracy"):
        WEIGHTINGS["accuracy"](torch.zeros(2, 2, 3), torch.zeros(2, dtype=torch.long), None)


def test_confidence_weighting_favours_the_teacher_that_is_right_on_each_sample():
    labels = torch.tensor([0, 1, 2, 0, 1])
    logits = _logits_right_wrong(labels)
    w = WEIGHTINGS["confidence"](logits, labels, None)
    assert w.shape == (2, 5)
    assert (w[0] > 0.9).all()
    # swap which teacher is right on the last two samples: the weights follow, per sample
    logits[:, 3:] = logits[:, 3:].flip(0)
    w = WEIGHTINGS["confidence"](logits, labels, None)
    assert (w[0, :3] > 0.9).all() and (w[1, 3:] > 0.9).all()


def test_confidence_weighting_prefers_a_sure_right_teacher_over_an_unsure_right_one():
    labels = torch.tensor([1])
    sure = torch.tensor([[0.0, 5.0, 0.0]])
    unsure = torch.tensor([[0.0, 0.5, 0.0]])
    w = WEIGHTINGS["confidence"](torch.stack([unsure, sure]), labels, None)
    assert w[1, 0] > w[0, 0]


def test_unknown_weighting_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="confidence"):
        resolve_weighting("loudest")
