"""Shared fixtures: tiny prepared datasets and tiny parameter files, all in tmp_path."""

from __future__ import annotations

import os

import pytest

from components.core.data import Dataset
from tests.helpers_data import make_dataset

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@pytest.fixture
def tiny_dataset() -> Dataset:
    return make_dataset()
