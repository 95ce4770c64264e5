"""`digits`: scikit-learn's bundled 8x8 digits, the default source (no file, no network)."""

from __future__ import annotations

import numpy as np

from components.config import IngestConfig
from components.core.io import hash_array, sha256_bytes
from components.sources.common import RawData


def load(cfg: IngestConfig) -> RawData:
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
