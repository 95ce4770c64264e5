import pytest
import torch
from pydantic import TypeAdapter
from torch import nn

from components.config import ArchConfig
from components.export.onnx_utils import export_onnx
from components.modeling.architectures import (
    ARCHITECTURES,
    auto_pools,
    build_model,
    count_params,
    resolve_arch,
)
from components.modeling.checkpoint import load_checkpoint, save_checkpoint
from components.pruning.macs import count_macs
from components.pruning.surgery import apply_pruning, prunable_groups

CONFIGS = {
    "mlp": {"arch": "mlp", "hidden": [16, 8]},
    "cnn": {"arch": "cnn", "channels": [4, 8], "head": "flatten", "hidden": 12},
    "resnet": {"arch": "resnet", "width": 8, "blocks": [4, 6], "pool_after": [0]},
    "dscnn": {"arch": "dscnn", "stem": 4, "channels": [8, 8]},
}


def test_every_registry_entry_has_a_test_config():
    assert set(CONFIGS) == set(ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 12, 12)])
def test_models_map_images_to_logits(name, shape):
    cfg = TypeAdapter(ArchConfig).validate_python(CONFIGS[name])
    model = build_model(cfg, shape, num_classes=5, mean=0.5, std=0.25).eval()
    out = model(torch.rand(3, *shape))
    assert out.shape == (3, 5)
    assert torch.isfinite(out).all()
    assert count_params(model) > 0


def test_normalisation_is_part_of_the_model():
    cfg = TypeAdapter(ArchConfig).validate_python(CONFIGS["mlp"])
    model = build_model(cfg, (1, 8, 8), 3, mean=0.3, std=0.2)
    x = torch.full((1, 1, 8, 8), 0.5)
    assert torch.allclose(model.norm(x), torch.full_like(x, 1.0))
    assert {"norm.mean", "norm.std"} <= set(model.state_dict())


def build(cfg: dict, shape=(1, 8, 8), k: int = 10):
    return build_model(TypeAdapter(ArchConfig).validate_python(cfg), shape, k)


def map_side(model, shape) -> tuple[int, int]:
    """(H, W) of the feature map that reaches the head (before flatten / global pooling)."""
    seen = []
    head = model.body.pool if hasattr(model.body, "pool") else next(
        m for m in model.body.features if isinstance(m, nn.Flatten | nn.AdaptiveAvgPool2d))
    head.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].shape[-2:]))
    model.eval()(torch.zeros(1, *shape))
    return tuple(seen[0])


# the shipped params.yaml teachers and student: their 8x8 models must never change
PARAMS_ARCHS = {
    "wide_cnn": ({"arch": "cnn", "channels": [64, 128], "pools": 2, "head": "flatten",
                  "hidden": 256, "dropout": 0.3}, 208_586, 1_350_144),
    "resnet": ({"arch": "resnet", "width": 32, "blocks": [32, 32], "pool_after": [0]},
               37_802, 1_493_312),
    "mlp": ({"arch": "mlp", "hidden": [512, 256], "dropout": 0.2}, 168_714, 166_400),
    "student": ({"arch": "cnn", "channels": [8, 16, 32], "pools": 2, "head": "flatten"},
                7_234, 42_752),
}


@pytest.mark.parametrize("name", sorted(PARAMS_ARCHS))
def test_explicit_configs_build_the_same_models_at_8x8(name):
    cfg, params, macs = PARAMS_ARCHS[name]
    model = build(cfg)
    assert (count_params(model), count_macs(model, (1, 8, 8))) == (params, macs)
    if cfg["arch"] == "cnn":  # module positions that pruning surgery addresses by name
        kinds = [type(m).__name__ for m in model.body.features]
        assert kinds[: len(cfg["channels"]) + 3].count("MaxPool2d") == 2
        assert "Flatten" in kinds and "AvgPool2d" not in kinds


