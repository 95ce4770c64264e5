import pytest
import torch
from pydantic import TypeAdapter

from components.config import ArchConfig
from components.modeling.architectures import ARCHITECTURES, build_model, count_params

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
