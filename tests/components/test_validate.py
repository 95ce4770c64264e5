"""`validate`: a clean prepared dataset passes; each kind of bad data fails with a named cause."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from components.config import ValidateConfig
from components.io import read_json
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


def failure(root: Path, arrays: Arrays, cfg: ValidateConfig | None = None,
            **manifest: object) -> str:
    with pytest.raises(DataValidationError) as e:
        run(root, arrays, cfg, **manifest)
    return str(e.value)


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


def test_validate_rejects_unexpected_label(tmp_path):
    arrays = make_splits()
    arrays["train"]["y"][4] = 7
    msg = failure(tmp_path, arrays)
    assert "label outside the expected set [0, 1, 2]" in msg and "train-0004 (label=7)" in msg


def test_validate_rejects_split_missing_a_class(tmp_path):
    arrays = make_splits()
    val = arrays["val"]
    keep = val["y"] != 2
    arrays["val"] = {k: v[keep] for k, v in val.items()}
    msg = failure(tmp_path, arrays)
    assert "val: class(es) missing from the split: 2 (c2)" in msg


def test_validate_rejects_class_share_below_minimum(tmp_path):
    arrays = make_splits()
    train = arrays["train"]
    keep = np.ones(len(train["y"]), bool)
    keep[1:6] = False  # class 0 keeps one of six samples: 1/13 < 0.2
    arrays["train"] = {k: v[keep] for k, v in train.items()}
    msg = failure(tmp_path, arrays, ValidateConfig(
        min_class_share=0.2, reference_profile=str(tmp_path / "none.json")))
    assert "train: class share below min_class_share=0.2: 0 (c0) 7.7%" in msg


BAD_PIXELS = {  # test sample index -> (pixel value, how the failure is worded)
    1: (1.5, "have pixel values above value_max=1"),
    2: (-0.5, "have pixel values below value_min=0"),
    4: (np.nan, "contain NaN pixels"),
    5: (np.inf, "contain infinite pixels"),
}


@pytest.fixture(scope="module")
def bad_pixels(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One run over a test split holding every kind of bad pixel, each in its own sample."""
    arrays = make_splits()
    for i, (value, _) in BAD_PIXELS.items():
        arrays["test"]["x"][i, 0, 1, 1] = value
    return failure(tmp_path_factory.mktemp("bad_pixels"), arrays)


@pytest.mark.parametrize("index", sorted(BAD_PIXELS))
def test_validate_rejects_bad_pixel_values(bad_pixels, index):
    problem = BAD_PIXELS[index][1]
    assert f"test: 1 sample(s) {problem}: test-{index:04d}" in bad_pixels


def test_validate_rejects_train_test_leakage_naming_both_ids(tmp_path):
    arrays = make_splits()
    arrays["test"]["x"][4] = arrays["train"]["x"][1]
    msg = failure(tmp_path, arrays)
    assert "train/test leakage: 1 test sample(s) also in train: test test-0004 = train train-0001" \
        in msg


def test_validate_reports_train_val_overlap(tmp_path):
    arrays = make_splits()
    arrays["val"]["x"][0] = arrays["train"]["x"][0]
    assert "train/val leakage" in failure(tmp_path, arrays)


def test_validate_rejects_manifest_with_rejected_source_items(tmp_path):
    rejected = [{"id": "raw/7/broken.png", "reason": "cannot identify image file"}]
    msg = failure(tmp_path, make_splits(), rejected=rejected)
    assert "1 rejected (corrupt or unreadable) item(s): raw/7/broken.png" in msg


def test_validate_rejects_shape_other_than_manifest(tmp_path):
    msg = failure(tmp_path, make_splits(), shape=[1, 8, 8])
    assert "train: 18 sample(s) have a shape other than the manifest's 1x8x8" in msg
    assert "train-0000 (shape=1x4x4)" in msg


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


def test_validate_rejects_heavily_shifted_dataset(clean, tmp_path):
    root, _ = clean
    reference = accept_profile(root / "report", tmp_path / "reference.json")
    arrays = make_splits(per_class={"train": 6, "val": 3, "test": 3}, seed=1)
    train = arrays["train"]
    train["x"] *= 0.3  # darker images: the intensity histogram moves to the low bins
    train["y"][6:9] = 0  # class shares 1/2, 1/6, 1/3 against 1/3 each
    msg = failure(tmp_path, arrays, ValidateConfig(reference_profile=str(reference)))
    assert "train: intensity drift" in msg and "exceeds max_drift=0.1" in msg
    assert "train: class-share drift 0.167 exceeds" in msg
