"""Data-source loaders for the `ingest` stage, selected by name from `SOURCES`.

Each loader reads one kind of labelled image source and returns `RawData`: the source's raw
pixel values as (N, C, H, W), labels 0..K-1, one id per sample saying where it came from, the
class names, the source's default `max_value`, items that could not be read (`rejected`), and a
hash of the source files. Loaders neither scale nor clean values: NaN and inf pass through so
that the `validate` stage sees them.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from components.config import IngestConfig
from components.io import hash_array, sha256_bytes, sha256_file, sha256_tree

if TYPE_CHECKING:
    import pandas as pd

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}

# IDX element-type codes (third magic byte) -> big-endian numpy dtype
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class RawData:
    images: np.ndarray  # (N, C, H, W) raw source values, unscaled, NaN/inf kept
    labels: np.ndarray  # (N,) int64 in 0..len(classes)-1
    ids: np.ndarray  # (N,) str: where each sample came from
    classes: list[str]
    max_value: float  # raw value that maps to 1.0 unless the config overrides it
    source_sha256: str
    rejected: list[dict[str, str]] = field(default_factory=list)


def _source_path(cfg: IngestConfig) -> Path:
    path = Path(cfg.path or "")
    if not path.exists():
        raise FileNotFoundError(f"{path}: {cfg.source} source not found")
    return path


def _encode_labels(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Map label values to 0..K-1; class names are the sorted distinct values as text."""
    uniq, codes = np.unique(values, return_inverse=True)
    names = [str(int(v)) if np.issubdtype(uniq.dtype, np.number) else str(v) for v in uniq]
    return codes.astype(np.int64).reshape(-1), names


def _hash_files(paths: list[Path]) -> str:
    """Order-independent hash of several files: sorted (name, content hash) pairs."""
    parts = sorted(f"{p.name}:{sha256_file(p)}" for p in paths)
    return sha256_bytes("\n".join(parts).encode())


# --- digits ------------------------------------------------------------------------------


def load_digits(cfg: IngestConfig) -> RawData:
    """scikit-learn's bundled 8x8 digits (no network): (1797, 1, 8, 8), values 0..16."""
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    images = d.images[:, None, :, :]  # (N, 8, 8) -> (N, 1, 8, 8)
    labels = d.target.astype(np.int64)
    return RawData(
        images=images,
        labels=labels,
        ids=np.array([f"digits:{i}" for i in range(len(labels))]),
        classes=[str(c) for c in range(10)],
        max_value=16.0,
        source_sha256=sha256_bytes((hash_array(images) + hash_array(labels)).encode()),
    )


# --- idx (MNIST format) --------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzipped or not): magic 0 0 <type> <ndim>, big-endian uint32 dims."""
    raw = path.read_bytes()
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


def load_idx(cfg: IngestConfig) -> RawData:
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


# --- npz -----------------------------------------------------------------------------------


