"""Builders of tiny prepared datasets (the folder `ingest` writes) for component tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from components.data import SPLITS
from components.io import atomic_save_npz, atomic_write_json, sha256_file

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
