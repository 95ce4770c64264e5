"""`components.core.data`: loading names a broken split; the stratified sample keeps shares."""

from __future__ import annotations

import numpy as np
import pytest

from components.core.data import Split, load_prepared, stratified_sample
from tests.helpers_data import make_splits, write_prepared


def _split(counts: list[int]) -> Split:
    """Class k repeated counts[k] times, shuffled; x[i] holds i so samples can be traced."""
    y = np.random.default_rng(0).permutation(np.repeat(np.arange(len(counts)), counts))
    x = np.arange(len(y), dtype=np.float32).reshape(-1, 1, 1, 1)
    return Split(x=x, y=y.astype(np.int64), ids=np.array([f"s{i}" for i in range(len(y))]))


def test_stratified_sample_keeps_class_shares():
    split = _split([60, 30, 10])
    sample = stratified_sample(split, 20)
    assert np.bincount(sample.y).tolist() == [12, 6, 2]
    # rows stay together and in their original order
    idx = sample.x.reshape(-1).astype(int)
    assert (np.diff(idx) > 0).all()
    assert (split.y[idx] == sample.y).all() and (split.ids[idx] == sample.ids).all()


def test_stratified_sample_keeps_at_least_one_of_every_class():
    sample = stratified_sample(_split([97, 2, 1]), 10)
    assert set(sample.y.tolist()) == {0, 1, 2}
    assert np.bincount(sample.y).min() >= 1


def test_stratified_sample_is_seeded_and_returns_small_splits_whole():
    split = _split([40, 20])
    assert np.array_equal(stratified_sample(split, 15, seed=3).ids,
                          stratified_sample(split, 15, seed=3).ids)
    assert not np.array_equal(stratified_sample(split, 15, seed=3).ids,
                              stratified_sample(split, 15, seed=4).ids)
    assert stratified_sample(split, len(split)) is split


def test_prepared_split_that_is_not_a_zip_names_its_path(tmp_path):
    folder = write_prepared(tmp_path / "prepared", make_splits())
    (folder / "val.npz").write_bytes(b"<html>404 from the artifact store</html>")
    with pytest.raises(ValueError, match=f"^{folder / 'val.npz'}: not an .npz"):
        load_prepared(folder)


def test_prepared_split_missing_an_array_names_path_and_array(tmp_path):
    folder = write_prepared(tmp_path / "prepared", make_splits())
    np.savez(folder / "test.npz", x=np.zeros((3, 1, 4, 4), np.float32), y=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"test\.npz: missing arrays \['ids'\]"):
        load_prepared(folder)
