"""Helpers every source loader shares: a missing source path is named in the error."""

from __future__ import annotations

import numpy as np
import pytest

from components.config import IngestConfig
from components.sources import load_source
from components.sources.common import _encode_labels, _hash_files


def test_missing_source_path_raises_file_not_found_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_source(IngestConfig(source="npz", path=str(tmp_path / "nowhere.npz")))


def test_encode_labels_maps_sorted_distinct_values_to_codes():
    codes, names = _encode_labels(np.array([26, 1, 2, 26]))
    assert codes.tolist() == [2, 0, 1, 2] and codes.dtype == np.int64
    assert names == ["1", "2", "26"]
    codes, names = _encode_labels(np.array(["zebra", "ant"]))
    assert codes.tolist() == [1, 0] and names == ["ant", "zebra"]


def test_hash_files_ignores_order_but_not_content(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    before = _hash_files([a, b])
    assert _hash_files([b, a]) == before and len(before) == 64
    b.write_bytes(b"three")
    assert _hash_files([a, b]) != before
