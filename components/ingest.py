"""The `ingest` stage: one labelled image source in, the prepared dataset
(`components.core.data`) out.

Loads the configured source (`components.sources.SOURCES`), optionally resizes every image
(`resize_images`), scales pixels by `max_value` to float32, optionally caps each class, splits
stratified and deterministically by seed, computes normalisation statistics on the training
split only, and writes `train.npz`, `val.npz`, `test.npz` and `manifest.json` into `out_dir` as
one atomic folder swap.

The split files are byte-reproducible: `np.savez_compressed` writes its members through
`ZipFile.open(name, "w")`, which stamps the fixed 1980-01-01 ZipInfo date rather than the clock,
so the same config and source give the same file hashes (what DVC's cache relies on).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.config import IngestConfig, Params
from components.core.data import SPLITS
from components.core.io import (
    atomic_dir,
    atomic_save_npz,
    atomic_write_json,
    sha256_bytes,
    sha256_file,
)
from components.core.stage import StageIO, StageResult
from components.sources import RawData, load_source


@dataclass
class IngestResult:
    out_dir: Path
    counts: dict[str, int]  # split name -> samples
    num_classes: int
    shape: tuple[int, int, int]  # (C, H, W)
    data_hash: str
    rejected: int


def limit_per_class(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices keeping at most ``limit`` samples of each class, drawn by ``seed``."""
    if limit is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(rng.choice(idx, size=limit, replace=False) if len(idx) > limit else idx)
    return np.sort(np.concatenate(keep))


def resize_images(images: np.ndarray, size: list[int] | tuple[int, int]
                  ) -> tuple[np.ndarray, list[list[int]]]:
    """Every (C, H, W) image of ``images`` resized to ``size`` = (H, W), bilinear per channel.

    ``images`` is (N, C, H, W), or a 1-d object array of (C, H, W) arrays of mixed sizes. Works
    on the raw values (Pillow mode "F", float32), before any scaling, so nothing is rounded to
    uint8. Returns the float32 (N, C, H, W) stack and the sorted distinct original shapes.
    """
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    items = list(images)
    shapes = sorted({tuple(int(d) for d in a.shape) for a in items})
    if images.dtype != object and all(s[1:] == (h, w) for s in shapes):
        return images, [list(s) for s in shapes]  # already that size: the values as they are
    out = np.empty((len(items), shapes[0][0] if shapes else 1, h, w), dtype=np.float32)
    for i, img in enumerate(items):
        if img.shape[0] != out.shape[1]:
            raise ValueError(f"image {i} has {img.shape[0]} channels, others {out.shape[1]}")
        for c, channel in enumerate(np.asarray(img, dtype=np.float32)):
            pic = Image.fromarray(np.ascontiguousarray(channel)).resize(
                (w, h), Image.Resampling.BILINEAR)
            out[i, c] = np.asarray(pic, dtype=np.float32)
    finite = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in items])
    finite = finite[np.isfinite(finite)]
    if finite.size:
        # the filter's weights are convex, but their float sum can overshoot by an ulp; NaN and
        # inf pass through np.clip for `validate` to report
        np.clip(out, finite.min(), finite.max(), out=out)
    return out, [list(s) for s in shapes]


