"""`npz` source: archives with `x`, `y` and optionally `classes`, written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.config import IngestConfig
from components.sources import load_source


def cfg(path: Path, **kw) -> IngestConfig:
    return IngestConfig(source="npz", path=str(path), **kw)


def test_npz_adds_channel_and_uses_given_class_names(tmp_path):
    x = np.random.default_rng(0).random((5, 3, 3)).astype(np.float32)
    x[0, 0, 0] = np.nan  # raw values pass through: `validate` must see them
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.array([0, 1, 1, 0, 1]), classes=np.array(["cat", "dog"]))
    raw = load_source(cfg(path))
    assert raw.images.shape == (5, 1, 3, 3) and np.isnan(raw.images[0, 0, 0, 0])
    assert raw.classes == ["cat", "dog"] and raw.labels.tolist() == [0, 1, 1, 0, 1]
    assert raw.max_value == 1.0 and raw.ids[4] == "d.npz:4"


def test_npz_keeps_nchw_and_encodes_string_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((3, 3, 2, 2), np.uint8), y=np.array(["b", "a", "b"]))
    raw = load_source(cfg(path))
    assert raw.images.shape == (3, 3, 2, 2) and raw.max_value == 255
    assert raw.classes == ["a", "b"] and raw.labels.tolist() == [1, 0, 1]


def test_npz_missing_array_names_file_and_key(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"d\.npz: missing array `y`"):
        load_source(cfg(path))


def test_npz_that_is_not_a_zip_names_the_path(tmp_path):
    path = tmp_path / "d.npz"
    np.save(path.with_suffix(".npy"), np.zeros(3))
    path.with_suffix(".npy").rename(path)  # a lone .npy saved under an .npz name
    with pytest.raises(ValueError, match=f"^{path}: not an .npz \\(zip\\) archive"):
        load_source(cfg(path))


def test_npz_truncated_download_names_the_path(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((20, 4, 4)), y=np.zeros(20, np.int64))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"^{path}: not a readable .npz archive"):
        load_source(cfg(path))


def test_npz_object_array_is_refused_naming_path_and_key(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((2, 2, 2)), y=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match=f"^{path}: array `y` is unreadable"):
        load_source(cfg(path))


def test_npz_non_integer_labels_are_refused_naming_the_samples(tmp_path):
    """Class names are the labels as ints: 0.3 and 0.7 would silently merge into class "0"."""
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 2, 2)), y=np.array([0.0, 0.3, 1.0, 0.7]))
    with pytest.raises(ValueError, match=r"2 non-integer label\(s\).*d\.npz:1 \(y=0\.3\), "
                                         r"d\.npz:3 \(y=0\.7\)"):
        load_source(cfg(path))


def test_npz_whole_float_labels_are_read_as_ints(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((3, 2, 2)), y=np.array([1.0, 0.0, 1.0]))
    assert load_source(cfg(path)).classes == ["0", "1"]
