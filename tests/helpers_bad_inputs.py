"""Builders of small sources, good and bad, and a throwaway stage workspace, for the bad-input
suite (`tests/test_bad_inputs.py`).

A good source holds 2 classes of 8 distinct random 4x4 images: `ingest` splits each class
6 / 1 / 1, which passes `validate` with the repository's params; each bad input is one defect
on top of it.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from components.config import merge_params
from components.core.io import sha256_tree
from tests.helpers_data import REPO

PER_CLASS, SIDE = 8, 4


def pixels(n: int = 2 * PER_CLASS, seed: int = 0) -> np.ndarray:
    """(n, SIDE, SIDE) distinct uint8 images (a distinct first pixel row keeps hashes apart)."""
    x = np.random.default_rng(seed).integers(0, 256, (n, SIDE, SIDE), dtype=np.uint8)
    x[:, 0, 0] = np.arange(n, dtype=np.uint8)
    return x


def labels(n: int = 2 * PER_CLASS) -> np.ndarray:
    return np.arange(n, dtype=np.int64) % 2


def write_csv(path: Path, rows: list[list[Any]] | None = None,
              header: list[str] | None = None) -> Path:
    """`label,p0..p15` and one line per row (a row is written as given: ragged is allowed)."""
    if rows is None:
        rows = [[int(y), *x.ravel().tolist()] for x, y in zip(pixels(), labels(), strict=True)]
    header = header or ["label", *(f"p{i}" for i in range(SIDE * SIDE))]
    path.write_text("\n".join(",".join(str(v) for v in r) for r in [header, *rows]) + "\n")
    return path


def idx_bytes(a: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0 0 0x08 ndim, big-endian dims, data."""
    dims = np.asarray(a.shape, ">u4").tobytes()
    return bytes([0, 0, 0x08, a.ndim]) + dims + np.ascontiguousarray(a, np.uint8).tobytes()


def write_idx(folder: Path, images: bytes | None = None, labels_: bytes | None = None,
              gz: bool = False) -> Path:
    """`train-images-idx3-ubyte` and `train-labels-idx1-ubyte` (optionally gzipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = idx_bytes(pixels()) if images is None else images
    labels_ = idx_bytes(labels().astype(np.uint8)) if labels_ is None else labels_
    suffix = ".gz" if gz else ""
    for name, data in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels_)):
        (folder / f"{name}{suffix}").write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return folder


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    """An npz source; `x` and `y` default to the good ones, `None` leaves an array out."""
    arrays = {"x": pixels(), "y": labels(), **arrays}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def write_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"),
                       per_class: int = PER_CLASS) -> Path:
    """One folder per class of distinct SIDE x SIDE grey PNGs."""
    x = pixels(len(classes) * per_class)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(x[k * per_class + i]).save(root / name / f"{i}.png")
    return root


def tree_state(path: Path) -> str | None:
    """What "unchanged" compares: the content hash of ``path``, None when absent."""
    return sha256_tree(path) if path.exists() else None


def leftovers(folder: Path) -> list[str]:
    """Temporary files or folders of an atomic write left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp")
                  or ".old-" in p.name) if folder.is_dir() else []


@dataclass
class Workspace:
    """A folder with this repository's params.yaml and dvc.yaml, where stages run in-process."""

    root: Path

    def params(self, overrides: dict[str, Any]) -> Path:
        params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
        merge_params(params, overrides)
        path = self.root / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        return path

    def raw_params(self, text: str) -> Path:
        path = self.root / "params.yaml"
        path.write_text(text, encoding="utf-8")
        return path


def make_workspace(root: Path) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")
    ws = Workspace(root)
    ws.params({})
    return ws


def env_with_tracking(db: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    env["GX_ANALYTICS_ENABLED"] = "false"
    env.pop("DISTILLERY_PARENT_RUN_ID", None)
    return env
