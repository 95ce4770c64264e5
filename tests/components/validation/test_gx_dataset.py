"""Dataset-level checks run as GX expectations: each check has its expectations, and they agree."""

from __future__ import annotations

import numpy as np
import pytest

from components.config import ValidateConfig
from components.core.io import atomic_write_json
from components.validation import (
    check_dataset,
    check_drift,
    derive_assets,
    link_checks,
    profile_dataset,
    run_expectations,
)
from tests.helpers_data import make_splits

REJECTED = [{"id": "raw/7/broken.png", "reason": "cannot identify image file"}]


def run_checks(inputs, cfg: ValidateConfig, reference) -> list[dict]:
    """`check_dataset` and `check_drift` linked to their GX expectations, as `validate` does."""
    profile = profile_dataset(inputs.tables, inputs.train_x, inputs.names, cfg)
    checks = check_dataset(inputs.tables, inputs.manifest, inputs.expected, inputs.names, cfg)
    drift, drift_records = check_drift(profile, inputs.train_x, reference, cfg)
    derived = derive_assets(inputs.tables, inputs.manifest, inputs.expected, inputs.names, cfg,
                            drift)
    outcomes = run_expectations(inputs.tables, inputs.manifest, inputs.expected, inputs.names,
                                cfg, inputs.folder / "data_docs", derived)
    return link_checks(checks + drift_records, [o for o in outcomes if "for_check" in o])


@pytest.fixture(scope="module")
def reference(prepare, tmp_path_factory):
    inputs = prepare(make_splits())
    profile = profile_dataset(inputs.tables, inputs.train_x, inputs.names, ValidateConfig())
    return atomic_write_json(tmp_path_factory.mktemp("reference") / "profile.json", profile)


def test_every_dataset_check_runs_as_passing_gx_expectations(prepare, reference):
    records = run_checks(prepare(make_splits()), ValidateConfig(), reference)
    assert {r["check"] for r in records} >= {
        "no_train_test_leakage", "no_train_val_leakage", "class_share_at_least_min",
        "class_count_at_least_min", "no_rejected_source_items", "class_share_drift_at_most_max",
        "intensity_drift_at_most_max", "manifest_per_class_counts_match"}
    for r in records:
        assert r["great_expectations"], f"{r['check']} ({r['split']}) has no GX expectation"
        assert r["success"] and all(g["success"] for g in r["great_expectations"])
    assets = {g["asset"] for r in records for g in r["great_expectations"]}
    assert assets == {"prepared/class_counts", "prepared/leakage", "prepared/rejected_items",
                      "prepared/drift"}


@pytest.fixture(scope="module")
def faulty(prepare, reference) -> list[dict]:
    """Leakage, a rejected file, too few samples of a class, a manifest count and drift at once."""
    arrays = make_splits()
    arrays["train"]["x"] *= 0.3  # intensity drift
    arrays["test"]["x"][4] = arrays["train"]["x"][1]  # train/test leakage
    val = arrays["val"]
    keep = np.ones(len(val["y"]), bool)
    keep[4:6] = False  # val class 1 keeps one sample
    arrays["val"] = {k: v[keep] for k, v in val.items()}
    inputs = prepare(arrays, rejected=REJECTED)
    inputs.manifest["splits"]["test"]["per_class"]["c2"] = 4
    cfg = ValidateConfig(min_per_class={"train": 6, "val": 2, "test": 3}, min_class_share=0.2)
    return run_checks(inputs, cfg, reference)


@pytest.mark.parametrize(("check", "split", "expectation"), [
    ("no_train_test_leakage", "test", "expect_column_values_to_be_null"),
    ("no_rejected_source_items", None, "expect_table_row_count_to_equal"),
    ("class_count_at_least_min", "val", "expect_column_values_to_be_between"),
    ("class_share_at_least_min", "val", "expect_column_values_to_be_between"),
    ("manifest_per_class_counts_match", "test", "expect_column_pair_values_to_be_equal"),
    ("intensity_drift_at_most_max", "train", "expect_column_values_to_be_between"),
])
def test_gx_expectation_fails_with_its_check(faulty, check, split, expectation):
    (rec,) = [r for r in faulty if (r["check"], r["split"]) == (check, split)]
    assert not rec["success"]
    assert [g["expectation"] for g in rec["great_expectations"] if not g["success"]] \
        == [expectation]
    assert "Great Expectations check failed" not in rec["message"]  # the check's own words


def test_gx_expectations_pass_where_their_checks_pass(faulty):
    for r in faulty:
        if r["success"]:
            assert all(g["success"] for g in r["great_expectations"]), r["check"]


def test_link_checks_fails_a_check_whose_expectation_failed_and_names_it():
    checks = [{"check": "no_train_val_leakage", "engine": "distillery", "split": "val",
               "success": True, "result": {}}]
    outcomes = [{"check": "expect_column_values_to_be_null", "asset": "prepared/leakage",
                 "for_check": "no_train_val_leakage", "split": "val", "success": False}]
    (rec,) = link_checks(checks, outcomes)
    assert not rec["success"]
    assert rec["message"] == ("val: no_train_val_leakage passed but its Great Expectations check "
                              "failed: expect_column_values_to_be_null on prepared/leakage")


def test_link_checks_rejects_results_for_an_unknown_check():
    outcomes = [{"check": "expect_table_row_count_to_equal", "asset": "prepared/x",
                 "for_check": "no_such_check", "split": None, "success": True}]
    with pytest.raises(ValueError, match="no_such_check"):
        link_checks([], outcomes)
