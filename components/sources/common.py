"""What every source loader returns (`RawData`) and the helpers the loaders share.

Kept apart from the package's `__init__` so that the format modules can import it while
`__init__` imports them to build the registry, without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.config import IngestConfig
from components.core.io import sha256_bytes, sha256_file


@dataclass
class RawData:
    # (N, C, H, W) raw source values, unscaled, NaN/inf kept; or an (N,) object array of
    # (C, H, W) when sizes differ (only with ingest.resize)
    images: np.ndarray
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
