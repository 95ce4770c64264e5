"""The prepared-dataset contract between `ingest` and every later stage.

`data/prepared/` holds `train.npz`, `val.npz`, `test.npz` (arrays `x`: float32 (N, C, H, W)
scaled to [0, 1], `y`: int64 labels, `ids`: str source ids) and `manifest.json` (source, classes,
shape, dtype, normalisation statistics from the training split, per-class counts, content hashes,
and `rejected`: source items that could not be read).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from components.core.io import read_json, read_npz

PREPARED_DIR = Path("data/prepared")
SPLITS = ("train", "val", "test")


@dataclass
class Split:
    x: np.ndarray  # (N, C, H, W) float32 in [0, 1]
    y: np.ndarray  # (N,) int64
    ids: np.ndarray  # (N,) str: where each sample came from

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    manifest: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["shape"])  # type: ignore[return-value]

    @property
    def mean(self) -> float:
        return float(self.manifest["normalization"]["mean"])

    @property
    def std(self) -> float:
        return float(self.manifest["normalization"]["std"])

    def split(self, name: str) -> Split:
        return getattr(self, name)


def load_split(path: str | Path) -> Split:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: prepared split not found (run the `ingest` stage)")
    z = read_npz(path)  # ValueError naming `path` when it is not a readable archive
    missing = {"x", "y", "ids"} - set(z)
    if missing:
        raise ValueError(f"{path}: missing arrays {sorted(missing)}")
    return Split(x=z["x"].astype(np.float32, copy=False), y=z["y"].astype(np.int64),
                 ids=z["ids"].astype(str))


def load_prepared(folder: str | Path = PREPARED_DIR) -> Dataset:
    """Load the three splits and the manifest written by `ingest`."""
    folder = Path(folder)
    manifest = read_json(folder / "manifest.json")
    splits = {s: load_split(folder / f"{s}.npz") for s in SPLITS}
    return Dataset(manifest=manifest, **splits)


def stratified_sample(split: Split, n: int, seed: int = 0) -> Split:
    """About ``n`` samples of ``split`` with its class shares (at least one per class)."""
    if n >= len(split):
        return split
    rng = np.random.default_rng(seed)
    picked = []
    classes, counts = np.unique(split.y, return_counts=True)
    for c, count in zip(classes, counts, strict=True):
        idx = np.flatnonzero(split.y == c)
        k = max(1, round(n * count / len(split)))
        picked.append(rng.permutation(idx)[:k])
    sel = np.sort(np.concatenate(picked))
    return Split(x=split.x[sel], y=split.y[sel], ids=split.ids[sel])
