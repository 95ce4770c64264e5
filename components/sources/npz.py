"""`npz`: one .npz archive with `x`, `y` and optionally `classes`."""

from __future__ import annotations

import numpy as np

from components.config import IngestConfig
from components.core.io import read_npz, sha256_file
from components.sources.common import RawData, _encode_labels, _source_path


def load(cfg: IngestConfig) -> RawData:
    """An .npz with `x` (N, H, W) or (N, C, H, W), `y` (N,) and optionally `classes` (K,).

    With `classes`, `y` holds indices into it; without, `y`'s distinct values (ints or
    strings) become the classes, sorted. Default max_value: 1.0 for float `x`, 255 otherwise.
    """
    path = _source_path(cfg)
    z = read_npz(path)  # ValueError naming `path`: not a zip, damaged, pickled arrays
    for key in ("x", "y"):
        if key not in z:
            raise ValueError(f"{path}: missing array `{key}` (found {sorted(z)})")
    x, y = z["x"], z["y"]
    names = [str(c) for c in z["classes"]] if "classes" in z else None
    if x.ndim == 3:
        x = x[:, None, :, :]  # (N, H, W) -> (N, 1, H, W)
    elif x.ndim != 4:
        raise ValueError(f"{path}: `x` must be (N, H, W) or (N, C, H, W), got {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{path}: `y` must be ({len(x)},) to match `x`, got {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():  # 0.3 and 0.7 would both become class "0"
            bad = np.flatnonzero(~whole)
            raise ValueError(f"{path}: `y` holds {len(bad)} non-integer label(s), e.g. sample(s) "
                             + ", ".join(f"{path.name}:{i} (y={float(y[i]):g})" for i in bad[:5]))
        y = y.astype(np.int64)
    if names is None:
        labels, names = _encode_labels(y)
    else:
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: `y` must hold integer indices into `classes`, "
                             f"got dtype {y.dtype}")
        labels = y.astype(np.int64)
        out = np.flatnonzero((labels < 0) | (labels >= len(names)))
        if len(out):
            raise ValueError(f"{path}: `y` values must lie in 0..{len(names) - 1} (`classes`); "
                             + ", ".join(f"{path.name}:{i} has {labels[i]}" for i in out[:5]))
    return RawData(
        images=x,
        labels=labels,
        ids=np.array([f"{path.name}:{i}" for i in range(len(x))]),
        classes=names,
        max_value=1.0 if np.issubdtype(x.dtype, np.floating) else 255.0,
        source_sha256=sha256_file(path),
    )
