"""Behaviour of each `ingest` source loader on tiny sources written by the tests themselves."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from PIL import Image

from components.config import IngestConfig
from components.sources import SOURCES, load_source, read_idx


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


def cfg(source: str, path: Path, **kw) -> IngestConfig:
    return IngestConfig(source=source, path=str(path), **kw)


def test_registry_matches_config_source_names():
    assert set(SOURCES) == set(get_args(IngestConfig.model_fields["source"].annotation))


def test_digits_loads_bundled_set_with_raw_values():
    raw = load_source(IngestConfig())
    assert raw.images.shape == (1797, 1, 8, 8)
    assert raw.labels.dtype == np.int64 and set(raw.labels) == set(range(10))
    assert raw.classes == [str(i) for i in range(10)]
    assert raw.max_value == 16 and raw.images.max() == 16  # unscaled
    assert raw.ids[17] == "digits:17" and raw.rejected == []
    assert len(raw.source_sha256) == 64


def test_idx_reads_gzipped_and_plain_pairs(tmp_path):
    idx_pair(tmp_path, "train", 6, gz=True)
    idx_pair(tmp_path, "t10k", 3, gz=False)
    raw = load_source(cfg("idx", tmp_path))
    assert raw.images.shape == (9, 1, 4, 5) and raw.images.dtype == np.uint8
    assert raw.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2]
    assert raw.classes == ["0", "1", "2"] and raw.max_value == 255
    assert raw.ids[0] == "train-images-idx3-ubyte.gz:0"
    assert raw.ids[7] == "t10k-images-idx3-ubyte:1"
    np.testing.assert_array_equal(raw.images[0, 0], np.arange(20).reshape(4, 5))


def test_idx_accepts_emnist_names_and_a_train_pair_alone(tmp_path):
    idx_pair(tmp_path, "emnist-letters-train", 4, gz=True, labels=[1, 2, 26, 2])
    raw = load_source(cfg("idx", tmp_path))
    assert len(raw.labels) == 4
    assert raw.classes == ["1", "2", "26"]  # original label values name the classes
    assert raw.labels.tolist() == [0, 1, 2, 1]


def test_idx_source_hash_changes_with_file_content(tmp_path):
    idx_pair(tmp_path, "train", 4, gz=False)
    before = load_source(cfg("idx", tmp_path)).source_sha256
    idx_pair(tmp_path, "train", 4, gz=False, labels=[2, 1, 0, 0])
    assert load_source(cfg("idx", tmp_path)).source_sha256 != before


def test_idx_count_mismatch_names_both_files(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 2, 2)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte holds 5 images.*train-labels"):
        load_source(cfg("idx", tmp_path))


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
        load_source(cfg("idx", tmp_path))


def test_missing_source_path_raises_file_not_found_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_source(cfg("npz", tmp_path / "nowhere.npz"))


def test_npz_adds_channel_and_uses_given_class_names(tmp_path):
    x = np.random.default_rng(0).random((5, 3, 3)).astype(np.float32)
    x[0, 0, 0] = np.nan  # raw values pass through: `validate` must see them
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.array([0, 1, 1, 0, 1]), classes=np.array(["cat", "dog"]))
    raw = load_source(cfg("npz", path))
    assert raw.images.shape == (5, 1, 3, 3) and np.isnan(raw.images[0, 0, 0, 0])
    assert raw.classes == ["cat", "dog"] and raw.labels.tolist() == [0, 1, 1, 0, 1]
    assert raw.max_value == 1.0 and raw.ids[4] == "d.npz:4"


def test_npz_keeps_nchw_and_encodes_string_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((3, 3, 2, 2), np.uint8), y=np.array(["b", "a", "b"]))
    raw = load_source(cfg("npz", path))
    assert raw.images.shape == (3, 3, 2, 2) and raw.max_value == 255
    assert raw.classes == ["a", "b"] and raw.labels.tolist() == [1, 0, 1]


def test_npz_missing_array_names_file_and_key(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"d\.npz: missing array `y`"):
        load_source(cfg("npz", path))


def save_image(path: Path, size: tuple[int, ...], value: int) -> None:
    """A flat image; (H, W) saves grey, (H, W, 3) saves RGB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size, value, np.uint8)).save(path)


