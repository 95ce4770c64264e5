"""`csv` source (module `csv`): pixel-column tables with good, empty and bad cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.config import IngestConfig
from components.sources import load_source


def cfg(path: Path, **kw) -> IngestConfig:
    return IngestConfig(source="csv", path=str(path), **kw)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def test_csv_reads_string_labels_keeps_nan_and_rejects_non_numeric_rows(tmp_path):
    path = write_csv(tmp_path / "data.csv", """
label,p0,p1,p2,p3
zebra,0,255,3,4
ant,1,2,,4
zebra,1,abc,3,4
ant,9,8,7,6
""")
    raw = load_source(cfg(path))
    assert raw.classes == ["ant", "zebra"] and raw.labels.tolist() == [1, 0, 0]
    assert raw.images.shape == (3, 1, 2, 2) and raw.max_value == 255
    assert np.isnan(raw.images[1, 0, 1, 0])  # empty cell stays NaN for `validate`
    assert raw.ids.tolist() == ["data.csv:row 0", "data.csv:row 1", "data.csv:row 3"]
    assert raw.rejected == [
        {"id": "data.csv:row 2", "reason": "non-numeric pixel in column `p1`: 'abc'"}
    ]


def test_csv_uses_configured_image_shape_and_float_default_max(tmp_path):
    path = write_csv(tmp_path / "data.csv", """
p0,p1,p2,p3,p4,p5,digit
0.1,0.2,0.3,0.4,0.5,0.6,3
0.6,0.5,0.4,0.3,0.2,0.1,7
""")
    raw = load_source(cfg(path, label_column="digit", image_shape=[1, 2, 3]))
    assert raw.images.shape == (2, 1, 2, 3) and raw.max_value == 1.0
    assert raw.classes == ["3", "7"] and raw.labels.tolist() == [0, 1]
    assert raw.images[0, 0, 1, 2] == pytest.approx(0.6)


def test_csv_non_square_without_image_shape_is_an_error(tmp_path):
    path = write_csv(tmp_path / "data.csv", "label,a,b,c\n0,1,2,3\n")
    with pytest.raises(ValueError, match=r"data\.csv: 3 pixel columns is not a square"):
        load_source(cfg(path))


def test_csv_missing_label_column_names_file_and_column(tmp_path):
    path = write_csv(tmp_path / "data.csv", "target,a,b,c,d\n0,1,2,3,4\n")
    with pytest.raises(ValueError, match=r"data\.csv: label column `label` not found"):
        load_source(cfg(path))


def test_csv_fractional_labels_name_their_rows(tmp_path):
    path = write_csv(tmp_path / "data.csv", """
label,p0,p1,p2,p3
1,0,0,0,0
1.5,0,0,0,0
2,0,0,0,0
""")
    with pytest.raises(ValueError, match=r"data\.csv: numeric labels must be whole numbers: "
                                         r"row 1 \(1\.5\)"):
        load_source(cfg(path))
