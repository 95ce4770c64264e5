"""`quantize`: parity gate on the export, int8/fp16/dynamic variants, accuracy-aware fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from pydantic import ValidationError
from sklearn.datasets import load_digits

from components.config import CNNConfig, QuantizeConfig, TrainingConfig
from components.core.data import Dataset, Split
from components.core.io import read_json
from components.export.onnx_utils import ParityError, check_parity, export_onnx
from components.modeling.architectures import build_model
from components.modeling.checkpoint import save_checkpoint
from components.modeling.training import fit
from components.quantize import quantize_stage

ARCH = CNNConfig(channels=[8, 16], pools=2, head="gap")


def make_dataset(n: int = 450) -> Dataset:
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


def make_checkpoint(folder: Path, data: Dataset, arch: CNNConfig = ARCH, epochs: int = 4,
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


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_dataset()


@pytest.fixture(scope="module")
def checkpoint(data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"), data)


def test_quantize_rejects_parity_failure_naming_worst_samples(data: Dataset, tmp_path: Path):
    model = build_model(ARCH, data.in_shape, 10, data.mean, data.std).eval()
    path = export_onnx(model, data.in_shape, tmp_path / "m.onnx")
    report = check_parity(model, path, data.test)
    assert report["max_abs_diff"] < 1e-5 and report["samples"] == len(data.test)

    proto = onnx.load(str(path))  # break the export: shift one class's bias in the classifier
    bias = next(i for i in proto.graph.initializer if i.name.endswith("classifier.bias"))
    value = numpy_helper.to_array(bias).copy()
    value[3] += 0.5
    bias.CopyFrom(numpy_helper.from_array(value, bias.name))
    onnx.save(proto, str(path))
    with pytest.raises(ParityError, match=r"worst samples: digit-\d+") as err:
        check_parity(model, path, data.test)
    assert err.value.report["max_abs_diff"] == pytest.approx(0.5, abs=1e-4)
    assert {sid for sid, _ in err.value.report["worst"]} <= set(data.test.ids)


def test_quantize_stage_writes_every_variant_with_metrics(data: Dataset, checkpoint: Path,
                                                          tmp_path: Path):
    cfg = QuantizeConfig(calibration_size=64, max_accuracy_drop=1.0)
    metrics = quantize_stage(cfg, checkpoint, data, tmp_path / "q", tmp_path / "m.json")
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == [
        "fp16.onnx", "fp32.onnx", "int8.onnx", "int8_dynamic.onnx", "report.json"]
    v = metrics["variants"]
    assert set(v) == {"fp32", "int8", "int8_dynamic", "fp16"}
    assert v["fp32"]["parity_max_abs_diff"] <= 1e-4 and v["fp32"]["top1_agreement"] == 1.0
    assert v["fp16"]["top1_agreement"] >= 0.95
    for m in v.values():
        assert 0.0 <= m["test_accuracy"] <= 1.0 and m["size_bytes"] > 0
    # the int8 graph really is quantized: its weights are stored as 8-bit integers
    int8 = onnx.load(str(tmp_path / "q" / "int8.onnx"))
    assert any(n.op_type == "DequantizeLinear" for n in int8.graph.node)
    assert metrics["int8_status"] == "ok" and len(metrics["attempts"]) == 1
    written = read_json(tmp_path / "m.json")["variants"]
    assert written["int8"]["test_accuracy"] == pytest.approx(v["int8"]["test_accuracy"])


def test_quantize_fallback_keeps_sensitive_nodes_in_float(data: Dataset, tmp_path: Path):
    ckpt = make_checkpoint(tmp_path / "ckpt", data, outlier=True)
    cfg = QuantizeConfig(calibration_size=64, max_accuracy_drop=0.03, per_channel=True,
                         variants=["fp32", "int8"])
    metrics = quantize_stage(cfg, ckpt, data, tmp_path / "q", tmp_path / "m.json")
    attempts = metrics["attempts"]
    # every calibration method x per-channel setting fails, then nodes go back to float
    assert [a["excluded_nodes"] for a in attempts[:6]] == [[]] * 6
    assert not any(a["within_tolerance"] for a in attempts[:6])
    assert {(a["method"], a["per_channel"]) for a in attempts[:6]} == {
        (m, pc) for m in ("minmax", "entropy", "percentile") for pc in (False, True)}
    assert metrics["int8_status"] == "ok", metrics["int8_reason"]
    assert metrics["float_nodes"] and len(metrics["float_nodes"]) <= cfg.max_float_nodes
    assert any("features.2" in n for n in metrics["float_nodes"])  # the conv fed by the outlier
    assert metrics["variants"]["int8"]["accuracy_drop_vs_fp32"] <= 0.03


def test_quantize_reports_int8_failure_and_keeps_other_variants(data: Dataset, tmp_path: Path):
    ckpt = make_checkpoint(tmp_path / "ckpt", data, outlier=True)
    cfg = QuantizeConfig(calibration_size=64, max_accuracy_drop=0.03, max_float_nodes=0,
                         variants=["fp32", "int8", "fp16"])
    metrics = quantize_stage(cfg, ckpt, data, tmp_path / "q", tmp_path / "m.json")
    assert metrics["int8_status"] == "failed"
    assert "max_accuracy_drop" in metrics["int8_reason"] and "6 attempts" in metrics["int8_reason"]
    assert len(metrics["attempts"]) == 6
    assert set(metrics["variants"]) == {"fp32", "fp16"}
    assert not (tmp_path / "q" / "int8.onnx").exists()
    assert read_json(tmp_path / "q" / "report.json")["int8_status"] == "failed"


@pytest.mark.parametrize("bad", [{"opset": 13}, {"variants": ["int4"]},
                                 {"calibration_method": "kl"}, {"unknown": 1}])
def test_quantize_config_rejects_impossible_values(bad: dict):
    with pytest.raises(ValidationError):
        QuantizeConfig(**bad)
