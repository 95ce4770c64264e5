"""`components.pruning.criteria`: each importance criterion removes the channel it should."""

from __future__ import annotations

import pytest
import torch

from components.config import CNNConfig, ResNetConfig
from components.pruning.search import prune_structured
from tests.helpers_pruning import SHAPE, K, batch, make

CONV0 = "body.features.0.0"


def _kept_channels(model, pruned, conv: str) -> list[int]:
    """Which original output channels of ``conv`` survive in ``pruned`` (matched by weights)."""
    old, new = model.get_submodule(conv).weight, pruned.get_submodule(conv).weight
    return [next(i for i in range(len(old)) if torch.equal(old[i], w)) for w in new]


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_magnitude_criteria_remove_a_zeroed_filter_first(criterion):
    cfg = CNNConfig(channels=[4, 4], pools=2)
    model = make(cfg)
    model.get_submodule(CONV0).weight.data[2] = 0.0
    model.get_submodule(CONV0).weight.data[1] *= 0.01
    pruned, _ = prune_structured(model, cfg, SHAPE, K, 0.25, criterion)
    assert _kept_channels(model, pruned, CONV0) == [0, 1, 3]
    pruned, _ = prune_structured(model, cfg, SHAPE, K, 0.5, criterion)
    assert _kept_channels(model, pruned, CONV0) == [0, 3]


def test_bn_scale_removes_the_channel_with_the_smallest_gamma():
    cfg = CNNConfig(channels=[4, 4], pools=2)
    model = make(cfg)
    model.get_submodule(CONV0).weight.data[1] *= 100  # l1 would keep it; bn_scale must not
    model.get_submodule("body.features.0.1").weight.data[1] = 1e-4
    pruned, _ = prune_structured(model, cfg, SHAPE, K, 0.25, "bn_scale")
    assert _kept_channels(model, pruned, CONV0) == [0, 2, 3]


def test_taylor_removes_a_channel_with_no_effect_on_the_loss():
    cfg = CNNConfig(channels=[4, 4], pools=2)
    model = make(cfg)
    model.get_submodule(CONV0).weight.data[3] *= 100  # large filter, but its output is zeroed
    model.get_submodule("body.features.0.1").weight.data[3] = 0.0
    model.get_submodule("body.features.0.1").bias.data[3] = 0.0
    pruned, _ = prune_structured(model, cfg, SHAPE, K, 0.25, "taylor", calibration=[batch()])
    assert _kept_channels(model, pruned, CONV0) == [0, 1, 2]
    with pytest.raises(ValueError, match="taylor.*calibration"):
        prune_structured(model, cfg, SHAPE, K, 0.25, "taylor")


def test_resnet_residual_stream_is_pruned_as_one_group_by_summed_importance():
    cfg = ResNetConfig(width=4, blocks=[4, 4], pool_after=[])
    model = make(cfg)
    for conv in ("body.stem.0", "body.blocks.0.conv2", "body.blocks.1.conv2"):
        model.get_submodule(conv).weight.data[1] *= 0.01  # small in every writer of channel 1
    model.get_submodule("body.stem.0").weight.data[2] *= 0.5  # small in one writer only
    pruned, new_cfg = prune_structured(model, cfg, SHAPE, K, 0.25, "l1")
    assert new_cfg.width == 3 and new_cfg.blocks == [3, 3]
    assert _kept_channels(model, pruned, "body.stem.0") == [0, 2, 3]
    kept_in = pruned.get_submodule("body.classifier").weight
    assert torch.equal(kept_in, model.get_submodule("body.classifier").weight[:, [0, 2, 3]])
