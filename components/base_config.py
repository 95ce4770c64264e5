"""Base of every params section, and the sub-configs that several stages share.

Kept apart from `components.config` so that stage modules can define their own section
(`PruneConfig`, `QuantizeConfig`, ...) which `components.config` then assembles into `Params`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


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
