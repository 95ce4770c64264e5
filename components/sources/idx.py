"""`idx`: MNIST-format IDX file pairs (train and t10k/test) in one folder, gzipped or plain."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from components.config import IngestConfig
from components.sources.common import RawData, _encode_labels, _hash_files, _source_path

# IDX element-type codes (third magic byte) -> big-endian numpy dtype
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzipped or not): magic 0 0 <type> <ndim>, big-endian uint32 dims."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip data ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header truncated ({ndim} dims declared)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX dims {dims} need {expected} data bytes, found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_one(folder: Path, patterns: tuple[str, ...]) -> Path | None:
    found = sorted({p for pat in patterns for p in folder.glob(pat) if p.is_file()})
    if len(found) > 1:
        raise ValueError(f"{folder}: ambiguous IDX files {[p.name for p in found]}")
    return found[0] if found else None


def load(cfg: IngestConfig) -> RawData:
    """MNIST-format IDX pairs in a folder, gzipped or plain (EMNIST-style names accepted).

    Both the train and the t10k/test pairs go into one pool: the `ingest` stage re-splits the
    pool stratified by seed, so the original train/test boundary is not kept. A folder holding
    only the train pair uses it alone. Labels are mapped to 0..K-1; class names keep the
    original label values (EMNIST letters 1..26 -> classes "1".."26").
    """
    folder = _source_path(cfg)
    if not folder.is_dir():
        raise ValueError(f"{folder}: the idx source expects a folder of IDX files")
    pairs: dict[str, tuple[Path, Path]] = {}
    for part in ("train", "t10k", "test"):
        images = _find_one(folder, (f"*{part}-images*",))
        labels = _find_one(folder, (f"*{part}-labels*",))
        if images is None and labels is None:
            continue
        if images is None or labels is None:
            have = images or labels
            raise ValueError(f"{have}: its {part} images/labels partner file is missing")
        pairs[part] = (images, labels)
    if "train" not in pairs:
        raise ValueError(f"{folder}: no '*train-images*' / '*train-labels*' IDX pair found")

    xs, ys, ids = [], [], []
    for images_path, labels_path in pairs.values():
        x, y = read_idx(images_path), read_idx(labels_path)
        if x.ndim != 3:
            raise ValueError(f"{images_path}: expected 3 dims (N, H, W), got {x.shape}")
        if y.ndim != 1:
            raise ValueError(f"{labels_path}: expected 1 dim (N,), got {y.shape}")
        if len(x) != len(y):
            raise ValueError(
                f"{images_path} holds {len(x)} images but {labels_path} holds {len(y)} labels"
            )
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise ValueError(f"{images_path}: images are {x.shape[1:]}, not {xs[0].shape[1:]}")
        xs.append(x)
        ys.append(y)
        ids += [f"{images_path.name}:{i}" for i in range(len(x))]
    x = np.concatenate(xs)[:, None, :, :]  # (N, H, W) -> (N, 1, H, W)
    labels, classes = _encode_labels(np.concatenate(ys))
    return RawData(
        images=x,
        labels=labels,
        ids=np.array(ids),
        classes=classes,
        max_value=1.0 if np.issubdtype(x.dtype, np.floating) else 255.0,
        source_sha256=_hash_files([p for pair in pairs.values() for p in pair]),
    )
