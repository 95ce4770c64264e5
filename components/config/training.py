"""Config of the training stages: `train_teachers` and `distill`."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from components.config.architectures import ArchConfig
from components.config.base import Section, TrainingConfig

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a teacher name: a folder and a DVC address


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

    @field_validator("teachers")
    @classmethod
    def _names_fit_paths(cls, teachers: dict[str, ArchConfig]) -> dict[str, ArchConfig]:
        # a name is a folder (models/teachers/NAME) and a DVC foreach key (train_teachers@NAME)
        bad = [n for n in teachers if not NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"teacher name(s) {bad}: use letters, digits, `_`, `-` and `.`, "
                             "starting with a letter or digit (a name is a folder and a DVC "
                             "stage address)")
        return teachers


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

    @field_validator("teachers")
    @classmethod
    def _some_teachers_once_each(cls, names: list[str] | None) -> list[str] | None:
        if names is not None:
            if not names:
                raise ValueError("an empty list distils from no teacher: list some, or null "
                                 "for all")
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"teacher(s) {twice} listed more than once")
        return names

    @field_validator("hint_weight")
    @classmethod
    def _hint_weight_needs_a_hint_teacher(cls, weight: float, info: ValidationInfo) -> float:
        # hint_teacher is declared (so validated) before hint_weight
        if weight > 0 and "hint_teacher" in info.data and info.data["hint_teacher"] is None:
            raise ValueError(f"{weight:g} weighs a hint loss, but `hint_teacher` is null: name "
                             "the teacher whose features the student mimics, or set 0")
        return weight
