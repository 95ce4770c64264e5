"""Builders of tiny prepared datasets (the folder `ingest` writes) for component tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.core.data import SPLITS, Dataset, Split
from components.core.io import atomic_save_npz, atomic_write_json, sha256_file

REPO = Path(__file__).resolve().parents[1]
Arrays = dict[str, dict[str, np.ndarray]]  # split -> {"x", "y", "ids"}


def make_splits(classes: int = 3, per_class: dict[str, int] | None = None,
                shape: tuple[int, int, int] = (1, 4, 4), seed: int = 0) -> Arrays:
    """Random distinct images in [0, 1], balanced labels, ids like `train-0007`."""
    per_class = per_class or {"train": 6, "val": 3, "test": 3}
    rng = np.random.default_rng(seed)
    out = {}
    for split in SPLITS:
        y = np.repeat(np.arange(classes, dtype=np.int64), per_class[split])
        x = rng.random((len(y), *shape), dtype=np.float32)
        ids = np.array([f"{split}-{i:04d}" for i in range(len(y))])
        out[split] = {"x": x, "y": y, "ids": ids}
    return out


def write_prepared(folder: Path, arrays: Arrays, class_names: list[str] | None = None,
                   shape: list[int] | None = None, rejected: list[dict] | None = None) -> Path:
    """Write `train/val/test.npz` and a manifest consistent with `arrays` (unless overridden).

    Class names default to `c0..cK` for every label up to the largest one present.
    """
    folder.mkdir(parents=True, exist_ok=True)
    first = arrays["train"]
    names = class_names or [f"c{k}" for k in range(int(max(a["y"].max() for a in
                                                          arrays.values())) + 1)]
    splits = {}
    for split, a in arrays.items():
        path = atomic_save_npz(folder / f"{split}.npz", **a)
        labels, counts = np.unique(a["y"], return_counts=True)
        splits[split] = {"count": len(a["y"]), "sha256": sha256_file(path),
                         "per_class": {names[k] if k < len(names) else str(k): int(c)
                                       for k, c in zip(labels, counts, strict=True)}}
    atomic_write_json(folder / "manifest.json", {
        "source": {"kind": "npz", "path": "synthetic.npz", "sha256": "0" * 64},
        "classes": names, "num_classes": len(names),
        "shape": shape or list(first["x"].shape[1:]), "dtype": "float32", "max_value": 1.0,
        "normalization": {"mean": float(np.nanmean(first["x"])),
                          "std": float(np.nanstd(first["x"]))},
        "seed": 0, "split": {"train": 0.5, "val": 0.25, "test": 0.25}, "splits": splits,
        "rejected": rejected or [], "data_hash": "1" * 64})
    return folder


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


def corner_blobs(n_per_class: int, rng: np.random.Generator) -> Split:
    """3 classes of 1x8x8 images: a bright 3x3 blob top-left, centre or bottom-right."""
    corners = [(0, 0), (2, 2), (5, 5)]
    x = rng.uniform(0, 0.2, (3 * n_per_class, 1, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(3), n_per_class)
    for i, label in enumerate(y):
        r, c = corners[label]
        x[i, 0, r : r + 3, c : c + 3] = 1.0
    return Split(x=x, y=y.astype(np.int64), ids=np.array([f"s{i}" for i in range(len(y))]))


def make_corner_blobs() -> Dataset:
    """12/4/4 `corner_blobs` per class in train/val/test, data hash `abc123` (no class names)."""
    rng = np.random.default_rng(0)
    train = corner_blobs(12, rng)
    return Dataset(train=train, val=corner_blobs(4, rng), test=corner_blobs(4, rng),
                   manifest={"num_classes": 3, "shape": [1, 8, 8], "data_hash": "abc123",
                             "normalization": {"mean": float(train.x.mean()),
                                               "std": float(train.x.std())}})
