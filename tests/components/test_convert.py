"""`convert`: verified, self-describing bundles that run without this repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.config import ConvertConfig, DeviceProfile, QuantizeConfig
from components.convert import convert_stage, predict_bundle, verify_bundle
from components.core.data import Dataset
from components.core.host import host_isa
from components.core.io import read_json, sha256_file
from components.export import bundle_predict
from components.export.bundle_predict import nchw_to_pixels
from components.export.onnx_utils import ParityError, make_session, run_session
from components.export.runtime import CONFIG_KEYS, choose, config_name, host_cores
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
                            root / "bundles", root / "convert.json", profiles=PROFILES,
                            default_profile="edge")
    return root / "bundles", metrics


PROFILES = {"edge": DeviceProfile(threads=1, batch_size=1),
            "server": DeviceProfile(threads=0, batch_size=8),
            "phone": DeviceProfile(isa="arm64", threads=1, batch_size=1),
            "gpu": DeviceProfile(providers=["CUDAExecutionProvider"], batch_size=4)}
HOST_ORT = f"model.{host_isa()}.ort" if host_isa().startswith("x86") else None


def _write_pngs(data: Dataset, folder: Path, n: int, raw: bool = False) -> list[Path]:
    """First ``n`` test images as ordinary 8-bit PNGs (0..255), or with ``raw`` holding the
    source's raw values (0..max_value, 0..16 for digits)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    top = data.manifest["max_value"] if raw else 255
    for i in range(n):
        pixels = np.rint(data.test.x[i, 0] * top).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"img{i}.png")
        paths.append(folder / f"img{i}.png")
    return paths


def _pixels(data: Dataset, n: int | None = None) -> np.ndarray:
    """The first ``n`` test images as the bundles take them: uint8 (n, H, W, C)."""
    return nchw_to_pixels(data.test.x[:n], 1 / 255)


def test_convert_writes_a_verified_bundle_per_variant_teacher_and_ensemble(bundles, data):
    root, metrics = bundles
    # quantize drops an int8 that is not faster on this host; every variant it wrote is bundled
    variants = read_json(root.parent / "quantized" / "report.json")["variants"]
    assert {"fp32", "fp16"} <= set(variants) <= {"fp32", "int8", "fp16"}
    assert set(metrics["bundles"]) == {*variants, "teacher-t1", "ensemble"}
    for name, m in metrics["bundles"].items():
        folder = root / name
        meta = read_json(folder / "metadata.json")
        assert {"model.onnx", "model.ort", "predict.py", HOST_ORT} - {None} == set(meta["files"])
        assert all(sha256_file(folder / f) == h for f, h in meta["files"].items())
        assert meta["input"]["shape"] == ["batch", 8, 8, 1] and meta["input"]["dtype"] == "uint8"
        assert meta["input"]["scale"] == pytest.approx(1 / 255)
        assert meta["input"]["raw_source"]["max_value"] == 16
        assert meta["outputs"] == ([meta["output"]["name"], "probabilities", "label"]
                                   if name != "ensemble" else ["probabilities", "label"])
        assert meta["opset"] >= 17 and meta["classes"] == data.manifest["classes"]
        assert meta["lineage"]["data_hash"] == data.manifest["data_hash"]
        assert m["onnx_max_abs_diff"] <= 1e-4 and m["ort_max_abs_diff"] <= 1e-4, name
        if HOST_ORT:
            assert m[f"ort_{host_isa().replace('-', '_')}_max_abs_diff"] <= 1e-4, name
    assert read_json(root / "fp32" / "metadata.json")["lineage"]["source_checkpoint_sha256"]
    probs = run_session(make_session(root / "ensemble" / "model.onnx"), _pixels(data))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)  # averaged softmax, not logits