@pytest.mark.parametrize("cfg", [
    {"arch": "cnn", "channels": [8, 8, 8, 8], "pools": "auto", "head": "flatten"},
    {"arch": "cnn", "channels": [8, 8, 8, 8], "pools": "auto", "head": "gap"},
    {"arch": "resnet", "width": 8, "blocks": [4, 4, 4, 4], "pool_after": "auto"},
    {"arch": "dscnn", "stem": 8, "channels": [8, 8, 8, 8], "pools": "auto"},
])
@pytest.mark.parametrize(("shape", "side"), [
    ((1, 8, 8), (4, 4)), ((1, 28, 28), (3, 3)), ((1, 32, 32), (4, 4)), ((3, 64, 40), (4, 2)),
    ((1, 4, 4), (4, 4)),
])
def test_auto_pooling_stops_at_4x4(cfg, shape, side):
    assert map_side(build(cfg, shape), shape) == side


def test_auto_pools_are_capped_by_the_block_count_and_tiny_maps():
    assert auto_pools(32, 32, 2) == 2  # 8x8 left: no block to pool after
    assert auto_pools(32, 32, 9) == 3
    assert auto_pools(1, 64, 9) == 0  # a 1-pixel-high map cannot pool


def test_auto_cnn_head_does_not_grow_with_the_image():
    cfg = {"arch": "cnn", "channels": [16, 32, 32], "pools": "auto", "head": "flatten"}
    assert count_params(build(cfg, (1, 32, 32))) == count_params(build(cfg, (1, 16, 16)))
    wide = PARAMS_ARCHS["wide_cnn"][0]
    bounded = build(wide, (1, 28, 28))  # 7x7 after two pools: average-pooled to 3x3
    assert map_side(bounded, (1, 28, 28)) == (3, 3) and count_params(bounded) == 372_426
    unbounded = build({**wide, "flatten_size": None}, (1, 28, 28))  # the old head, 7x7
    assert count_params(unbounded) == 1_683_146


@pytest.mark.parametrize("cfg", [
    {"arch": "cnn", "channels": [8, 16], "pools": "auto", "head": "flatten", "hidden": 8},
    {"arch": "resnet", "width": 8, "blocks": [4, 4], "pool_after": "auto"},
    {"arch": "dscnn", "stem": 8, "channels": [8, 8], "pools": "auto"},
])
def test_resolve_arch_gives_the_same_model_as_auto(cfg):
    arch = TypeAdapter(ArchConfig).validate_python(cfg)
    explicit = resolve_arch(arch, (1, 32, 32))
    assert "auto" not in explicit.model_dump().values()
    a, b = build_model(arch, (1, 32, 32), 3), build_model(explicit, (1, 32, 32), 3)
    assert repr(a) == repr(b)
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()}


@pytest.mark.parametrize("cfg", [
    {"arch": "cnn", "channels": [4, 8], "pools": 1, "head": "flatten"},  # 28 -> 14 -> avg 4
    {"arch": "resnet", "width": 8, "blocks": [4, 4, 4], "pool_after": "auto"},
])
def test_auto_and_bounded_models_rebuild_from_a_checkpoint_and_export(tmp_path, cfg):
    arch = TypeAdapter(ArchConfig).validate_python(cfg)
    model = build_model(arch, (1, 28, 28), 3).eval()
    save_checkpoint(tmp_path / "ckpt", model, arch, (1, 28, 28), 3, {})
    loaded = load_checkpoint(tmp_path / "ckpt")
    x = torch.rand(2, 1, 28, 28)
    assert loaded.arch == arch and torch.equal(loaded.model(x), model(x))
    export_onnx(model, (1, 28, 28), tmp_path / "m.onnx")  # e.g. a 14x14 -> 4x4 pool exports


def test_pruning_surgery_handles_auto_and_bounded_heads():
    for cfg in ({"arch": "cnn", "channels": [8, 8], "pools": 1, "head": "flatten"},
                {"arch": "resnet", "width": 8, "blocks": [4, 4], "pool_after": "auto"}):
        arch = TypeAdapter(ArchConfig).validate_python(cfg)
        model = build_model(arch, (1, 32, 32), 3).eval()
        groups = prunable_groups(model, arch)
        scores = [torch.arange(g.size, dtype=torch.float32) for g in groups]
        pruned, _ = apply_pruning(model, arch, (1, 32, 32), 3, groups, scores, 0.5)
        assert count_params(pruned) < count_params(model)
        assert pruned(torch.rand(2, 1, 32, 32)).shape == (2, 3)
