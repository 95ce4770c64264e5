"""Config of registration and promotion (`register`), tracking, scheduling and alerts."""

from __future__ import annotations

import posixpath
import re
from typing import Any, Literal

from pydantic import Field, field_validator

from components.config.base import Section

# Metric -> True when higher is better.
HIGHER_IS_BETTER = {
    "val_accuracy": True, "accuracy": True, "throughput_per_s": True, "latency_ms_p50": False,
    "latency_ms_p95": False, "latency_ms_p99": False, "size_bytes": False, "peak_rss_mb": False,
}
Metric = Literal["val_accuracy", "accuracy", "throughput_per_s", "latency_ms_p50", "latency_ms_p95",
                 "latency_ms_p99", "size_bytes", "peak_rss_mb"]
_GATE = re.compile(rf"^(min|max)_({'|'.join(HIGHER_IS_BETTER)})$")


class PromotionPolicy(Section):
    primary_profile: str = Field(
        default="edge-1core", description="Device profile whose metrics decide the promotion."
    )
    primary_metric: Metric = Field(
        default="val_accuracy",
        description="Metric compared (val_accuracy: decide on val, report test `accuracy`).")
    min_improvement: float = Field(
        default=0.0, ge=0,
        description="Champion only if better than the champion by more than this (metric units).",
    )
    max_regression: float | None = Field(
        default=None, ge=0,
        description="Reject a candidate worse than the champion by more than this (metric "
                    "units); None keeps any gated candidate as challenger.",
    )
    require_all_budgets: bool = Field(
        default=True,
        description="Budgets of every evaluated profile are gates (False: the primary one only).",
    )
    gates: dict[str, float] = Field(
        default_factory=lambda: {"min_val_accuracy": 0.95},
        description="Absolute gates on the primary profile: `min_<metric>` / `max_<metric>`.",
    )

    @field_validator("gates")
    @classmethod
    def _known_gates(cls, gates: dict[str, float]) -> dict[str, float]:
        bad = [k for k in gates if not _GATE.match(k)]
        if bad:
            raise ValueError(f"unknown gates {bad}: use min_<metric> or max_<metric> with a "
                             f"metric in {sorted(HIGHER_IS_BETTER)}")
        return gates


def check_model_name(name: str) -> str:
    """MLflow's own rule for a registered model name (`mlflow.utils.validation.
    _validate_model_name`), applied before any stage runs instead of at `register`, the last."""
    if not name.strip():
        raise ValueError("a registered model name must not be empty")
    if "/" in name or ":" in name:
        raise ValueError(f"`{name}`: MLflow model names cannot contain '/' or ':'")
    normal = posixpath.normpath(name)
    if normal != name or normal == "." or normal.startswith(".."):
        raise ValueError(f"`{name}`: MLflow treats model names as paths, and this one would "
                         f"resolve to `{normal}`")
    return name


class RegisterConfig(Section):
    model_name: str = Field(default="distillery-digits", description="Registered model name.")
    variants: list[str] = Field(
        default=["fp32"], min_length=1,
        description="Bundles registered as versions: `student` (distilled, unpruned) and any "
        "of `quantize.variants` (missing ones are reported, not fatal).",
    )
    example_size: int = Field(default=4, gt=0, description="Test images in the input example.")
    promote: bool = Field(default=True, description="Apply the promotion policy after registering.")
    policy: PromotionPolicy = PromotionPolicy()

    @field_validator("model_name")
    @classmethod
    def _mlflow_accepts_the_name(cls, name: str) -> str:
        return check_model_name(name)

    @field_validator("variants")
    @classmethod
    def _each_variant_once(cls, variants: list[str]) -> list[str]:
        twice = sorted({v for v in variants if variants.count(v) > 1})
        if twice:
            raise ValueError(f"variant(s) {twice} listed more than once")
        return variants


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

    @field_validator("experiment")
    @classmethod
    def _named(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("an MLflow experiment name must not be empty")
        return name
