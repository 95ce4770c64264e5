"""`npz`: one .npz archive with `x`, `y` and optionally `classes`."""

from __future__ import annotations

import numpy as np

from components.config import IngestConfig
from components.core.io import sha256_file
from components.sources.common import RawData, _encode_labels, _source_path


def load(cfg: IngestConfig) -> RawData:
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
