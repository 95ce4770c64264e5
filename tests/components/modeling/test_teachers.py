"""`components.modeling.teachers`: bad teachers are refused, by name, before any training."""

import pytest

from components.config import MLPConfig
from components.core.data import Dataset
from components.modeling.teachers import load_teachers
from tests.helpers_data import make_corner_blobs
from tests.helpers_models import save_teacher


@pytest.fixture
def blobs() -> Dataset:
    return make_corner_blobs()


def test_teacher_with_wrong_class_count_is_refused_by_name(blobs, tmp_path):
    path = save_teacher(tmp_path / "wide", MLPConfig(hidden=[8]), classes=5)
    with pytest.raises(ValueError, match=r"teacher `wide`.*5 classes"):
        load_teachers({"wide": path}, blobs)


def test_teacher_with_wrong_input_shape_is_refused_by_name(blobs, tmp_path):
    path = save_teacher(tmp_path / "rgb", MLPConfig(hidden=[8]), in_shape=(3, 8, 8))
    with pytest.raises(ValueError, match=r"teacher `rgb`.*input shape"):
        load_teachers({"rgb": path}, blobs)


def test_teacher_trained_on_other_data_is_refused_by_name(blobs, tmp_path):
    path = save_teacher(tmp_path / "old", MLPConfig(hidden=[8]), data_hash="fff999")
    with pytest.raises(ValueError, match=r"teacher `old`.*trained on data fff999"):
        load_teachers({"old": path}, blobs)


def test_missing_teacher_checkpoint_is_refused_with_its_path(blobs, tmp_path):
    with pytest.raises(ValueError, match=r"teacher `ghost`.*not found.*ghost"):
        load_teachers({"ghost": tmp_path / "ghost"}, blobs)
