"""`components.evaluation.profiles`: one measurement of one ONNX model on one device profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.core.io import atomic_write_json
from components.evaluation import profiles
from components.evaluation.selection import unpack_correct
from components.export.preprocessing import add_preprocessing, input_contract
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


def test_measure_times_rounds_and_records_per_sample_correctness(tmp_path: Path,
                                                                  prepared: Path):
    weak = export(band_model(2), tmp_path / "weak.onnx")  # misses class 2
    m = profiles.measure(weak, prepared / "test.npz", ["CPUExecutionProvider"], 1, 1, 2, 12,
                         val=prepared / "val.npz", rounds=3)
    assert m["rounds"] == 3 and len(m["latency_rounds_p50_ms"]) == 3
    assert m["latency_ms_p50"] == float(np.median(m["latency_rounds_p50_ms"]))
    assert m["latency_spread_ms"] == pytest.approx(max(m["latency_rounds_p50_ms"])
                                                   - min(m["latency_rounds_p50_ms"]))
    with np.load(prepared / "val.npz") as z:
        y = z["y"]
    correct = unpack_correct(m["val_correct"])
    assert correct.tolist() == (np.array(m["val_predictions"]) == y).tolist()
    assert correct.tolist() == (y != 2).tolist() and m["val_accuracy"] == correct.mean()
    # the same samples give the same digest (a paired comparison is allowed), others do not
    assert m["val_correct"]["samples"] != m["test_correct"]["samples"]
    again = profiles.measure(weak, prepared / "test.npz", ["CPUExecutionProvider"], 1, 1, 0, 1,
                             val=prepared / "val.npz", rounds=1)
    assert again["val_correct"] == m["val_correct"]


def test_measure_applies_the_bundles_runtime_options(tmp_path: Path, prepared: Path):
    model = export(band_model(3), tmp_path / "m.onnx")
    options = {"graph_optimization_level": "basic", "intra_op_num_threads": 1,
               "allow_spinning": False, "future_knob": 3}
    m = profiles.measure(model, prepared / "test.npz", ["CPUExecutionProvider"], 0, 1, 0, 2,
                         options=options, rounds=2)
    assert m["session_options"] == {"graph_optimization_level": "basic",
                                    "intra_op_num_threads": 1, "allow_spinning": False}
    assert m["ignored_options"] == ["future_knob"]
    with pytest.raises(ValueError, match="graph_optimization_level"):
        profiles.make_session(model, ["CPUExecutionProvider"], 1,
                              {"graph_optimization_level": "max"})


def test_measure_feeds_a_bundle_the_8_bit_pixels_it_ships_with(tmp_path: Path, prepared: Path):
    model = export(band_model(3), tmp_path / "float.onnx")
    bundle = tmp_path / "bundle"
    shipped = add_preprocessing(model, bundle / "model.onnx", (1, 8, 8), 1 / 255)
    with pytest.raises(FileNotFoundError, match=r"model\.onnx: takes uint8 pixels but .*"
                                                r"metadata\.json"):
        profiles.measure(shipped, prepared / "test.npz", ["CPUExecutionProvider"], 1, 4, 0, 2)
    manifest = {"source": {"kind": "npz"}, "max_value": 1.0, "shape": [1, 8, 8]}
    atomic_write_json(bundle / "metadata.json", {"input": input_contract(manifest)})
    m = profiles.measure(shipped, prepared / "test.npz", ["CPUExecutionProvider"], 1, 4, 0, 2,
                         val=prepared / "val.npz", rounds=1)
    float_m = profiles.measure(model, prepared / "test.npz", ["CPUExecutionProvider"], 1, 4, 0,
                               2, val=prepared / "val.npz", rounds=1)
    assert m["input_dtype"] == "uint8" and float_m["input_dtype"] == "float32"
    assert m["accuracy"] == float_m["accuracy"] == 1.0
    assert m["val_predictions"] == float_m["val_predictions"]


def test_a_round_splits_the_timed_calls_and_warms_up_fully_only_first():
    assert profiles.runs_per_round(200, 3) == 67 and profiles.runs_per_round(2, 3) == 1
    assert [profiles.warmup_of_round(20, r, 3) for r in range(3)] == [20, 6, 6]
    assert profiles.warmup_of_round(0, 1, 3) == 0
