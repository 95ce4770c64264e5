"""Every choice a config offers is a key of the registry it selects from, and the config layer
stays the ground floor: importing it loads neither torch, nor onnxruntime, nor any stage."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest

from components.config import (
    CNNConfig,
    DistillConfig,
    IngestConfig,
    PruneConfig,
    QuantizeConfig,
    ResNetConfig,
)
from components.config.architectures import ArchConfig
from components.config.quantize import VARIANTS
from tests.helpers_data import REPO


def choices(model, field: str) -> set[str]:
    annotation = model.model_fields[field].annotation
    inner = get_args(annotation)  # list[Literal[...]] -> (Literal[...],)
    if inner and not isinstance(inner[0], str):
        annotation = inner[0]
    return set(get_args(annotation))


def test_teacher_weightings_match_the_weighting_registry():
    from components.modeling.weighting import WEIGHTINGS

    assert choices(DistillConfig, "weighting") == set(WEIGHTINGS)


def test_pruning_criteria_match_the_importance_registry():
    from components.pruning.importance import IMPORTANCE

    assert choices(PruneConfig, "criterion") == set(IMPORTANCE)


def test_sources_match_the_source_registry():
    from components.sources import SOURCES

    assert choices(IngestConfig, "source") == set(SOURCES)


def test_calibration_methods_match_onnxruntime_members():
    from onnxruntime.quantization import CalibrationMethod

    from components.quantization.int8 import CALIBRATION

    assert choices(QuantizeConfig, "calibration_method") == set(CALIBRATION)
    for member in CALIBRATION.values():
        assert hasattr(CalibrationMethod, member)


def test_variants_are_the_ones_quantize_writes():
    from components.quantize import MAKERS

    assert choices(QuantizeConfig, "variants") == set(VARIANTS) == {"fp32", *MAKERS}
    assert {"int8", "int8_dynamic", "fp16"} <= set(MAKERS)


def test_architectures_match_the_model_registry():
    from components.modeling.architectures import ARCHITECTURES

    configs = get_args(get_args(ArchConfig)[0])
    assert {c.model_fields["arch"].default for c in configs} == set(ARCHITECTURES)
    assert CNNConfig().arch == "cnn" and ResNetConfig().arch == "resnet"


def test_config_package_imports_no_torch_onnxruntime_or_stage():
    code = ("import sys, components.config as c; c.load_params('params.yaml'); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime', "
            "'mlflow', 'prefect') or (m.startswith('components.') and not "
            "m.startswith(('components.config', 'components.core')))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("module", ["components.ingest", "components.validate"])
def test_early_stages_do_not_load_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "False"
