"""Shared fixtures: tiny prepared datasets and tiny parameter files, all in tmp_path."""

from __future__ import annotations

import os

import pytest

from components.core.data import Dataset
from tests.helpers_data import make_dataset

for _key, _value in {"GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                     "MLFLOW_DISABLE_TELEMETRY": "true"}.items():
    os.environ.setdefault(_key, _value)  # no telemetry from the suite either


@pytest.fixture
def tiny_dataset() -> Dataset:
    return make_dataset()
