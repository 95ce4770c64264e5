"""`components.export.onnx_utils`: the parity gate between a model and its ONNX export."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from components.core.data import Dataset
from components.export.onnx_utils import ParityError, check_parity, export_onnx
from components.modeling.architectures import build_model
from tests.helpers_models import DIGITS_ARCH, make_digits


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_digits()


def test_check_parity_rejects_a_broken_export_naming_worst_samples(data: Dataset, tmp_path: Path):
    model = build_model(DIGITS_ARCH, data.in_shape, 10, data.mean, data.std).eval()
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
