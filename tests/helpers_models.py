"""Builders of tiny models shared by several test files: ONNX band classifiers, briefly trained
digit CNNs, saved teachers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

from components.config import CNNConfig, TrainingConfig
from components.core.data import Dataset, Split
from components.core.io import atomic_write_bytes
from components.modeling.architectures import build_model
from components.modeling.checkpoint import save_checkpoint
from components.modeling.training import fit

DIGITS_ARCH = CNNConfig(channels=[8, 16], pools=2, head="gap")


def band_model(classes_seen: int = 3, classes: int = 3, shape=(1, 8, 8)) -> nn.Module:
    """Linear classifier for `make_blobs`: class k scores its own band (the first few only)."""
    c, h, w = shape
    model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, classes))
    band = h // classes
    weight = torch.zeros(classes, c, h, w)
    for k in range(classes_seen):
        weight[k, :, k * band : (k + 1) * band, :] = 1.0
    with torch.no_grad():
        model[1].weight.copy_(weight.reshape(classes, -1))
        model[1].bias.zero_()
    return model.eval()


def export(model: nn.Module, path: Path, dynamic: bool = True, shape=(1, 8, 8)) -> Path:
    """``model`` as ONNX at ``path``: input `image` (N, C, H, W), output `logits` (N, K).

    ``dynamic=False`` fixes the batch dimension at 1.
    """
    buf = io.BytesIO()
    batch = 2 if dynamic else 1
    torch.onnx.export(model, (torch.zeros(batch, *shape),), buf, dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}
                      if dynamic else None)
    return atomic_write_bytes(path, buf.getvalue())


def make_digits(n: int = 450) -> Dataset:
    """Digits scaled to [0, 1] (max value 16), stratified-enough random split 60/20/20."""
    d = load_digits()
    x = (d.images[:n] / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    y, ids = d.target[:n].astype(np.int64), np.array([f"digit-{i}" for i in range(n)])
    order = np.random.default_rng(0).permutation(n)
    cut = [0, int(0.6 * n), int(0.8 * n), n]
    parts = [order[a:b] for a, b in zip(cut, cut[1:], strict=False)]
    split = [Split(x[p], y[p], ids[p]) for p in parts]
    train = split[0].x
    manifest = {"classes": [str(i) for i in range(10)], "num_classes": 10, "shape": [1, 8, 8],
                "max_value": 16.0, "data_hash": "d" * 64,
                "normalization": {"mean": float(train.mean()), "std": float(train.std())}}
    return Dataset(*split, manifest=manifest)


def make_checkpoint(folder: Path, data: Dataset, arch: CNNConfig = DIGITS_ARCH, epochs: int = 4,
                    outlier: bool = False) -> Path:
    """A briefly trained CNN; ``outlier`` scales channel 0 of block 0 by 1000 (and divides the
    next conv's input weights by 1000): the same function in float, fatal for per-tensor int8."""
    torch.manual_seed(0)
    model = build_model(arch, data.in_shape, data.num_classes, data.mean, data.std)
    fit(model, data.train, data.val, TrainingConfig(epochs=epochs, lr=1e-2, device="cpu"))
    if outlier:
        with torch.no_grad():
            bn = model.body.features[0][1]
            bn.weight[0] *= 1000
            bn.bias[0] *= 1000
            model.body.features[2][0].weight[:, 0] /= 1000
    save_checkpoint(folder, model.eval(), arch, data.in_shape, data.num_classes,
                    {"data_hash": data.manifest["data_hash"]})
    return folder


def save_teacher(folder: Path, arch, in_shape=(1, 8, 8), classes=3, data_hash="abc123") -> Path:
    """An untrained (seed 0) model of ``arch`` saved as a teacher checkpoint of ``data_hash``."""
    torch.manual_seed(0)
    model = build_model(arch, in_shape, classes)
    save_checkpoint(folder, model, arch, in_shape, classes, {"data_hash": data_hash})
    return folder
