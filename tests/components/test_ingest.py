"""Behaviour of the `ingest` stage: scaling, stratified deterministic splits, the manifest."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components import ingest as ingest_module
from components.config import IngestConfig
from components.core.data import SPLITS, load_prepared
from components.core.io import sha256_file
from components.ingest import ingest, resize_images, stratified_split
from components.sources import RawData

MANIFEST_KEYS = {
    "source", "classes", "num_classes", "shape", "dtype", "max_value", "normalization", "seed",
    "split", "splits", "rejected", "data_hash",
}


def write_npz(path: Path, sizes: list[int], seed: int = 0) -> Path:
    """uint8 (N, 1, 3, 3) images; class c has sizes[c] samples, brightness rising with c."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(sizes)), sizes)
    x = (rng.integers(0, 40, (len(y), 1, 3, 3)) + 50 * y[:, None, None, None]).astype(np.uint8)
    np.savez(path, x=x, y=y)
    return path


def npz_cfg(path: Path, **kw) -> IngestConfig:
    return IngestConfig(source="npz", path=str(path), **kw)


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


def test_ingest_writes_the_prepared_dataset_contract(tmp_path):
    res = ingest(IngestConfig(), tmp_path / "prepared")
    ds = load_prepared(res.out_dir)
    m = ds.manifest
    assert set(m) == MANIFEST_KEYS
    assert m["source"]["kind"] == "digits" and m["dtype"] == "float32" and m["max_value"] == 16
    assert ds.num_classes == res.num_classes == 10 and ds.in_shape == res.shape == (1, 8, 8)
    for name in SPLITS:
        split, info = ds.split(name), m["splits"][name]
        assert split.x.dtype == np.float32 and split.x.shape[1:] == (1, 8, 8)
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
        assert info["count"] == len(split) == res.counts[name]
        assert sum(info["per_class"].values()) == info["count"]
        assert info["sha256"] == sha256_file(res.out_dir / f"{name}.npz")
        assert split.ids.dtype.kind == "U" and split.ids[0].startswith("digits:")
    assert sum(res.counts.values()) == 1797 and res.rejected == 0
    assert res.data_hash == m["data_hash"]


def test_ingest_stratifies_every_class_into_every_split(tmp_path):
    sizes = [3, 10, 41, 120]
    res = ingest(npz_cfg(write_npz(tmp_path / "d.npz", sizes)), tmp_path / "out")
    m = json.loads((res.out_dir / "manifest.json").read_text())
    for name in SPLITS:
        assert all(n >= 1 for n in m["splits"][name]["per_class"].values()), name
    for c, size in enumerate(sizes):
        assert sum(m["splits"][s]["per_class"][str(c)] for s in SPLITS) == size
    total = sum(sizes)
    for name, share in m["split"].items():
        assert abs(res.counts[name] / total - share) < 0.03, name


def test_stratified_split_handles_tiny_classes():
    labels = np.array([0, 1, 1, 2, 2, 2])
    parts = stratified_split(labels, val=0.15, test=0.15, seed=0)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(6))
    assert labels[parts["train"]].tolist().count(0) == 1  # a lone sample trains
    assert {labels[parts[s]].tolist().count(2) for s in SPLITS} == {1}


def test_ingest_is_byte_identical_across_runs_and_clock_times(tmp_path, monkeypatch):
    cfg = npz_cfg(write_npz(tmp_path / "d.npz", [20, 20, 20]), seed=3)
    first = ingest(cfg, tmp_path / "a")
    later = time.time() + 86_400 * 400  # a run a year later must not change zip timestamps
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(time, "localtime", lambda t=None: time.gmtime(later))
    second = ingest(cfg, tmp_path / "b")
    assert file_hashes(first.out_dir) == file_hashes(second.out_dir)
    assert first.data_hash == second.data_hash


