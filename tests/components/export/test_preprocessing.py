"""`components.export.preprocessing`: 8-bit pixels in, cast/scale/transpose inside the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from components.core.data import Split
from components.export.bundle_predict import nchw_to_pixels
from components.export.onnx_utils import make_session, run_session
from components.export.preprocessing import add_preprocessing, input_contract, input_scale
from components.quantization._int8_static import quantize_int8
from tests.helpers_data import make_blobs
from tests.helpers_models import band_model, export

SCALE = 1 / 255


@pytest.fixture
def blobs() -> Split:
    x, y = make_blobs(8)
    return Split(x, y, np.array([f"blob:{i}" for i in range(len(y))]))


def _pixels_and_floats(split: Split) -> tuple[np.ndarray, np.ndarray]:
    pixels = nchw_to_pixels(split.x, SCALE)  # (N, 8, 8, 1) uint8
    return pixels, (pixels.astype(np.float32) * np.float32(SCALE)).transpose(0, 3, 1, 2)


def test_add_preprocessing_takes_uint8_nhwc_and_adds_probabilities_and_label(
        blobs: Split, tmp_path: Path):
    src = export(band_model(3), tmp_path / "float.onnx")
    shipped = add_preprocessing(src, tmp_path / "shipped.onnx", (1, 8, 8), SCALE)
    session = make_session(shipped)
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("image", "tensor(uint8)", [8, 8, 1])
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities", "label"]
    pixels, floats = _pixels_and_floats(blobs)
    logits, probs, label = session.run(None, {"image": pixels})
    np.testing.assert_array_equal(logits, run_session(make_session(src), floats))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert label.dtype == np.int64 and (label == logits.argmax(1)).all()
    assert (label == blobs.y).all()


def test_add_preprocessing_wraps_an_int8_graph(blobs: Split, tmp_path: Path):
    src = export(band_model(3), tmp_path / "float.onnx")
    pixels, floats = _pixels_and_floats(blobs)
    calib = Split(floats, blobs.y, blobs.ids)
    int8 = quantize_int8(src, tmp_path / "int8.onnx", calib, "minmax", per_channel=False)
    shipped = add_preprocessing(int8, tmp_path / "shipped.onnx", (1, 8, 8), SCALE)
    got = make_session(shipped).run(None, {"image": pixels})
    np.testing.assert_array_equal(got[0], run_session(make_session(int8), floats))
    assert (got[2] == blobs.y).all()


def test_add_preprocessing_keeps_an_ensembles_probabilities(tmp_path: Path):
    import onnx

    src = export(band_model(3), tmp_path / "float.onnx")
    proto = onnx.load(str(src))
    proto.graph.output[0].name = "probabilities"
    proto.graph.node[-1].output[0] = "probabilities"
    onnx.save(proto, str(src))
    shipped = add_preprocessing(src, tmp_path / "shipped.onnx", (1, 8, 8), SCALE)
    assert [o.name for o in make_session(shipped).get_outputs()] == ["probabilities", "label"]


def test_add_preprocessing_refuses_a_graph_without_the_image_input(tmp_path: Path):
    import onnx

    src = export(band_model(3), tmp_path / "float.onnx")
    proto = onnx.load(str(src))
    proto.graph.input[0].name = "pixels"
    proto.graph.node[0].input[0] = "pixels"
    onnx.save(proto, str(src))
    with pytest.raises(ValueError, match=r"float.onnx: expected the single input `image`"):
        add_preprocessing(src, tmp_path / "shipped.onnx", (1, 8, 8), SCALE)


@pytest.mark.parametrize(("kind", "max_value", "scale", "raw"), [
    ("digits", 16.0, 1 / 255, 16.0),  # raw 0..16: an 8-bit picture spans 0..255
    ("imagefolder", 255.0, 1 / 255, None),  # raw values are the pixels
    ("imagefolder", 200.0, 1 / 200, None),  # an ingest.max_value override keeps raw = pixels
    ("idx", 255.0, 1 / 255, None),
    ("npz", 1.0, 1 / 255, 1.0),  # float source in [0, 1]
])
def test_input_contract_matches_how_ingest_scaled_the_source(kind, max_value, scale, raw):
    manifest = {"source": {"kind": kind}, "max_value": max_value, "shape": [1, 8, 8]}
    assert input_scale(manifest) == pytest.approx(scale)
    contract = input_contract(manifest)
    assert contract["shape"] == ["batch", 8, 8, 1] and contract["dtype"] == "uint8"
    assert (contract["raw_source"] or {}).get("max_value") == raw


@pytest.mark.parametrize("norm", ["div", "mul"])
def test_the_pixel_scale_folds_into_the_graphs_own_normalisation(
        blobs: Split, tmp_path: Path, norm: str):
    """A graph that opens with Sub(mean) -> Div(std) (or Mul(1/std)), as every exported
    Distillery model does, takes the 1/255 into those constants: no Mul node, same logits."""
    import onnx
    import torch
    from torch import nn

    class Normalised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(0.3))
            self.register_buffer("std", torch.tensor(0.25))
            self.register_buffer("inv_std", torch.tensor(4.0))
            self.body = band_model(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x - self.mean
            return self.body(x / self.std if norm == "div" else x * self.inv_std)

    src = export(Normalised().eval(), tmp_path / "float.onnx")
    shipped = add_preprocessing(src, tmp_path / "shipped.onnx", (1, 8, 8), SCALE)
    ops = [n.op_type for n in onnx.load(str(shipped)).graph.node]
    assert ops[:3] == ["Cast", "Transpose", "Sub"] and "preprocess/scale" not in {
        n.name for n in onnx.load(str(shipped)).graph.node}
    pixels, floats = _pixels_and_floats(blobs)
    got = make_session(shipped).run(None, {"image": pixels})[0]
    np.testing.assert_allclose(got, run_session(make_session(src), floats), rtol=1e-5,
                               atol=1e-5)
