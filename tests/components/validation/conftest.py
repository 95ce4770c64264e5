"""Inputs of the validation helpers, built from a tiny prepared folder as `validate` builds them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.config import ValidateConfig
from components.core.data import SPLITS, load_prepared
from components.validate import describe_samples
from tests.helpers_data import Arrays, write_prepared

CLASSES = ["c0", "c1", "c2"]  # make_splits' default three classes


@dataclass
class Inputs:
    """What `validate` hands its helpers: per-split sample tables and what the manifest says."""

    folder: Path  # the prepared folder; room for Data Docs beside it
    tables: dict[str, pd.DataFrame]
    manifest: dict
    expected: list[int]
    names: list[str]
    train_x: np.ndarray

    def failures(self, records: list[dict]) -> str:
        """Every failed record's message, one a line, as `DataValidationError` words them."""
        return "\n".join(r["message"] for r in records if not r["success"])


@pytest.fixture(scope="session")
def prepare(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Inputs]:
    """Write `arrays` (and manifest overrides) to a fresh prepared folder and describe it."""

    def build(arrays: Arrays, cfg: ValidateConfig | None = None, **manifest: object) -> Inputs:
        manifest.setdefault("class_names", CLASSES)
        folder = write_prepared(tmp_path_factory.mktemp("prepared"), arrays,
                                **manifest)  # type: ignore[arg-type]
        ds = load_prepared(folder)
        cfg = cfg or ValidateConfig()
        return Inputs(
            folder=folder, tables={s: describe_samples(ds, s) for s in SPLITS},
            manifest=ds.manifest, expected=list(cfg.expected_labels or range(ds.num_classes)),
            names=[str(c) for c in ds.manifest.get("classes", [])], train_x=ds.split("train").x)

    return build
