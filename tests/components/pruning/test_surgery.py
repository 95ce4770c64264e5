"""`components.pruning.surgery`: channel removal keeps a valid, smaller, plain model."""

from __future__ import annotations

import pytest
import torch

from components.config import CNNConfig, DSCNNConfig, MLPConfig, ResNetConfig
from components.modeling.architectures import ARCHITECTURES, build_model, count_params
from components.modeling.checkpoint import load_checkpoint, save_checkpoint
from components.pruning.importance import IMPORTANCE
from components.pruning.macs import count_macs
from components.pruning.search import prune_structured
from components.pruning.surgery import GROUPS, prunable_groups
from tests.helpers_pruning import CONFIGS, SHAPE, K, batch, make

# every group of size 4: a 0.25 ratio removes exactly one channel from each
FOURS = {
    "mlp": MLPConfig(hidden=[4, 4]),
    "cnn_gap": CNNConfig(channels=[4, 4], pools=2, head="gap", hidden=4),
    "cnn_flatten": CNNConfig(channels=[4, 4], pools=1, head="flatten"),
    "resnet": ResNetConfig(width=4, blocks=[4, 4], pool_after=[0]),
    "dscnn": DSCNNConfig(stem=4, channels=[4, 4], pools=1),
}


def test_surgery_covers_every_registry_architecture():
    assert set(GROUPS) == set(ARCHITECTURES)
    assert {c.arch for c in CONFIGS.values()} == set(ARCHITECTURES)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("criterion", sorted(IMPORTANCE))
def test_structured_pruning_keeps_a_valid_smaller_model_of_the_same_architecture(name, criterion):
    cfg, x = CONFIGS[name], batch()
    model = make(cfg)
    pruned, new_cfg = prune_structured(model, cfg, SHAPE, K, 0.5, criterion, calibration=[x])
    assert type(pruned.body) is type(model.body) and new_cfg.arch == cfg.arch
    assert pruned(x[0]).shape == (6, K)
    assert count_params(pruned) < count_params(model)
    assert count_macs(pruned, SHAPE) < count_macs(model, SHAPE)
    for g_old, g_new in zip(prunable_groups(model, cfg), prunable_groups(pruned, new_cfg),
                            strict=True):
        assert g_new.size == g_old.size - int(0.5 * g_old.size + 0.5)
    # the result is a plain model: rebuilt from its config alone, it accepts the same weights
    build_model(new_cfg, SHAPE, K).load_state_dict(pruned.state_dict())


@pytest.mark.parametrize("name", CONFIGS)
def test_ratio_zero_gives_identical_outputs(name):
    model, x = make(CONFIGS[name]), batch()[0]
    pruned, new_cfg = prune_structured(model, CONFIGS[name], SHAPE, K, 0.0, "l1")
    assert new_cfg == CONFIGS[name]
    assert torch.equal(pruned(x), model(x))


def _kill_one_channel(model, group, c: int) -> None:
    """Make channel ``c`` of ``group`` output exactly zero everywhere it is produced."""
    for name in group.norms + group.followers:
        m = model.get_submodule(name)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.weight.data[c] = 0.0
            m.bias.data[c] = 0.0
    if not group.norms:  # a Linear with no BatchNorm: zero its row and bias
        m = model.get_submodule(group.producers[0])
        m.weight.data[c] = 0.0
        m.bias.data[c] = 0.0


@pytest.mark.parametrize("name", FOURS)
def test_removing_dead_channels_leaves_outputs_unchanged(name):
    # checks every dependency: BN slices, next-layer inputs, flatten h*w blocks, depthwise,
    # and ResNet's shared residual stream
    cfg, x = FOURS[name], batch()[0]
    model = make(cfg)
    for i, group in enumerate(prunable_groups(model, cfg)):
        _kill_one_channel(model, group, i % 4)
    pruned, new_cfg = prune_structured(model, cfg, SHAPE, K, 0.25, "bn_scale")
    assert all(g.size == 3 for g in prunable_groups(pruned, new_cfg))
    torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=1e-5)


def test_pruned_checkpoint_reloads_weights_only_with_identical_outputs(tmp_path):
    cfg, x = CONFIGS["resnet"], batch()[0]
    pruned, new_cfg = prune_structured(make(cfg), cfg, SHAPE, K, 0.5, "l2")
    save_checkpoint(tmp_path, pruned, new_cfg, SHAPE, K, {"parent": {"sha256": "x"}})
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["arch"] == new_cfg.model_dump()
    reloaded = load_checkpoint(tmp_path)
    assert reloaded.arch == new_cfg
    assert torch.equal(reloaded.model(x), pruned(x))


def test_ratio_that_would_empty_a_layer_is_refused_naming_it():
    cfg = MLPConfig(hidden=[16, 8])
    with pytest.raises(ValueError, match=r"all 8 channels of `hidden\[1\]`"):
        prune_structured(make(cfg), cfg, SHAPE, K, 0.95, "l1")