def test_ingest_different_seed_gives_a_different_split(tmp_path):
    path = write_npz(tmp_path / "d.npz", [20, 20, 20])
    a = load_prepared(ingest(npz_cfg(path, seed=0), tmp_path / "a").out_dir)
    b = load_prepared(ingest(npz_cfg(path, seed=1), tmp_path / "b").out_dir)
    assert set(a.test.ids) != set(b.test.ids)
    assert a.manifest["data_hash"] != b.manifest["data_hash"]
    assert a.manifest["source"]["sha256"] == b.manifest["source"]["sha256"]


def test_ingest_normalization_comes_from_train_split_only_ignoring_nan(tmp_path):
    x = np.random.default_rng(0).random((60, 2, 2)).astype(np.float32)
    x[:, 0, 0] += np.repeat([0.0, 5.0], 30)  # class 1 is far brighter: shares move the mean
    x[7, 1, 1] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.repeat([0, 1], 30))
    res = ingest(npz_cfg(tmp_path / "d.npz", split={"train": 0.5, "val": 0.25, "test": 0.25}),
                 tmp_path / "out")
    ds = load_prepared(res.out_dir)
    assert np.isnan(np.concatenate([ds.split(s).x for s in SPLITS])).sum() == 1  # kept, not cleaned
    assert ds.mean == pytest.approx(float(np.nanmean(ds.train.x)), rel=1e-6)
    assert ds.std == pytest.approx(float(np.nanstd(ds.train.x)), rel=1e-6)
    everything = np.concatenate([ds.split(s).x for s in SPLITS])
    assert ds.mean != pytest.approx(float(np.nanmean(everything)), rel=1e-6)


def test_ingest_scales_by_configured_max_value_and_caps_classes(tmp_path):
    path = write_npz(tmp_path / "d.npz", [30, 30])  # uint8, values up to 89
    cfg = npz_cfg(path, max_value=100, limit_per_class=10, seed=5)
    ds = load_prepared(ingest(cfg, tmp_path / "a").out_dir)
    assert ds.manifest["max_value"] == 100
    everything = np.concatenate([ds.split(s).x for s in SPLITS])
    assert everything.max() > 0.5 and everything.max() <= 0.89 + 1e-6
    assert all(
        sum(ds.manifest["splits"][s]["per_class"][c] for s in SPLITS) == 10 for c in ("0", "1")
    )
    again = load_prepared(ingest(cfg, tmp_path / "b").out_dir)
    assert set(again.train.ids) == set(ds.train.ids)  # the cap is drawn by seed


def test_ingest_lists_rejected_images_in_the_manifest(tmp_path):
    src = tmp_path / "images"
    for c in ("a", "b"):
        (src / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((5, 5), 60 * i, np.uint8)).save(src / c / f"{i}.png")
    (src / "b" / "corrupt.png").write_bytes(b"\x89PNG garbage")
    res = ingest(IngestConfig(source="imagefolder", path=str(src)), tmp_path / "out")
    m = json.loads((res.out_dir / "manifest.json").read_text())
    assert res.rejected == 1 and [r["id"] for r in m["rejected"]] == ["b/corrupt.png"]
    assert m["classes"] == ["a", "b"] and sum(res.counts.values()) == 8


def test_ingest_failure_leaves_the_previous_output_untouched(tmp_path):
    out = tmp_path / "out"
    ingest(npz_cfg(write_npz(tmp_path / "good.npz", [10, 10])), out)
    before = file_hashes(out)
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 2, 2)))
    with pytest.raises(ValueError, match=r"bad\.npz: missing array `y`"):
        ingest(npz_cfg(tmp_path / "bad.npz"), out)
    assert file_hashes(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_ingest_with_too_few_samples_for_a_split_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="too few samples for a val split"):
        ingest(npz_cfg(write_npz(tmp_path / "d.npz", [2, 2])), tmp_path / "out")


