"""Checks across splits and on the manifest: class shares, leakage, rejected items, counts."""

from __future__ import annotations

import numpy as np

from components.config import ValidateConfig
from components.validation.checks import check_dataset
from tests.helpers_data import make_splits


def check_failures(inputs, cfg: ValidateConfig | None = None) -> str:
    records = check_dataset(inputs.tables, inputs.manifest, inputs.expected, inputs.names,
                            cfg or ValidateConfig())
    assert all(r["engine"] == "distillery" for r in records)
    return inputs.failures(records)


def test_checks_pass_clean_splits_and_cover_both_leakage_pairs(prepare):
    inputs = prepare(make_splits())
    records = check_dataset(inputs.tables, inputs.manifest, inputs.expected, inputs.names,
                            ValidateConfig())
    assert all(r["success"] for r in records)
    checks = {(r["check"], r["split"]) for r in records}
    assert {("no_train_test_leakage", "test"), ("no_train_val_leakage", "val"),
            ("no_rejected_source_items", None)} <= checks


def test_checks_reject_class_share_below_minimum(prepare):
    arrays = make_splits()
    train = arrays["train"]
    keep = np.ones(len(train["y"]), bool)
    keep[1:6] = False  # class 0 keeps one of six samples: 1/13 < 0.2
    arrays["train"] = {k: v[keep] for k, v in train.items()}
    msg = check_failures(prepare(arrays), ValidateConfig(min_class_share=0.2))
    assert "train: class share below min_class_share=0.2: 0 (c0) 7.7%" in msg


def test_checks_reject_train_test_leakage_naming_both_ids(prepare):
    arrays = make_splits()
    arrays["test"]["x"][4] = arrays["train"]["x"][1]
    msg = check_failures(prepare(arrays))
    assert "train/test leakage: 1 test sample(s) also in train: test test-0004 = train train-0001" \
        in msg


def test_checks_report_train_val_overlap(prepare):
    arrays = make_splits()
    arrays["val"]["x"][0] = arrays["train"]["x"][0]
    assert "train/val leakage" in check_failures(prepare(arrays))


def test_checks_reject_manifest_with_rejected_source_items(prepare):
    rejected = [{"id": "raw/7/broken.png", "reason": "cannot identify image file"}]
    msg = check_failures(prepare(make_splits(), rejected=rejected))
    assert "1 rejected (corrupt or unreadable) item(s): raw/7/broken.png" in msg


def test_checks_reject_manifest_per_class_counts_that_disagree_with_arrays(prepare):
    inputs = prepare(make_splits())
    inputs.manifest["splits"]["val"]["per_class"]["c1"] = 4
    msg = check_failures(inputs)
    assert msg == ("val: manifest per-class counts differ from the arrays for class(es) "
                   "c1 (manifest 4, arrays 3)")


def test_checks_reject_a_one_class_dataset(prepare):
    """An image folder with a single class: every model scores 100%, so it must not pass."""
    msg = check_failures(prepare(make_splits(classes=1), class_names=["class_7"]))
    assert "a classifier needs at least 2 classes: 1 declared (class_7), 1 present" in msg


def test_checks_reject_labels_outside_the_declared_classes(prepare):
    arrays = make_splits()
    arrays["test"]["y"][0] = 5  # declared: c0..c2
    inputs = prepare(arrays)
    inputs.manifest["num_classes"] = 3
    msg = check_failures(inputs)
    assert "label(s) outside the declared classes [0, 1, 2]: [5]" in msg


def test_checks_reject_class_with_too_few_samples_naming_split_class_and_count(prepare):
    arrays = make_splits()  # 6 / 3 / 3 samples of each class
    val = arrays["val"]
    keep = np.ones(len(val["y"]), bool)
    keep[4:6] = False  # class 1 keeps one of its three val samples
    arrays["val"] = {k: v[keep] for k, v in val.items()}
    cfg = ValidateConfig(min_per_class={"train": 6, "val": 2, "test": 3})
    records = check_dataset(*_args(prepare(arrays)), cfg)
    failed = [r for r in records if not r["success"]]
    assert [(r["check"], r["split"]) for r in failed] == [("class_count_at_least_min", "val")]
    assert failed[0]["message"] == ("val: class(es) with fewer than min_per_class.val=2 "
                                    "samples: 1 (c1) has 1")
    assert failed[0]["result"]["counts"] == {"c0": 3, "c1": 1, "c2": 3}


def test_default_min_per_class_passes_the_tiny_test_splits(prepare):
    records = check_dataset(*_args(prepare(make_splits())), ValidateConfig())
    assert [r for r in records if r["check"] == "class_count_at_least_min"
            and r["success"]] and all(r["success"] for r in records)


def _args(inputs) -> tuple:
    return inputs.tables, inputs.manifest, inputs.expected, inputs.names
