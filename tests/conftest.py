"""Shared fixtures: tiny prepared datasets and tiny parameter files, all in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from components.data import Dataset, Split
from components.io import atomic_save_npz, atomic_write_json

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def make_blobs(n_per_class: int, classes: int = 3, shape=(1, 8, 8), seed: int = 0):
    """Separable toy images: class k lights up its own horizontal band, plus noise."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    xs, ys = [], []
    band = max(1, h // classes)
    for k in range(classes):
        x = rng.uniform(0, 0.3, size=(n_per_class, c, h, w)).astype(np.float32)
        x[:, :, k * band : (k + 1) * band, :] += 0.6
        xs.append(np.clip(x, 0, 1))
        ys.append(np.full(n_per_class, k, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def make_dataset(n_per_class: int = 30, classes: int = 3, shape=(1, 8, 8),
                 seed: int = 0) -> Dataset:
    x, y = make_blobs(n_per_class, classes, shape, seed)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    ids = np.array([f"blob:{i}" for i in range(len(y))])
    n = len(y)
    a, b = int(n * 0.6), int(n * 0.8)
    sl = {"train": slice(0, a), "val": slice(a, b), "test": slice(b, n)}
    splits = {k: Split(x[s], y[s], ids[s]) for k, s in sl.items()}
    manifest = {
        "classes": [str(k) for k in range(classes)],
        "num_classes": classes,
        "shape": list(shape),
        "dtype": "float32",
        "max_value": 1.0,
        "normalization": {"mean": float(splits["train"].x.mean()),
                          "std": float(splits["train"].x.std())},
        "splits": {k: {"count": len(v), "sha256": "",
                       "per_class": {str(c): int((v.y == c).sum()) for c in range(classes)}}
                   for k, v in splits.items()},
        "rejected": [],
        "data_hash": f"blobs-{n_per_class}-{classes}-{seed}",
    }
    return Dataset(manifest=manifest, **splits)


def write_dataset(ds: Dataset, folder: Path) -> Path:
    for name in ("train", "val", "test"):
        s = ds.split(name)
        atomic_save_npz(folder / f"{name}.npz", x=s.x, y=s.y, ids=s.ids)
    atomic_write_json(folder / "manifest.json", ds.manifest)
    return folder


@pytest.fixture
def tiny_dataset() -> Dataset:
    return make_dataset()