def test_ingest_resize_scales_digits_to_the_configured_size_deterministically(tmp_path):
    cfg = IngestConfig(resize=[32, 32], limit_per_class=12)
    res = ingest(cfg, tmp_path / "a")
    ds = load_prepared(res.out_dir)
    assert ds.in_shape == res.shape == (1, 32, 32)
    everything = np.concatenate([ds.split(s).x for s in SPLITS])
    assert everything.shape[1:] == (1, 32, 32) and everything.dtype == np.float32
    assert everything.min() >= 0.0 and everything.max() <= 1.0  # [0, max_value] before scaling
    assert everything.max() > 0.9  # bright strokes survive the interpolation
    assert ds.manifest["resize"] == {"size": [32, 32], "original_shapes": [[1, 8, 8]]}
    again = ingest(cfg, tmp_path / "b")
    assert file_hashes(res.out_dir) == file_hashes(again.out_dir)
    plain = ingest(IngestConfig(limit_per_class=12), tmp_path / "plain")
    assert plain.data_hash != res.data_hash


def test_ingest_without_resize_is_unchanged_and_own_size_resize_is_byte_identical(tmp_path):
    plain = ingest(IngestConfig(limit_per_class=12), tmp_path / "plain")
    same = ingest(IngestConfig(limit_per_class=12, resize=[8, 8]), tmp_path / "same")
    manifest = json.loads((plain.out_dir / "manifest.json").read_text())
    assert set(manifest) == MANIFEST_KEYS  # no `resize` entry when none is asked for
    hashes, resized = file_hashes(plain.out_dir), file_hashes(same.out_dir)
    assert {k: v for k, v in hashes.items() if k.endswith(".npz")} == {
        k: v for k, v in resized.items() if k.endswith(".npz")}
    assert plain.data_hash == same.data_hash


def test_resize_images_interpolates_within_the_raw_range():
    ramp = np.array([[[0.0, 16.0], [16.0, 0.0]]])  # (C=1, 2, 2), raw digits scale
    images = np.stack([ramp, np.full((1, 2, 2), 7.0)])  # (2, 1, 2, 2)
    out, shapes = resize_images(images, (5, 3))
    assert out.shape == (2, 1, 5, 3) and out.dtype == np.float32 and shapes == [[1, 2, 2]]
    assert out[0].min() >= 0.0 and out[0].max() <= 16.0
    assert 0.0 < out[0, 0, 2, 1] < 16.0  # the middle blends both corners, no uint8 rounding
    assert np.allclose(out[1], 7.0)  # a constant image stays constant


def test_ingest_resize_accepts_images_of_mixed_sizes(tmp_path, monkeypatch):
    sizes = [(6, 6), (9, 12)] * 15
    images = np.empty(len(sizes), dtype=object)  # a source of mixed sizes: (C, H, W) each
    for i, (h, w) in enumerate(sizes):
        images[i] = np.full((1, h, w), 10.0 * (i % 3), np.float32)
    raw = RawData(images=images, labels=np.arange(len(sizes)) % 3,
                  ids=np.array([f"img:{i}" for i in range(len(sizes))]),
                  classes=["a", "b", "c"], max_value=255.0, source_sha256="0" * 64)
    monkeypatch.setattr(ingest_module, "load_source", lambda cfg: raw)
    res = ingest(IngestConfig(resize=[4, 4]), tmp_path / "out")
    ds = load_prepared(res.out_dir)
    assert ds.in_shape == (1, 4, 4)
    assert ds.manifest["resize"]["original_shapes"] == [[1, 6, 6], [1, 9, 12]]
    x, y = ds.train.x, ds.train.y
    assert np.allclose(x, (10.0 * y / 255.0)[:, None, None, None], atol=1e-6)
    with pytest.raises(ValueError, match="different sizes need `ingest.resize`"):
        ingest(IngestConfig(), tmp_path / "unsized")


def test_ingest_resize_reads_an_image_folder_at_the_configured_size(tmp_path):
    src = tmp_path / "images"
    for c in ("a", "b"):
        (src / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((5, 7), 60 * i, np.uint8)).save(src / c / f"{i}.png")
    res = ingest(IngestConfig(source="imagefolder", path=str(src), resize=[10, 10]),
                 tmp_path / "out")
    ds = load_prepared(res.out_dir)
    assert ds.in_shape == (1, 10, 10)
    assert ds.manifest["resize"] == {"size": [10, 10], "original_shapes": [[1, 5, 7]]}
    assert np.concatenate([ds.split(s).x for s in SPLITS]).max() == pytest.approx(180 / 255)