def load_npz(cfg: IngestConfig) -> RawData:
    """An .npz with `x` (N, H, W) or (N, C, H, W), `y` (N,) and optionally `classes` (K,).

    With `classes`, `y` holds indices into it; without, `y`'s distinct values (ints or
    strings) become the classes, sorted. Default max_value: 1.0 for float `x`, 255 otherwise.
    """
    path = _source_path(cfg)
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: expected an .npz archive of arrays, found a single array")
    with z:
        for key in ("x", "y"):
            if key not in z.files:
                raise ValueError(f"{path}: missing array `{key}` (found {sorted(z.files)})")
        try:
            x, y = z["x"], z["y"]
            names = [str(c) for c in z["classes"]] if "classes" in z.files else None
        except ValueError as e:  # e.g. an object array, refused without pickle
            raise ValueError(f"{path}: {e}") from None
    if x.ndim == 3:
        x = x[:, None, :, :]  # (N, H, W) -> (N, 1, H, W)
    elif x.ndim != 4:
        raise ValueError(f"{path}: `x` must be (N, H, W) or (N, C, H, W), got {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{path}: `y` must be ({len(x)},) to match `x`, got {y.shape}")
    if names is None:
        labels, names = _encode_labels(y)
    else:
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: `y` must hold integer indices into `classes`")
        labels = y.astype(np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
            raise ValueError(f"{path}: `y` values must lie in 0..{len(names) - 1} (`classes`)")
    return RawData(
        images=x,
        labels=labels,
        ids=np.array([f"{path.name}:{i}" for i in range(len(x))]),
        classes=names,
        max_value=1.0 if np.issubdtype(x.dtype, np.floating) else 255.0,
        source_sha256=sha256_file(path),
    )


# --- imagefolder ---------------------------------------------------------------------------


def load_imagefolder(cfg: IngestConfig) -> RawData:
    """One sub-folder per class (sorted names = classes) of PNG/JPEG files, read as grey 'L'.

    Unreadable files and images whose size differs from the majority size land in `rejected`
    instead of raising; ids are paths relative to the root folder.
    """
    from PIL import Image

    root = _source_path(cfg)
    if not root.is_dir():
        raise ValueError(f"{root}: the imagefolder source expects a folder of class folders")
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

    # the most common size wins; ties go to the first seen (files are visited in sorted order)
    majority = Counter(a.shape for _, _, a in read).most_common(1)[0][0]
    kept = []
    for rel, label, arr in read:
        if arr.shape != majority:
            rejected.append({
                "id": rel,
                "reason": f"image is {arr.shape[0]}x{arr.shape[1]} (HxW) but the majority "
                f"size is {majority[0]}x{majority[1]}",
            })
        else:
            kept.append((rel, label, arr))
    return RawData(
        images=np.stack([a for _, _, a in kept])[:, None, :, :],  # (N, 1, H, W) uint8
        labels=np.array([lab for _, lab, _ in kept], dtype=np.int64),
        ids=np.array([rel for rel, _, _ in kept]),
        classes=classes,
        max_value=255.0,
        source_sha256=sha256_tree(root),
        rejected=rejected,
    )


# --- csv -----------------------------------------------------------------------------------


def load_csv(cfg: IngestConfig) -> RawData:
    """A CSV with a label column (`label_column`) and one column per pixel, C-H-W order.

    `image_shape` comes from the config or is inferred as (1, s, s) for s*s pixel columns.
    Rows with a non-numeric pixel or no label land in `rejected`; empty cells stay NaN.
    Ids are "<file>:row <i>", i counting data rows from 0 (the header is not a row).
    Labels may be ints or strings; classes are their sorted distinct values. Default
    max_value: 255 when every finite pixel is a whole number, else 1.0.
    """
    import pandas as pd

    path = _source_path(cfg)
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable CSV ({e})") from None
    if cfg.label_column not in df.columns:
        raise ValueError(
            f"{path}: label column `{cfg.label_column}` not found (columns: {list(df.columns)[:8]}"
            f"{'...' if len(df.columns) > 8 else ''})"
        )
    pixel_cols = [c for c in df.columns if c != cfg.label_column]
    shape = _csv_shape(path, cfg.image_shape, len(pixel_cols))

    raw_px = df[pixel_cols]
    px = raw_px.apply(pd.to_numeric, errors="coerce")
    bad_cell = px.isna() & raw_px.notna()  # text that is not a number (empty cells stay NaN)
    no_label = df[cfg.label_column].isna()
    rejected, keep = [], ~(bad_cell.any(axis=1) | no_label)
    for i in np.flatnonzero(~keep.to_numpy()):
        if no_label.iloc[i]:
            reason = f"missing label in column `{cfg.label_column}`"
        else:
            col = bad_cell.columns[bad_cell.iloc[i].to_numpy()][0]
            reason = f"non-numeric pixel in column `{col}`: {raw_px.iloc[i][col]!r}"
        rejected.append({"id": f"{path.name}:row {i}", "reason": reason})
    if not keep.any():
        raise ValueError(f"{path}: no usable rows (all {len(df)} rejected or the file is empty)")

    values = px.loc[keep].to_numpy(dtype=np.float64)
    labels, classes = _csv_labels(path, df.loc[keep, cfg.label_column])
    finite = values[np.isfinite(values)]
    integral = bool(np.all(finite == np.round(finite)))
    return RawData(
        images=values.reshape(-1, *shape),
        labels=labels,
        ids=np.array([f"{path.name}:row {i}" for i in np.flatnonzero(keep.to_numpy())]),
        classes=classes,
        max_value=255.0 if integral else 1.0,
        source_sha256=sha256_file(path),
        rejected=rejected,
    )


def _csv_shape(path: Path, image_shape: list[int] | None, n: int) -> tuple[int, int, int]:
    if image_shape is not None:
        if len(image_shape) != 3 or int(np.prod(image_shape)) != n:
            raise ValueError(
                f"{path}: image_shape {image_shape} (C, H, W) does not fit {n} pixel columns"
            )
        return tuple(image_shape)  # type: ignore[return-value]
    side = int(round(n**0.5))
    if n == 0 or side * side != n:
        raise ValueError(
            f"{path}: {n} pixel columns is not a square image; set ingest.image_shape [C, H, W]"
        )
    return (1, side, side)


def _csv_labels(path: Path, col: pd.Series) -> tuple[np.ndarray, list[str]]:
    values = col.to_numpy()
    if np.issubdtype(values.dtype, np.number):
        if not np.all(values == np.round(values)):
            raise ValueError(f"{path}: numeric labels must be whole numbers")
        return _encode_labels(values.astype(np.int64))
    return _encode_labels(values.astype(str))


Loader = Callable[[IngestConfig], RawData]

SOURCES: dict[str, Loader] = {
    "digits": load_digits,
    "idx": load_idx,
    "npz": load_npz,
    "imagefolder": load_imagefolder,
    "csv": load_csv,
}


def load_source(cfg: IngestConfig) -> RawData:
    """Load the source `cfg.source` names, via the `SOURCES` registry."""
    try:
        loader = SOURCES[cfg.source]
    except KeyError:
        raise ValueError(f"unknown source `{cfg.source}` (known: {sorted(SOURCES)})") from None
    return loader(cfg)
