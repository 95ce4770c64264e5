"""Tiny classifiers of every registry architecture, for the tests of pruning and its stage."""

from __future__ import annotations

import pytest
import torch

from components.config import CNNConfig, DSCNNConfig, MLPConfig, ResNetConfig
from components.modeling.architectures import build_model

SHAPE = (1, 8, 8)
K = 3
CONFIGS = {
    "mlp": MLPConfig(hidden=[16, 12]),
    "cnn_gap": CNNConfig(channels=[8, 12], pools=2, head="gap", hidden=8),
    "cnn_flatten": CNNConfig(channels=[8, 12], pools=1, head="flatten"),
    "resnet": ResNetConfig(width=12, blocks=[8, 8], pool_after=[0]),
    "dscnn": DSCNNConfig(stem=8, channels=[12, 16], pools=1),
}


def make(cfg, seed: int = 0):
    """``cfg``'s model in eval mode, with non-trivial BatchNorm statistics and affine weights."""
    torch.manual_seed(seed)
    model = build_model(cfg, SHAPE, K, mean=0.5, std=0.25)
    for m in model.modules():  # non-trivial BatchNorm statistics, so slicing them matters
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def batch(n: int = 6, seed: int = 1):
    """``n`` random images of `SHAPE` and labels below `K`: (x, y)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g), torch.randint(0, K, (n,), generator=g)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Import into a test module (or conftest) to run its tests on one torch thread."""
    # tiny tensors on a shared 2-core box: thread hand-offs cost more than the maths
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