def test_imagefolder_reads_classes_and_rejects_corrupt_and_odd_size_files(tmp_path):
    save_image(tmp_path / "cat" / "a.png", (4, 4), 10)
    save_image(tmp_path / "cat" / "b.PNG", (4, 4), 20)
    save_image(tmp_path / "dog" / "c.jpg", (4, 4, 3), 200)
    save_image(tmp_path / "dog" / "big.png", (6, 5), 30)
    (tmp_path / "dog" / "broken.png").write_bytes(b"definitely not a png")
    (tmp_path / "dog" / "notes.txt").write_text("ignored")

    raw = load_source(cfg("imagefolder", tmp_path))
    assert raw.classes == ["cat", "dog"]
    assert raw.ids.tolist() == ["cat/a.png", "cat/b.PNG", "dog/c.jpg"]
    assert raw.labels.tolist() == [0, 0, 1]
    assert raw.images.shape == (3, 1, 4, 4) and raw.max_value == 255
    assert abs(int(raw.images[2].mean()) - 200) <= 2  # RGB -> grey 'L' (JPEG is lossy)
    reasons = {r["id"]: r["reason"] for r in raw.rejected}
    assert set(reasons) == {"dog/broken.png", "dog/big.png"}
    assert "unreadable" in reasons["dog/broken.png"]
    assert "6x5" in reasons["dog/big.png"] and "4x4" in reasons["dog/big.png"]


def test_imagefolder_without_class_folders_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path}: no class sub-folders"):
        load_source(cfg("imagefolder", tmp_path))


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def test_csv_reads_string_labels_keeps_nan_and_rejects_non_numeric_rows(tmp_path):
    path = write_csv(tmp_path / "data.csv", """
label,p0,p1,p2,p3
zebra,0,255,3,4
ant,1,2,,4
zebra,1,abc,3,4
ant,9,8,7,6
""")
    raw = load_source(cfg("csv", path))
    assert raw.classes == ["ant", "zebra"] and raw.labels.tolist() == [1, 0, 0]
    assert raw.images.shape == (3, 1, 2, 2) and raw.max_value == 255
    assert np.isnan(raw.images[1, 0, 1, 0])  # empty cell stays NaN for `validate`
    assert raw.ids.tolist() == ["data.csv:row 0", "data.csv:row 1", "data.csv:row 3"]
    assert raw.rejected == [
        {"id": "data.csv:row 2", "reason": "non-numeric pixel in column `p1`: 'abc'"}
    ]


def test_csv_uses_configured_image_shape_and_float_default_max(tmp_path):
    path = write_csv(tmp_path / "data.csv", """
p0,p1,p2,p3,p4,p5,digit
0.1,0.2,0.3,0.4,0.5,0.6,3
0.6,0.5,0.4,0.3,0.2,0.1,7
""")
    raw = load_source(cfg("csv", path, label_column="digit", image_shape=[1, 2, 3]))
    assert raw.images.shape == (2, 1, 2, 3) and raw.max_value == 1.0
    assert raw.classes == ["3", "7"] and raw.labels.tolist() == [0, 1]
    assert raw.images[0, 0, 1, 2] == pytest.approx(0.6)


def test_csv_non_square_without_image_shape_is_an_error(tmp_path):
    path = write_csv(tmp_path / "data.csv", "label,a,b,c\n0,1,2,3\n")
    with pytest.raises(ValueError, match=r"data\.csv: 3 pixel columns is not a square"):
        load_source(cfg("csv", path))


def test_csv_missing_label_column_names_file_and_column(tmp_path):
    path = write_csv(tmp_path / "data.csv", "target,a,b,c,d\n0,1,2,3,4\n")
    with pytest.raises(ValueError, match=r"data\.csv: label column `label` not found"):
        load_source(cfg("csv", path))
