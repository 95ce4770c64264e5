"""`components.core.data`: the stratified sample keeps class shares and every class."""

from __future__ import annotations

import numpy as np

from components.core.data import Split, stratified_sample


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
