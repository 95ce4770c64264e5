"""Pruned widths are multiples of the runtime's channel block (`round_to`), for every arch."""

from __future__ import annotations

import numpy as np
import pytest

from components.config import CNNConfig, DSCNNConfig, MLPConfig, ResNetConfig
from components.pruning.search import prune, prune_structured
from components.pruning.surgery import max_ratio, prunable_groups, round_width
from tests.helpers_pruning import CONFIGS, SHAPE, K, make

WIDE = {
    "mlp": MLPConfig(hidden=[64, 40]),
    "cnn": CNNConfig(channels=[24, 48, 64], pools=2, head="flatten", hidden=40),
    "resnet": ResNetConfig(width=48, blocks=[32, 40], pool_after=[0]),
    "dscnn": DSCNNConfig(stem=24, channels=[32, 48], pools=1),
}
CASES = [(CONFIGS[n], 4) for n in CONFIGS] + [(CONFIGS[n], 8) for n in CONFIGS] \
    + [(WIDE[n], 16) for n in WIDE]


def test_round_width_keeps_the_nearest_block_multiple_within_the_layer():
    assert [round_width(k, 64, 16) for k in (64, 57, 56, 40, 39, 20, 3)] == \
        [64, 64, 64, 48, 32, 16, 16]
    # 24 is not a multiple of 16: it stays whole or drops to one block
    assert [round_width(k, 24, 16) for k in (23, 20, 19, 1)] == [24, 24, 16, 16]
    assert round_width(5, 16, 16) == 16 and round_width(3, 8, 16) == 8  # one block or less
    assert round_width(5, 24, None) == 5 and round_width(5, 24, 1) == 5


def _widths(model, groups) -> list[int]:
    """Each group's width in ``model``, read from its first producer's weights."""
    return [model.get_submodule(g.producers[0]).weight.shape[0] for g in groups]


def _assert_widths(before: list[int], after: list[int], block: int) -> None:
    for old, new in zip(before, after, strict=True):
        if old <= block:
            assert new == old, (old, new)
        else:
            assert new == old or (new % block == 0 and block <= new <= old), (old, new)


@pytest.mark.parametrize(("cfg", "block"), CASES, ids=lambda c: getattr(c, "arch", str(c)))
def test_every_pruned_width_is_a_multiple_of_round_to(cfg, block):
    model = make(cfg)
    groups = prunable_groups(model, cfg)
    before, changed = [g.size for g in groups], False
    for ratio in np.linspace(0.05, max_ratio(groups), 6):
        pruned, new_cfg = prune_structured(model, cfg, SHAPE, K, float(ratio), "l1",
                                           round_to=block)
        after = [g.size for g in prunable_groups(pruned, new_cfg)]
        _assert_widths(before, after, block)
        changed |= after != before
    assert changed or all(n <= block for n in before)


@pytest.mark.parametrize("name", WIDE)
def test_stepped_search_keeps_block_multiples_at_every_step(name):
    cfg = WIDE[name]
    model = make(cfg)
    tuned = []
    result = prune(model, cfg, SHAPE, K, evaluate=lambda m: np.ones(8, bool), target="macs",
                   target_ratio=0.6, steps=3, round_to=16, max_accuracy_drop=1.0,
                   finetune=lambda m, seed: tuned.append(m))
    groups = prunable_groups(model, cfg)
    for m in tuned:
        _assert_widths([g.size for g in groups], _widths(m, groups), 16)
    # the largest reduction is kept (a step that cannot go below one block repeats the last)
    assert len(tuned) == 3 and result.chosen.achieved_reduction == \
        max(r.achieved_reduction for r in result.steps) > 0.3
