"""`idx` source: MNIST-format IDX pairs written by hand in tmp_path."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from components.config import IngestConfig
from components.sources import load_source
from components.sources.idx import read_idx


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    """Write an IDX file by hand: magic 0 0 0x08 <ndim>, big-endian uint32 dims, uint8 data."""
    data = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data += arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def idx_pair(folder: Path, prefix: str, n: int, gz: bool, labels=None) -> None:
    ext = ".gz" if gz else ""
    imgs = np.arange(n * 4 * 5).reshape(n, 4, 5) % 256
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", imgs, gz)
    lab = np.arange(n) % 3 if labels is None else np.asarray(labels)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", lab, gz)


def cfg(path: Path, **kw) -> IngestConfig:
    return IngestConfig(source="idx", path=str(path), **kw)


def test_idx_reads_gzipped_and_plain_pairs(tmp_path):
    idx_pair(tmp_path, "train", 6, gz=True)
    idx_pair(tmp_path, "t10k", 3, gz=False)
    raw = load_source(cfg(tmp_path))
    assert raw.images.shape == (9, 1, 4, 5) and raw.images.dtype == np.uint8
    assert raw.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert raw.classes == ["0", "1", "2"] and raw.max_value == 255
    assert raw.ids[0] == "train-images-idx3-ubyte.gz:0"
    assert raw.ids[7] == "t10k-images-idx3-ubyte:1"
    np.testing.assert_array_equal(raw.images[0, 0], np.arange(20).reshape(4, 5))


def test_idx_accepts_emnist_names_and_a_train_pair_alone(tmp_path):
    idx_pair(tmp_path, "emnist-letters-train", 4, gz=True, labels=[1, 2, 26, 2])
    raw = load_source(cfg(tmp_path))
    assert len(raw.labels) == 4
    assert raw.classes == ["1", "2", "26"]  # original label values name the classes
    assert raw.labels.tolist() == [0, 1, 2, 1]


def test_idx_source_hash_changes_with_file_content(tmp_path):
    idx_pair(tmp_path, "train", 4, gz=False)
    before = load_source(cfg(tmp_path)).source_sha256
    idx_pair(tmp_path, "train", 4, gz=False, labels=[2, 1, 0, 0])
    assert load_source(cfg(tmp_path)).source_sha256 != before


def test_idx_count_mismatch_names_both_files(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 2, 2)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte holds 5 images.*train-labels"):
        load_source(cfg(tmp_path))


def test_idx_bad_magic_and_truncated_data_name_the_file(tmp_path):
    bad = tmp_path / "x-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x56\x78" + bytes(16))
    with pytest.raises(ValueError, match=r"x-idx3-ubyte: not an IDX file"):
        read_idx(bad)
    short = write_idx(tmp_path / "short-idx3-ubyte", np.zeros((2, 3, 3)))
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"short-idx3-ubyte: IDX dims \(2, 3, 3\)"):
        read_idx(short)


def test_idx_missing_label_partner_is_an_error(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte: its train .*partner"):
        load_source(cfg(tmp_path))
