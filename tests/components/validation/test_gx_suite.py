"""The Great Expectations suite: each kind of bad sample fails with a named cause and its ids."""

from __future__ import annotations

import numpy as np
import pytest

from components.config import ValidateConfig
from components.validation.gx_suite import run_expectations
from tests.helpers_data import make_splits


def expectation_failures(inputs, cfg: ValidateConfig | None = None) -> str:
    records = run_expectations(inputs.tables, inputs.manifest, inputs.expected, inputs.names,
                               cfg or ValidateConfig(), inputs.folder / "data_docs")
    assert all(r["engine"] == "great_expectations" for r in records)
    return inputs.failures(records)


def test_suite_passes_clean_splits_and_renders_data_docs(prepare):
    inputs = prepare(make_splits())
    assert expectation_failures(inputs) == ""
    assert (inputs.folder / "data_docs/index.html").is_file()


def test_suite_rejects_unexpected_label(prepare):
    arrays = make_splits()
    arrays["train"]["y"][4] = 7
    msg = expectation_failures(prepare(arrays))
    assert "label outside the expected set [0, 1, 2]" in msg and "train-0004 (label=7)" in msg


def test_suite_rejects_split_missing_a_class(prepare):
    arrays = make_splits()
    val = arrays["val"]
    keep = val["y"] != 2
    arrays["val"] = {k: v[keep] for k, v in val.items()}
    msg = expectation_failures(prepare(arrays))
    assert "val: class(es) missing from the split: 2 (c2)" in msg


BAD_PIXELS = {  # test sample index -> (pixel value, how the failure is worded)
    1: (1.5, "have pixel values above value_max=1"),
    2: (-0.5, "have pixel values below value_min=0"),
    4: (np.nan, "contain NaN pixels"),
    5: (np.inf, "contain infinite pixels"),
}


@pytest.fixture(scope="module")
def bad_pixels(prepare) -> str:
    """One run over a test split holding every kind of bad pixel, each in its own sample."""
    arrays = make_splits()
    for i, (value, _) in BAD_PIXELS.items():
        arrays["test"]["x"][i, 0, 1, 1] = value
    return expectation_failures(prepare(arrays))


@pytest.mark.parametrize("index", sorted(BAD_PIXELS))
def test_suite_rejects_bad_pixel_values(bad_pixels, index):
    problem = BAD_PIXELS[index][1]
    assert f"test: 1 sample(s) {problem}: test-{index:04d}" in bad_pixels


def test_suite_rejects_shape_other_than_manifest(prepare):
    msg = expectation_failures(prepare(make_splits(), shape=[1, 8, 8]))
    assert "train: 18 sample(s) have a shape other than the manifest's 1x8x8" in msg
    assert "train-0000 (shape=1x4x4)" in msg


def test_suite_rejects_split_count_that_disagrees_with_manifest(prepare):
    inputs = prepare(make_splits())
    inputs.manifest["splits"]["val"]["count"] = 10
    assert expectation_failures(inputs) == "val: 9 samples in val.npz but the manifest says 10"
