"""Drift against an accepted reference profile: class shares and the pixel histogram."""

from __future__ import annotations

import pytest

from components.config import ValidateConfig
from components.core.io import atomic_write_json
from components.validation.drift import check_drift, profile_dataset
from tests.helpers_data import make_splits


@pytest.fixture(scope="module")
def reference(prepare, tmp_path_factory):
    """The profile of the clean default splits, written where `accept_profile` would put it."""
    inputs = prepare(make_splits())
    profile = profile_dataset(inputs.tables, inputs.train_x, inputs.names, ValidateConfig())
    return atomic_write_json(tmp_path_factory.mktemp("reference") / "profile.json", profile)


def drift_of(inputs, reference, cfg: ValidateConfig | None = None):
    cfg = cfg or ValidateConfig()
    profile = profile_dataset(inputs.tables, inputs.train_x, inputs.names, cfg)
    return check_drift(profile, inputs.train_x, reference, cfg)


def test_profile_holds_class_shares_and_a_normalised_histogram(prepare):
    inputs = prepare(make_splits())
    profile = profile_dataset(inputs.tables, inputs.train_x, inputs.names, ValidateConfig())
    assert profile["class_share"]["train"] == pytest.approx({"c0": 1 / 3, "c1": 1 / 3, "c2": 1 / 3})
    assert profile["samples"] == {"train": 18, "val": 9, "test": 9}
    assert sum(profile["intensity_histogram"]["p"]) == pytest.approx(1.0)


def test_drift_is_skipped_without_reference_profile(prepare, tmp_path):
    drift, records = drift_of(prepare(make_splits()), tmp_path / "none.json")
    assert drift == {"status": f"skipped: no reference profile at {tmp_path}/none.json"}
    assert records == []


def test_drift_passes_the_dataset_the_reference_was_taken_from(prepare, reference):
    drift, records = drift_of(prepare(make_splits()), reference)
    assert drift["status"] == "checked" and drift["class_share"] == 0 and drift["intensity"] == 0
    assert len(records) == 2 and all(r["success"] for r in records)


def test_drift_rejects_heavily_shifted_dataset(prepare, reference):
    arrays = make_splits(per_class={"train": 6, "val": 3, "test": 3}, seed=1)
    train = arrays["train"]
    train["x"] *= 0.3  # darker images: the intensity histogram moves to the low bins
    train["y"][6:9] = 0  # class shares 1/2, 1/6, 1/3 against 1/3 each
    inputs = prepare(arrays)
    _, records = drift_of(inputs, reference)
    msg = inputs.failures(records)
    assert "train: intensity drift" in msg and "exceeds max_drift=0.1" in msg
    assert "train: class-share drift 0.167 exceeds" in msg


def test_drift_refuses_a_reference_that_is_not_a_profile(prepare, tmp_path):
    bad = atomic_write_json(tmp_path / "profile.json", {"success": True})
    with pytest.raises(ValueError, match="not a dataset profile"):
        drift_of(prepare(make_splits()), bad)
