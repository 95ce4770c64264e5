"""`convert`: verified, self-describing bundles that run without this repository."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.config import ConvertConfig, QuantizeConfig
from components.convert import convert_stage, predict_bundle, verify_bundle
from components.core.data import Dataset
from components.core.io import read_json, sha256_file
from components.export.onnx_utils import ParityError, make_session, run_session
from components.quantize import quantize_stage
from tests.helpers_models import DIGITS_ARCH, make_checkpoint, make_digits

# Runs predict.py as __main__ with everything but onnxruntime, numpy and Pillow unimportable.
ISOLATED = """
import runpy, sys
for name in ("torch", "onnx", "components", "sklearn", "pandas", "pydantic", "tests"):
    sys.modules[name] = None
sys.argv = ["predict.py", *sys.argv[1:]]
runpy.run_path("predict.py", run_name="__main__")
"""


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_digits()


@pytest.fixture(scope="module")
def bundles(data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("convert")
    student = make_checkpoint(root / "student", data)
    teacher = make_checkpoint(root / "teacher", data, arch=DIGITS_ARCH.model_copy(
        update={"channels": [16, 16]}), epochs=2)
    quantize_stage(QuantizeConfig(calibration_size=64, max_accuracy_drop=1.0,
                                  variants=["fp32", "int8", "fp16"]),
                   student, data, root / "quantized", root / "quantize.json")
    metrics = convert_stage(ConvertConfig(), root / "quantized", {"t1": teacher}, data,
                            root / "bundles", root / "convert.json")
    return root / "bundles", metrics


def _write_pngs(data: Dataset, folder: Path, n: int) -> list[Path]:
    """First ``n`` test images as 8-bit PNGs holding raw pixel values (0..max_value)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        raw = np.rint(data.test.x[i, 0] * data.manifest["max_value"]).astype(np.uint8)
        Image.fromarray(raw, mode="L").save(folder / f"img{i}.png")
        paths.append(folder / f"img{i}.png")
    return paths


def test_convert_writes_a_verified_bundle_per_variant_teacher_and_ensemble(bundles, data):
    root, metrics = bundles
    assert set(metrics["bundles"]) == {"fp32", "int8", "fp16", "teacher-t1", "ensemble"}
    for name, m in metrics["bundles"].items():
        folder = root / name
        meta = read_json(folder / "metadata.json")
        assert {"model.onnx", "model.ort", "predict.py"} == set(meta["files"])
        assert all(sha256_file(folder / f) == h for f, h in meta["files"].items())
        assert meta["input"]["shape"] == ["batch", 1, 8, 8]
        assert meta["input"]["input_scale"] == pytest.approx(1 / 16)
        assert meta["opset"] >= 17 and meta["classes"] == data.manifest["classes"]
        assert meta["lineage"]["data_hash"] == data.manifest["data_hash"]
        assert m["onnx_max_abs_diff"] <= 1e-4 and m["ort_max_abs_diff"] <= 1e-4, name
    assert read_json(root / "fp32" / "metadata.json")["lineage"]["source_checkpoint_sha256"]
    probs = run_session(make_session(root / "ensemble" / "model.onnx"), data.test.x)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)  # averaged softmax, not logits


def test_convert_bundle_runs_standalone_from_a_copy(bundles, data, tmp_path: Path):
    root, _ = bundles
    copy = shutil.copytree(root / "int8", tmp_path / "shipped")
    pngs = _write_pngs(data, copy, 4)
    result = subprocess.run(
        [sys.executable, "-I", "-c", ISOLATED, *(p.name for p in pngs)],
        cwd=copy, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    labels = [line.split("\t")[1] for line in result.stdout.splitlines()]
    scores = run_session(make_session(root / "int8" / "model.onnx"), data.test.x[:4])
    assert labels == [data.manifest["classes"][k] for k in scores.argmax(1)]


def test_predict_bundle_on_pngs_matches_evaluating_the_arrays(bundles, data, tmp_path: Path):
    root, _ = bundles
    pngs = _write_pngs(data, tmp_path, 12)
    scores = run_session(make_session(root / "fp32" / "model.onnx"), data.test.x[:12])
    expected = [data.manifest["classes"][k] for k in scores.argmax(1)]
    assert predict_bundle(root / "fp32", pngs) == expected
    np.savez(tmp_path / "batch.npz", x=np.rint(data.test.x[:12] * 16).astype(np.uint8))
    assert predict_bundle(root / "fp32", [tmp_path / "batch.npz"]) == expected


def test_convert_rejects_a_tampered_bundle(bundles, data, tmp_path: Path):
    root, _ = bundles
    copy = shutil.copytree(root / "fp32", tmp_path / "b")
    (copy / "predict.py").write_text("print('hi')\n")
    reference = run_session(make_session(root / "fp32" / "model.onnx"), data.test.x)
    with pytest.raises(ParityError, match="sha256"):
        verify_bundle(copy, reference, data, ConvertConfig())