def _class_counts(n: int, val: float, test: float) -> tuple[int, int]:
    """(n_val, n_test) for one class of n samples: >= 1 each when n >= 3, >= 1 left to train."""
    if n < 3:
        return 0, (1 if n == 2 else 0)  # too few for three splits: train first, then test
    n_val, n_test = max(1, round(n * val)), max(1, round(n * test))
    while n - n_val - n_test < 1:  # only reachable with extreme shares
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def stratified_split(
    labels: np.ndarray, val: float, test: float, seed: int
) -> dict[str, np.ndarray]:
    """Split positions 0..N-1 into train/val/test per class, shuffled by ``seed``.

    Done per class by hand rather than with `train_test_split(stratify=...)`, which refuses
    classes of fewer than two samples; here every class of >= 3 samples gets at least one
    sample in each split. Each split's indices come back sorted (source order).
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val, n_test = _class_counts(len(idx), val, test)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return {s: np.sort(np.concatenate(p)).astype(np.int64) for s, p in parts.items()}


def normalization_stats(x: np.ndarray) -> dict[str, float]:
    """Mean and std of the finite values of ``x`` (NaN/inf are left for `validate` to report)."""
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return {"mean": 0.0, "std": 1.0}
    std = float(finite.std(dtype=np.float64))
    # a constant image set would make later `(x - mean) / std` divide by zero
    return {"mean": float(finite.mean(dtype=np.float64)), "std": std if std > 0 else 1.0}


def ingest(cfg: IngestConfig, out_dir: str | Path) -> IngestResult:
    """Prepare the dataset ``cfg`` describes in ``out_dir`` (see `components.core.data`)."""
    out_dir = Path(out_dir)
    raw = load_source(cfg)
    max_value = float(cfg.max_value or raw.max_value)
    keep = limit_per_class(raw.labels, cfg.limit_per_class, cfg.seed)
    images, original_shapes = raw.images[keep], None
    if cfg.resize is not None:
        images, original_shapes = resize_images(images, cfg.resize)
    elif images.dtype == object:
        raise ValueError(f"{cfg.source} source {cfg.path or ''}: images of different sizes "
                         "need `ingest.resize`")
    x = images.astype(np.float32) / np.float32(max_value)  # (N, C, H, W) float32
    y, ids = raw.labels[keep].astype(np.int64), raw.ids[keep].astype(str)
    splits = stratified_split(y, cfg.split.val, cfg.split.test, cfg.seed)
    for name, idx in splits.items():
        if len(idx) == 0:
            raise ValueError(
                f"{cfg.source} source {cfg.path or ''}: too few samples for a {name} split "
                f"({len(y)} samples over {len(raw.classes)} classes)"
            )

    stats = normalization_stats(x[splits["train"]])
    shape = [int(d) for d in x.shape[1:]]
    with atomic_dir(out_dir) as tmp:
        split_info = {}
        for name, idx in splits.items():
            path = atomic_save_npz(tmp / f"{name}.npz", x=x[idx], y=y[idx], ids=ids[idx])
            split_info[name] = _split_summary(y[idx], raw.classes, sha256_file(path))
        manifest = _manifest(cfg, raw, max_value, shape, stats, split_info)
        if cfg.resize is not None:  # only then, so that a run without resize is unchanged
            manifest["resize"] = {"size": list(cfg.resize), "original_shapes": original_shapes}
        atomic_write_json(tmp / "manifest.json", manifest)
    return IngestResult(
        out_dir=out_dir,
        counts={s: split_info[s]["count"] for s in SPLITS},
        num_classes=len(raw.classes),
        shape=tuple(shape),  # type: ignore[arg-type]
        data_hash=manifest["data_hash"],
        rejected=len(raw.rejected),
    )


def _split_summary(y: np.ndarray, classes: list[str], sha256: str) -> dict:
    counts = np.bincount(y, minlength=len(classes))
    return {
        "count": int(len(y)),
        "per_class": {c: int(n) for c, n in zip(classes, counts, strict=True)},
        "sha256": sha256,
    }


def _manifest(
    cfg: IngestConfig,
    raw: RawData,
    max_value: float,
    shape: list[int],
    stats: dict[str, float],
    split_info: dict[str, dict],
) -> dict:
    essentials = {
        "classes": raw.classes,
        "shape": shape,
        "dtype": "float32",
        "max_value": max_value,
        "normalization": stats,
        "splits": {s: split_info[s]["sha256"] for s in SPLITS},
    }
    # content hash of the prepared data: the source's path is left out, so a moved source
    # with the same bytes gives the same data_hash
    data_hash = sha256_bytes(json.dumps(essentials, sort_keys=True).encode())
    return {
        "source": {"kind": cfg.source, "path": cfg.path, "sha256": raw.source_sha256},
        "classes": raw.classes,
        "num_classes": len(raw.classes),
        "shape": shape,
        "dtype": "float32",
        "max_value": max_value,
        "normalization": stats,
        "seed": cfg.seed,
        "split": {"train": cfg.split.train, "val": cfg.split.val, "test": cfg.split.test},
        "splits": split_info,
        "rejected": raw.rejected,
        "data_hash": data_hash,
    }


def run(cfg: Params, io: StageIO) -> StageResult:
    """The `ingest` stage: the configured source into `io.out("prepared")`."""
    result = ingest(cfg.ingest, io.out("prepared"))
    metrics = {"samples": result.counts, "num_classes": result.num_classes,
               "rejected": result.rejected}
    return StageResult(metrics=metrics, params=cfg.ingest.model_dump(),
                       artifacts=[io.out("prepared") / "manifest.json"],
                       tags={"data_hash": result.data_hash})
