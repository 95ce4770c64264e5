"""The base of every params section, the shared training sub-config and plugin-name discovery.

Torch-free on purpose: everything under `components.config` imports only pydantic and the
standard library, so validating `params.yaml` never loads torch, onnxruntime or a stage.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

COMPONENTS = Path(__file__).resolve().parents[1]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


def plugin_names(package: str, exclude: tuple[str, ...] = ("common",)) -> tuple[str, ...]:
    """The module names in ``components/<package>/`` (one file per registry entry), found
    without importing them, so a config `Literal` follows the registry it selects from."""
    folder = COMPONENTS / package
    names = sorted(m.name for m in pkgutil.iter_modules([str(folder)])
                   if not m.name.startswith("_") and m.name not in exclude)
    if not names:
        raise RuntimeError(f"{folder}: no plugin modules found")
    return tuple(names)


class TrainingConfig(Section):
    """The one training loop shared by teachers, students, distillation and fine-tuning."""

    epochs: int = Field(default=40, gt=0, description="Maximum epochs.")
    batch_size: int = Field(default=64, gt=0)
    lr: float = Field(default=3e-3, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(default=1e-4, ge=0)
    schedule: Literal["onecycle", "cosine"] = Field(default="onecycle")
    patience: int = Field(default=10, gt=0, description="Early stop after this many flat epochs.")
    shift: int = Field(default=1, ge=0, description="Augmentation: max random shift in pixels.")
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto")
    threads: int = Field(
        default=1, ge=0,
        description="CPU threads for training (0: torch's default). 1 keeps results "
        "bit-identical on any machine; tiny models gain little from more.",
    )
    seed: int = Field(default=0)
