"""Config of the training stages: `train_teachers` and `distill`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from components.config.architectures import ArchConfig
from components.config.base import Section, TrainingConfig


class TeachersConfig(Section):
    training: TrainingConfig = TrainingConfig()
    teachers: dict[str, ArchConfig] = Field(
        default_factory=dict, description="Teacher name -> architecture config (registry name)."
    )

    @model_validator(mode="after")
    def _at_least_one(self) -> TeachersConfig:
        if not self.teachers:
            raise ValueError("at least one teacher is required under `teachers`")
        return self


class DistillConfig(Section):
    student: ArchConfig = Field(description="Student architecture (same registry as teachers).")
    training: TrainingConfig = TrainingConfig()
    temperature: float = Field(default=4.0, gt=0, description="Softmax temperature T.")
    alpha: float = Field(
        default=0.7, ge=0, le=1, description="Weight of the KD term; 1 - alpha on labels."
    )
    weighting: Literal["mean", "accuracy", "confidence"] = Field(
        default="confidence", description="Teacher weighting strategy."
    )
    teachers: list[str] | None = Field(
        default=None, description="Teachers to distil from; default: all."
    )
    hint_teacher: str | None = Field(
        default=None, description="Teacher whose penultimate features the student mimics."
    )
    hint_weight: float = Field(default=0.0, ge=0, description="Weight of the hint (feature) loss.")
    seeds: int = Field(default=1, ge=1, description="Repeat student and baseline over seeds.")
