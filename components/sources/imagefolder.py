"""`imagefolder`: one sub-folder of PNG/JPEG files per class, read as grey images."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from components.config import IngestConfig
from components.core.io import sha256_tree
from components.sources.common import RawData, _source_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def load(cfg: IngestConfig) -> RawData:
    """One sub-folder per class (sorted names = classes) of PNG/JPEG files, read as grey 'L'.

    Unreadable files and images whose size differs from the majority size land in `rejected`
    instead of raising; ids are paths relative to the root folder. A symlinked file or folder
    that resolves outside the root is refused (ValueError naming it): the dataset is the
    folder's content, never what a link drags in from elsewhere.
    """
    from PIL import Image

    root = _source_path(cfg)
    if not root.is_dir():
        raise ValueError(f"{root}: the imagefolder source expects a folder of class folders")
    refuse_escaping_links(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class sub-folders found")

    rejected: list[dict[str, str]] = []
    read: list[tuple[str, int, np.ndarray]] = []  # (id, label, (H, W) uint8)
    for label, name in enumerate(classes):
        found = (root / name).rglob("*")
        for p in sorted(q for q in found if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES):
            rel = p.relative_to(root).as_posix()
            try:
                with Image.open(p) as im:
                    arr = np.asarray(im.convert("L"))
            except Exception as e:  # Pillow raises many types for corrupt or truncated files
                rejected.append({"id": rel, "reason": f"unreadable image: {e}"})
                continue
            read.append((rel, label, arr))
    if not read:
        raise ValueError(f"{root}: no readable .png/.jpg/.jpeg images in {classes}")

    if cfg.resize is not None:  # ingest resizes every image: sizes may differ
        images = np.empty(len(read), dtype=object)  # (N,) of (1, H_i, W_i) uint8
        for i, (_, _, a) in enumerate(read):
            images[i] = a[None, :, :]
        kept = read
    else:
        kept = _majority_size(read, rejected)
        images = np.stack([a for _, _, a in kept])[:, None, :, :]  # (N, 1, H, W) uint8
    return RawData(
        images=images,
        labels=np.array([lab for _, lab, _ in kept], dtype=np.int64),
        ids=np.array([rel for rel, _, _ in kept]),
        classes=classes,
        max_value=255.0,
        source_sha256=sha256_tree(root),
        rejected=rejected,
    )


def refuse_escaping_links(root: Path) -> None:
    """Raise when any symlink under ``root`` (file or folder, at any depth) resolves outside it.

    Walks without following links: a link is judged by where it points, before anything below
    it is read (or hashed: `sha256_tree` follows links). A link to a folder inside ``root``
    needs no descent, the walk reaches that folder's own links directly.
    """
    top = root.resolve()
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in sorted(dirs + files):
            entry = Path(folder) / name
            if entry.is_symlink():
                target = entry.resolve()
                if not target.is_relative_to(top):
                    raise ValueError(
                        f"{root}: {entry.relative_to(root).as_posix()} is a symlink to {target}, "
                        "outside the image folder; copy the files in instead of linking them")


def _majority_size(read: list[tuple[str, int, np.ndarray]], rejected: list[dict[str, str]]
                   ) -> list[tuple[str, int, np.ndarray]]:
    """Without `ingest.resize` one size must hold: the most common wins (ties: the first seen,
    files are visited in sorted order); the others are rejected, naming their size."""
    majority = Counter(a.shape for _, _, a in read).most_common(1)[0][0]
    kept = []
    for rel, label, arr in read:
        if arr.shape != majority:
            rejected.append({
                "id": rel,
                "reason": f"image is {arr.shape[0]}x{arr.shape[1]} (HxW) but the majority "
                f"size is {majority[0]}x{majority[1]}; set `ingest.resize` to keep it",
            })
        else:
            kept.append((rel, label, arr))
    return kept
