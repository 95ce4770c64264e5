"""`Params`: the whole `params.yaml`, one validated section per stage, and its loader.

Unknown keys, wrong types and impossible values are rejected before any stage does work, with
the key's path in the message (``params.yaml: train_teachers.training.lr: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from components.config.base import Section
from components.config.data import IngestConfig, ValidateConfig
from components.config.deployment import ConvertConfig, EvaluateConfig
from components.config.prune import PruneConfig
from components.config.quantize import QuantizeConfig
from components.config.registry import (
    NotifyConfig,
    RegisterConfig,
    ScheduleConfig,
    TrackingConfig,
)
from components.config.training import DistillConfig, TeachersConfig

PARAMS_FILE = Path("params.yaml")


class Params(Section):
    ingest: IngestConfig = IngestConfig()
    validate_: ValidateConfig = Field(default=ValidateConfig(), alias="validate")
    train_teachers: TeachersConfig
    distill: DistillConfig | None = None
    prune: PruneConfig | None = None
    quantize: QuantizeConfig = QuantizeConfig()
    convert: ConvertConfig = ConvertConfig()
    evaluate: EvaluateConfig
    # `register` would shadow BaseModel.register, hence the alias
    register_: RegisterConfig = Field(default=RegisterConfig(), alias="register")
    tracking: TrackingConfig = TrackingConfig()
    schedule: ScheduleConfig | None = None
    notify: NotifyConfig | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    def required(self, section: str) -> Any:
        """The optional section ``section`` (`distill`, `prune`, ...), or a clear refusal."""
        value = getattr(self, section)
        if value is None:
            raise ConfigError(f"params.yaml: the `{section}` section is required for this stage")
        return value

    @model_validator(mode="after")
    def _teacher_names_exist(self) -> Params:
        if self.distill:
            known = set(self.train_teachers.teachers)
            for key, names in (
                ("teachers", self.distill.teachers or []),
                ("hint_teacher", [self.distill.hint_teacher] if self.distill.hint_teacher else []),
            ):
                for n in names:
                    if n not in known:
                        raise ValueError(
                            f"distill.{key}: unknown teacher `{n}` (known: {sorted(known)})"
                        )
        return self


    @model_validator(mode="after")
    def _registered_variants_exist(self) -> Params:
        known = ["student", *self.quantize.variants]  # student: the distilled, unpruned model
        unknown = [v for v in self.register_.variants if v not in known]
        if unknown:
            raise ValueError(f"register.variants: unknown variant(s) {unknown} (produced: {known})")
        return self

    @model_validator(mode="after")
    def _primary_profile_exists(self) -> Params:
        primary, profiles = self.register_.policy.primary_profile, self.evaluate.profiles
        if primary not in profiles:
            raise ValueError(f"register.policy.primary_profile: unknown profile `{primary}` "
                             f"(evaluate.profiles: {sorted(profiles)})")
        return self


class ConfigError(ValueError):
    """Bad `params.yaml`: the message names the file and every offending key path."""


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {source}: {loc or '<root>'}: {msg}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate the whole params file (every section), before any stage works."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return parse_params(raw, str(path))


WHOLE = ("teachers", "student")  # keys merge_params replaces instead of merging


def merge_params(base: dict, over: dict) -> dict:
    """Merge the raw params ``over`` into ``base`` in place (for derived runs: tiny test
    workspaces, benchmark clones); a `teachers` mapping and an architecture (`student`) are
    replaced whole, not merged: another architecture's keys would not fit."""
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k not in WHOLE:
            merge_params(base[k], v)
        else:
            base[k] = v
    return base

