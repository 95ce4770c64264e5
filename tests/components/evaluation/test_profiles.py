"""`components.evaluation.profiles`: one measurement of one ONNX model on one device profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.evaluation import profiles
from tests.helpers_data import make_dataset, write_dataset
from tests.helpers_models import band_model, export


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    return write_dataset(make_dataset(n_per_class=10), tmp_path / "prepared")


def test_measure_pads_a_fixed_batch_graph_and_reports_a_baseline(tmp_path: Path, prepared: Path):
    fixed = export(band_model(3), tmp_path / "fixed.onnx", dynamic=False)
    m = profiles.measure(fixed, prepared / "test.npz", ["CPUExecutionProvider"], threads=1,
                         batch_size=4, warmup=0, runs=3)
    assert m["accuracy"] == 1.0 and m["batch_size"] == 1
    assert set(profiles.measure(None, prepared / "test.npz", ["CPUExecutionProvider"], 1, 4, 0,
                                3)) == {"peak_rss_mb"}
