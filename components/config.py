"""Typed configuration: one pydantic model per `params.yaml` section, validated once at the edge.

Unknown keys, wrong types and impossible values are rejected before any stage does work, with
the key's path in the message (``params.yaml: train_teachers.training.lr: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from components.architectures import ArchConfig
from components.base_config import Section, TrainingConfig
from components.convert import ConvertConfig
from components.evaluate import EvaluateConfig
from components.gates import RegisterConfig
from components.prune import PruneConfig
from components.quantize import QuantizeConfig

PARAMS_FILE = Path("params.yaml")


class SplitConfig(Section):
    train: float = Field(default=0.7, gt=0, lt=1, description="Share of samples for training.")
    val: float = Field(default=0.15, gt=0, lt=1, description="Share for validation.")
    test: float = Field(default=0.15, gt=0, lt=1, description="Share for the held-out test.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        return self


class IngestConfig(Section):
    source: Literal["digits", "idx", "npz", "imagefolder", "csv"] = Field(
        default="digits", description="Data source kind."
    )
    path: str | None = Field(
        default=None, description="File or folder of the source (unused for `digits`)."
    )
    label_column: str = Field(default="label", description="`csv`: the label column's name.")
    image_shape: list[int] | None = Field(
        default=None,
        description="`csv`: (C, H, W) of the pixel columns; inferred for a square grey image.",
    )
    max_value: float | None = Field(
        default=None,
        gt=0,
        description="Pixel value that maps to 1.0; default: the source's (16 digits, 255 else).",
    )
    split: SplitConfig = SplitConfig()
    seed: int = Field(default=0, description="Seed of the stratified split.")
    limit_per_class: int | None = Field(
        default=None, gt=0, description="Keep at most this many samples per class (tiny runs)."
    )

    @model_validator(mode="after")
    def _path_when_needed(self) -> IngestConfig:
        if self.source != "digits" and not self.path:
            raise ValueError(f"source `{self.source}` needs `path`")
        return self


class ValidateConfig(Section):
    expected_labels: list[int] | None = Field(
        default=None, description="Exact label set required; default: 0..num_classes-1."
    )
    min_class_share: float = Field(
        default=0.02, ge=0, lt=1, description="Each class's minimum share of each split."
    )
    value_min: float = Field(default=0.0, description="Smallest allowed pixel value (scaled).")
    value_max: float = Field(default=1.0, description="Largest allowed pixel value (scaled).")
    reference_profile: str = Field(
        default="reference/profile.json",
        description="Profile of an earlier accepted dataset; drift is checked when it exists.",
    )
    max_drift: float = Field(
        default=0.1,
        gt=0,
        description="Fail when a drift score (class-share L1 / intensity histogram TV) exceeds it.",
    )


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


class ScheduleConfig(Section):
    """`schedule:` in params.yaml: when and as what the retrain deployment runs."""

    cron: str = Field(default="0 3 * * 1", description="Cron expression (default Mondays 03:00).")
    timezone: str = Field(default="UTC", description="IANA time zone the cron is read in.")
    deployment: str = Field(default="weekly", description="Deployment name (flow `retrain`).")
    work_pool: str | None = Field(
        default=None, description="Work pool for `apply_deployment` (production); None: serve."
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Parameters of the scheduled runs (e.g. push: false)."
    )


class NotifyConfig(Section):
    apprise_url: str | None = Field(
        default=None, description="Apprise URL for failure alerts (or DISTILLERY_APPRISE_URL)."
    )


class TrackingConfig(Section):
    experiment: str = Field(default="distillery", description="MLflow experiment name.")


class Params(Section):
    ingest: IngestConfig = IngestConfig()
    validate_: ValidateConfig = Field(default=ValidateConfig(), alias="validate")
    train_teachers: TeachersConfig
    distill: DistillConfig | None = None
    prune: PruneConfig | None = None
    quantize: QuantizeConfig = QuantizeConfig()
    convert: ConvertConfig = ConvertConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    # `register` would shadow BaseModel.register, hence the alias
    register_: RegisterConfig = Field(default=RegisterConfig(), alias="register")
    tracking: TrackingConfig = TrackingConfig()
    schedule: ScheduleConfig | None = None
    notify: NotifyConfig | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

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


def merge_params(base: dict, over: dict) -> dict:
    """Merge the raw params ``over`` into ``base`` in place (for derived runs: tiny test
    workspaces, benchmark clones); a `teachers` mapping is replaced whole, not merged."""
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k != "teachers":
            merge_params(base[k], v)
        else:
            base[k] = v
    return base

