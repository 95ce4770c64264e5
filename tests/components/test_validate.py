"""`validate`: a clean prepared dataset passes and is reported; failures raise after the report.

Each kind of bad data and its worded cause is tested beside the check that finds it, in
`tests/components/validation/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.config import ValidateConfig
from components.core.io import read_json
from components.validate import DataValidationError, ValidationReport, accept_profile, validate
from tests.helpers_data import Arrays, make_splits, write_prepared

CLASSES = ["c0", "c1", "c2"]  # make_splits' default three classes
METRIC_KEYS = {"success", "evaluated_expectations", "failed_expectations", "samples", "drift"}


def run(root: Path, arrays: Arrays, cfg: ValidateConfig | None = None,
        **manifest: object) -> ValidationReport:
    manifest.setdefault("class_names", CLASSES)
    write_prepared(root / "prepared", arrays, **manifest)  # type: ignore[arg-type]
    cfg = cfg or ValidateConfig(reference_profile=str(root / "no-reference.json"))
    return validate(cfg, root / "prepared", root / "report", root / "metrics.json")


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ValidationReport]:
    root = tmp_path_factory.mktemp("clean")
    return root, run(root, make_splits())


def test_validate_passes_clean_dataset_and_writes_reports(clean):
    root, report = clean
    assert report.success and report.failed_expectations == 0 and not report.failures
    assert (root / "report/data_docs/index.html").is_file()
    assert list((root / "report/data_docs/validations").rglob("*.html"))
    metrics = read_json(root / "metrics.json")
    assert set(metrics) == METRIC_KEYS
    assert metrics["success"] is True
    assert metrics["samples"] == {"train": 18, "val": 9, "test": 9}
    assert metrics["evaluated_expectations"] == report.evaluated_expectations > 30
    profile = read_json(root / "report/profile.json")
    assert profile["class_share"]["train"] == pytest.approx({"c0": 1 / 3, "c1": 1 / 3, "c2": 1 / 3})
    assert sum(profile["intensity_histogram"]["p"]) == pytest.approx(1.0)


def test_validate_result_lists_every_expectation_with_outcome(clean):
    root, report = clean
    result = read_json(root / "report/result.json")
    assert len(result["expectations"]) == report.evaluated_expectations
    assert all(r["success"] is True for r in result["expectations"])
    kinds = {(r["engine"], r["check"]) for r in result["expectations"]}
    assert ("great_expectations", "expect_column_values_to_be_in_set") in kinds
    assert ("great_expectations", "expect_column_distinct_values_to_contain_set") in kinds
    assert ("distillery", "no_train_test_leakage") in kinds


def test_validate_skips_drift_without_reference_profile(clean):
    root, report = clean
    assert report.drift == {"status": f"skipped: no reference profile at {root}/no-reference.json"}


def test_validate_rejects_manifest_counts_that_disagree_with_arrays(tmp_path):
    write_prepared(tmp_path / "prepared", make_splits(), class_names=CLASSES)
    manifest = read_json(tmp_path / "prepared/manifest.json")
    manifest["splits"]["val"]["count"] = 10
    manifest["splits"]["val"]["per_class"]["c1"] = 4
    (tmp_path / "prepared/manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataValidationError) as e:
        validate(ValidateConfig(reference_profile=str(tmp_path / "none.json")),
                 tmp_path / "prepared", tmp_path / "report", tmp_path / "metrics.json")
    assert "val: 9 samples in val.npz but the manifest says 10" in str(e.value)
    assert "c1 (manifest 4, arrays 3)" in str(e.value)
    metrics = read_json(tmp_path / "metrics.json")  # the report is written even on failure
    assert metrics["success"] is False and metrics["failed_expectations"] == 2


def test_validate_passes_drift_check_against_accepted_profile(clean, tmp_path):
    root, _ = clean
    reference = accept_profile(root / "report", tmp_path / "reference/profile.json")
    assert reference.read_bytes() == (root / "report/profile.json").read_bytes()
    cfg = ValidateConfig(reference_profile=str(reference))
    report = validate(cfg, root / "prepared", tmp_path / "report", tmp_path / "metrics.json")
    assert report.success
    assert report.drift["status"] == "checked"
    assert report.drift["class_share"] == 0 and report.drift["intensity"] == 0


def test_validate_gate_is_independent_of_the_drift_reference(clean, tmp_path):
    """Accepting a new reference changes the drift metrics, never the gate training reads."""
    root, _ = clean
    gate = root / "report/gate.json"
    splits = read_json(root / "prepared/manifest.json")["splits"]
    assert read_json(gate) == {"passed": True, "data_hash": "1" * 64,
                               "splits": {s: splits[s]["sha256"] for s in splits}}
    reference = accept_profile(root / "report", tmp_path / "reference/profile.json")
    cfg = ValidateConfig(reference_profile=str(reference))
    validate(cfg, root / "prepared", tmp_path / "report", tmp_path / "metrics.json")
    assert read_json(tmp_path / "metrics.json") != read_json(root / "metrics.json")  # drift
    assert (tmp_path / "report/gate.json").read_bytes() == gate.read_bytes()


def test_validate_writes_no_gate_when_a_check_fails(tmp_path):
    arrays = make_splits()
    arrays["train"]["x"][0, 0, 0, 0] = float("nan")
    with pytest.raises(DataValidationError, match="train-0000"):
        run(tmp_path, arrays)
    assert (tmp_path / "report/result.json").is_file()
    assert not (tmp_path / "report/gate.json").exists()
