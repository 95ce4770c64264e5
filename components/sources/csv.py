"""`csv`: a table with a label column and one column per pixel.

(Absolute imports keep the standard library's `csv` reachable from here: never run a file of
this folder as a script, which would put the folder on `sys.path`.)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from components.config import IngestConfig
from components.core.io import sha256_file
from components.sources.common import RawData, _encode_labels, _source_path

if TYPE_CHECKING:
    import pandas as pd



def load(cfg: IngestConfig) -> RawData:
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
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            OSError) as e:
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
        bad = np.flatnonzero(values != np.round(values))
        if len(bad):
            rows = ", ".join(f"row {col.index[i]} ({float(values[i]):g})" for i in bad[:5])
            raise ValueError(f"{path}: numeric labels must be whole numbers: {rows}")
        return _encode_labels(values.astype(np.int64))
    return _encode_labels(values.astype(str))