def test_convert_bundle_runs_standalone_from_a_copy(bundles, data, tmp_path: Path):
    root, _ = bundles
    name = "int8" if (root / "int8").exists() else "fp16"
    copy = shutil.copytree(root / name, tmp_path / "shipped")
    pngs = _write_pngs(data, copy, 4)
    result = subprocess.run(
        [sys.executable, "-I", "-c", ISOLATED, "--profile", "phone", *(p.name for p in pngs)],
        cwd=copy, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    labels = [line.split("\t")[1] for line in result.stdout.splitlines()]
    scores = run_session(make_session(root / name / "model.onnx"), _pixels(data, 4))
    assert labels == [data.manifest["classes"][k] for k in scores.argmax(1)]


def test_predict_bundle_on_pngs_matches_evaluating_the_arrays(bundles, data, tmp_path: Path):
    root, _ = bundles
    pngs = _write_pngs(data, tmp_path, 12)
    scores = run_session(make_session(root / "fp32" / "model.onnx"), _pixels(data, 12))
    expected = [data.manifest["classes"][k] for k in scores.argmax(1)]
    assert predict_bundle(root / "fp32", pngs) == expected
    np.savez(tmp_path / "batch.npz", x=_pixels(data, 12)[..., 0])  # uint8 (N, H, W) 0..255
    assert predict_bundle(root / "fp32", [tmp_path / "batch.npz"]) == expected
    np.savez(tmp_path / "nchw.npz", x=data.test.x[:12])  # the prepared floats
    assert predict_bundle(root / "fp32", [tmp_path / "nchw.npz"]) == expected


def test_predict_bundle_takes_the_raw_source_form_when_told(bundles, data, tmp_path: Path):
    root, _ = bundles
    raw = _write_pngs(data, tmp_path / "raw", 12, raw=True)  # digits as stored: 0..16
    expected = predict_bundle(root / "fp32", _write_pngs(data, tmp_path / "png", 12))
    assert predict_bundle(root / "fp32", raw, raw=True) == expected
    np.savez(tmp_path / "raw.npz", x=np.rint(data.test.x[:12] * 16))  # float64 0..16
    assert predict_bundle(root / "fp32", [tmp_path / "raw.npz"], raw=True) == expected


def test_convert_rejects_a_tampered_bundle(bundles, data, tmp_path: Path):
    root, _ = bundles
    copy = shutil.copytree(root / "fp32", tmp_path / "b")
    (copy / "predict.py").write_text("print('hi')\n")
    reference = run_session(make_session(root / "fp32" / "model.onnx"), _pixels(data))
    with pytest.raises(ParityError, match="sha256"):
        verify_bundle(copy, reference, data, ConvertConfig())


def test_convert_records_the_measured_runtime_config_per_cpu_profile(bundles):
    root, metrics = bundles
    for name, m in metrics["bundles"].items():
        meta = read_json(root / name / "metadata.json")
        assert set(meta["runtime"]) == {"edge", "server", "phone"}  # gpu: not a CPU profile
        assert meta["default_profile"] == "edge"
        for profile, entry in meta["runtime"].items():
            assert entry["model_file"] in meta["files"]
            assert entry["graph_optimization_level"] in ("all", "extended", "basic")
            assert entry["batch_size"] == PROFILES[profile].batch_size
            assert m["runtime"][profile] == {k: entry[k] for k in CONFIG_KEYS}
            timed = [c for c in entry["candidates"] if "rejected" not in c]
            axes = list(dict.fromkeys(c["axis"] for c in timed))
            ort = HOST_ORT if profile != "phone" else "model.ort"
            assert {c["model_file"] for c in timed if c["axis"] == "file+level"} == {
                ort, "model.onnx"}, (name, profile)
            # the entry is what the tie rule picks from the last axis measured
            last = [c for c in timed if c["axis"] == axes[-1]]
            chosen = choose({config_name(c): c for c in last}, [config_name(c) for c in last])
            assert chosen == config_name(entry), (name, profile)
            assert entry["p50_ms"] == next(c["p50_ms"] for c in last
                                           if config_name(c) == chosen)
            if PROFILES[profile].threads == 1:  # no thread pool: threads and spinning not tried
                assert axes == ["file+level"] and entry["intra_op_num_threads"] == 1
            else:
                threads = {c["intra_op_num_threads"] for c in timed if c["axis"] == "threads"}
                assert threads == {0, 1, host_cores()}


def _spy_sessions(monkeypatch) -> list[tuple[Path, object]]:
    import onnxruntime as ort

    seen, real = [], ort.InferenceSession

    def spy(path, sess_options=None, **kw):
        seen.append((Path(path), sess_options))
        return real(path, sess_options=sess_options, **kw)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    return seen


def test_predict_profile_builds_the_session_with_exactly_the_recorded_options(
        bundles, data, tmp_path: Path, monkeypatch, capsys):
    import onnxruntime as ort

    root, _ = bundles
    copy = shutil.copytree(root / "fp32", tmp_path / "b")
    meta = read_json(copy / "metadata.json")
    meta["runtime"]["custom"] = {"model_file": "model.ort", "graph_optimization_level": "basic",
                                 "intra_op_num_threads": 2, "allow_spinning": False}
    (copy / "metadata.json").write_text(json.dumps(meta))
    np.savez(tmp_path / "x.npz", x=data.test.x[:6])
    expected = [data.manifest["classes"][k] for k in
                run_session(make_session(copy / "model.onnx"), _pixels(data, 6)).argmax(1)]
    seen = _spy_sessions(monkeypatch)
    assert bundle_predict.main(["--bundle", str(copy), "--profile", "custom",
                                str(tmp_path / "x.npz")]) == 0
    assert [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()] == expected
    (path, so), = seen
    assert path == (copy / "model.ort").resolve()
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    for profile in ("server", None):  # None: the default profile, `edge`
        entry = meta["runtime"][profile or "edge"]
        assert predict_bundle(copy, [tmp_path / "x.npz"], profile) == expected
        path, so = seen[-1]
        assert path == (copy / entry["model_file"]).resolve()
        assert so.intra_op_num_threads == entry["intra_op_num_threads"]
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == (
            "1" if entry["allow_spinning"] else "0")
        level = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED",
                 "basic": "ORT_ENABLE_BASIC"}[entry["graph_optimization_level"]]
        assert so.graph_optimization_level == getattr(ort.GraphOptimizationLevel, level)
    with pytest.raises(ValueError, match="profile `nope`.*custom, edge, phone, server"):
        predict_bundle(copy, [tmp_path / "x.npz"], "nope")


