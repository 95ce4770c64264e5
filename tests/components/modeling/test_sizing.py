"""`default_arch`: architectures sized from the input shape and the class count."""

from __future__ import annotations

import pytest
import torch

from components.modeling.architectures import build_model, count_params
from components.modeling.sizing import default_arch, round_channels
from components.pruning.macs import count_macs


def widths(cfg) -> list[int]:
    return [cfg.width, *cfg.blocks] if cfg.arch == "resnet" else list(cfg.channels)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 20, 48)])
@pytest.mark.parametrize("classes", [2, 10, 100])
def test_default_archs_build_with_widths_in_multiples_of_16(shape, classes):
    teacher, student = (default_arch(r, shape, classes) for r in ("teacher", "student"))
    for cfg in (teacher, student):
        assert all(w % 16 == 0 and w > 0 for w in widths(cfg)), cfg
    t, s = build_model(teacher, shape, classes), build_model(student, shape, classes)
    assert t(torch.rand(2, *shape)).shape == s(torch.rand(2, *shape)).shape == (2, classes)
    assert count_macs(s, shape) < count_macs(t, shape)  # the student is the cheap one


def test_default_teacher_at_8x8_digits_is_the_shipped_resnet():
    cfg = default_arch("teacher", (1, 8, 8), 10)
    assert (cfg.width, cfg.blocks, cfg.pool_after) == (32, [32, 32], "auto")
    assert count_params(build_model(cfg, (1, 8, 8), 10)) == 37_802


def test_default_archs_grow_with_image_size_and_classes():
    small, large = (default_arch("student", s, 10) for s in [(1, 8, 8), (1, 32, 32)])
    assert len(large.channels) > len(small.channels)  # deeper for more pixels
    few, many = (default_arch("teacher", (1, 32, 32), k) for k in (10, 100))
    assert many.width > few.width  # wider for more classes
    assert default_arch("teacher", (3, 32, 32), 10).width > few.width  # and for colour
    assert default_arch("student", (1, 32, 32), 10) == large  # deterministic


def test_round_channels_and_bad_arguments():
    assert [round_channels(v) for v in (1, 23, 24, 40, 1000)] == [16, 16, 32, 32, 256]
    with pytest.raises(ValueError, match="role"):
        default_arch("judge", (1, 8, 8), 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 classes"):
        default_arch("student", (1, 8, 8), 1)
