"""Ordinary 8-bit PNGs of dataset images get the model's test accuracy on every serving path.

A tiny CNN trained on a few hundred digits goes through the real `quantize` and `convert`; its
test images are saved as 0..255 greyscale PNGs at native size (8x8) and upscaled (64x64), then
labelled by `predict_bundle` (what `distillery predict` runs), by the bundle's standalone
`predict.py` in a subprocess and by `mlflow models serve` on the bundle's ONNX.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.config import ConvertConfig, QuantizeConfig
from components.convert import convert_stage, predict_bundle
from components.core.data import Dataset
from components.export import bundle_predict
from components.export.onnx_utils import torch_outputs
from components.modeling.checkpoint import load_checkpoint
from components.quantize import quantize_stage
from tests.helpers_models import make_checkpoint, make_digits

SIZES = {"native": 8, "upscaled": 64}


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_digits(600)


@pytest.fixture(scope="module")
def shipped(data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("png_paths")
    student = make_checkpoint(root / "student", data, epochs=12)
    quantize_stage(QuantizeConfig(calibration_size=64, variants=["fp32"]), student, data,
                   root / "quantized", root / "quantize.json")
    convert_stage(ConvertConfig(include_teachers=False), root / "quantized", {}, data,
                  root / "bundles", root / "convert.json")
    scores = torch_outputs(load_checkpoint(student).model, data.test.x)
    pngs = {}
    for kind, side in SIZES.items():
        folder = root / kind
        folder.mkdir()
        pngs[kind] = []
        for i, x in enumerate(data.test.x[:, 0]):  # (H, W) floats in [0, 1]
            img = Image.fromarray(np.rint(x * 255).astype(np.uint8), mode="L")
            if side != img.width:
                img = img.resize((side, side), Image.NEAREST)
            img.save(folder / f"{i:03d}.png")
            pngs[kind].append(folder / f"{i:03d}.png")
    return {"bundle": root / "bundles" / "fp32", "pngs": pngs,
            "accuracy": float((scores.argmax(1) == data.test.y).mean())}


def _accuracy(labels: list[str], data: Dataset) -> float:
    return float(np.mean([label == data.manifest["classes"][k]
                          for label, k in zip(labels, data.test.y, strict=True)]))


def test_png_paths_predict_bundle_matches_the_test_accuracy(shipped, data):
    native = predict_bundle(shipped["bundle"], shipped["pngs"]["native"])
    assert _accuracy(native, data) == shipped["accuracy"] > 0.5
    assert predict_bundle(shipped["bundle"], shipped["pngs"]["upscaled"]) == native


def test_png_paths_standalone_predict_py_gives_the_same_labels(shipped, data, tmp_path: Path):
    copy = shutil.copytree(shipped["bundle"], tmp_path / "shipped")
    expected = predict_bundle(shipped["bundle"], shipped["pngs"]["native"])
    for kind in SIZES:
        result = subprocess.run([sys.executable, "-I", str(copy / "predict.py"),
                                 *map(str, shipped["pngs"][kind])],
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        labels = [line.split("\t")[1] for line in result.stdout.splitlines()]
        assert labels == expected, kind
    assert _accuracy(expected, data) == shipped["accuracy"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict, deadline: float, server: subprocess.Popen) -> dict:
    """POST ``body`` as JSON to ``url``, retrying while the server starts."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return json.loads(reply.read())
        except (urllib.error.URLError, ConnectionError):
            if server.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.slow
def test_png_paths_mlflow_models_serve_gives_the_same_labels(shipped, data, tmp_path: Path):
    import mlflow.onnx
    import onnx
    import onnxruntime as ort
    from mlflow.models import infer_signature

    meta = bundle_predict.load_metadata(shipped["bundle"])
    batches = {kind: bundle_predict.load_inputs(shipped["pngs"][kind], meta)[0]
               for kind in SIZES}  # resized by the bundle's own code: (N, 8, 8, 1) uint8
    model_file = shipped["bundle"] / "model.onnx"
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    example = batches["native"][:2]
    outputs = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {"image": example}), strict=True))
    mlflow.onnx.save_model(onnx.load(str(model_file)), tmp_path / "served",
                           signature=infer_signature({"image": example}, outputs),
                           onnx_execution_providers=["CPUExecutionProvider"])
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    # the server execs `uvicorn` by name: this interpreter's scripts first on PATH
    env = {**os.environ, "PATH": os.pathsep.join([str(mlflow_cli.parent), os.environ["PATH"]])}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([str(mlflow_cli), "models", "serve", "-m", str(tmp_path / "served"),
                               "--env-manager", "local", "--host", "127.0.0.1",
                               "-p", str(port), "-w", "1"],
                              stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        expected = predict_bundle(shipped["bundle"], shipped["pngs"]["native"])
        deadline = time.monotonic() + 120
        for kind, x in batches.items():
            reply = _post(f"http://127.0.0.1:{port}/invocations",
                          {"inputs": {"image": x.tolist()}}, deadline, server)
            predictions = reply["predictions"]
            labels = [data.manifest["classes"][k] for k in predictions["label"]]
            assert labels == expected, kind
            probs = np.asarray(predictions["probabilities"])
            np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
            assert (probs.argmax(1) == np.asarray(predictions["label"])).all()
        assert _accuracy(labels, data) == shipped["accuracy"]
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