def test_predict_refuses_a_model_file_outside_the_bundle(bundles, data, tmp_path: Path):
    root, _ = bundles
    copy = shutil.copytree(root / "fp32", tmp_path / "b")
    shutil.copyfile(copy / "model.onnx", tmp_path / "outside.onnx")
    os.symlink(tmp_path / "outside.onnx", copy / "link.onnx")
    np.savez(tmp_path / "x.npz", x=data.test.x[:2])
    meta = read_json(copy / "metadata.json")
    for name in ("../outside.onnx", str(tmp_path / "outside.onnx"), "link.onnx"):
        meta["runtime"]["edge"]["model_file"] = name
        (copy / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=f"model_file `{name}` escapes the bundle folder"):
            predict_bundle(copy, [tmp_path / "x.npz"])


def test_predict_refuses_nan_and_inf_naming_the_file_and_sample(bundles, data, tmp_path: Path):
    root, _ = bundles
    x = data.test.x[:6].copy()
    x[3, 0, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=x)
    with pytest.raises(ValueError, match=r"nan\.npz: sample 3 \(x\[3\]\) holds NaN or inf"):
        predict_bundle(root / "fp32", [tmp_path / "nan.npz"])
    x[3, 0, 2, 2], x[5, 0, 0, 0] = 0.5, np.inf
    np.savez(tmp_path / "inf.npz", x=x)
    with pytest.raises(ValueError, match=r"inf\.npz: sample 5 "):
        predict_bundle(root / "fp32", [tmp_path / "inf.npz"])
    result = subprocess.run([sys.executable, "-I", str(root / "fp32" / "predict.py"),
                             str(tmp_path / "inf.npz")], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2 and "inf.npz: sample 5" in result.stderr and not result.stdout


def test_predict_names_a_corrupt_or_truncated_image_file(bundles, data, tmp_path: Path):
    root, _ = bundles
    good, = _write_pngs(data, tmp_path, 1)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])  # a PNG header, its data cut short
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    for bad in (truncated, garbage):
        with pytest.raises(ValueError, match=rf"{bad.name}: not a readable image"):
            predict_bundle(root / "fp32", [good, bad])


def test_predict_refuses_pixels_outside_0_255_and_wrong_shapes(bundles, tmp_path: Path):
    root, _ = bundles
    np.savez(tmp_path / "wide.npz", x=np.full((2, 8, 8), 300, dtype=np.int64))
    with pytest.raises(ValueError, match=r"wide\.npz: sample 0 .* outside the pixel range"):
        predict_bundle(root / "fp32", [tmp_path / "wide.npz"])
    np.savez(tmp_path / "shape.npz", x=np.zeros((2, 7, 7), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"shape\.npz: x has shape \(2, 7, 7\)"):
        predict_bundle(root / "fp32", [tmp_path / "shape.npz"])
