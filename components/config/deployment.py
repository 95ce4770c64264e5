"""Config of the deployment stages: `convert` and `evaluate` (device profiles and budgets).

`params.yaml` is the only source of device profiles: `evaluate.profiles` has no defaults here.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from components.config.base import Section


class ConvertConfig(Section):
    ort_format: bool = Field(default=True, description="Also write `model.ort` (ORT format).")
    parity_max_abs_diff: float = Field(
        default=1e-4, gt=0, description="Largest allowed |output difference| vs the source."
    )
    parity_min_top1_agreement: float = Field(
        default=1.0, ge=0, le=1, description="Minimum share of equal top-1 vs the source."
    )
    include_teachers: bool = Field(
        default=True, description="Also bundle each teacher and their averaged ensemble."
    )
    opset: int = Field(default=17, ge=17, description="ONNX opset of teacher/ensemble exports.")


class Budgets(Section):
    """Limits a candidate must meet on a profile; a budget left out is not checked."""

    max_latency_ms_p95: float | None = Field(default=None, gt=0, description="p95 latency, ms.")
    max_size_bytes: int | None = Field(default=None, gt=0, description="ONNX file size.")
    max_peak_rss_mb: float | None = Field(
        default=None, gt=0, description="Peak RSS of the whole measuring process, MiB."
    )
    min_accuracy: float | None = Field(
        default=None, ge=0, le=1,
        description="Validation accuracy (test accuracy when no val split was measured).")


class DeviceProfile(Section):
    providers: list[str] = Field(
        default=["CPUExecutionProvider"], min_length=1,
        description="onnxruntime execution providers, first = the one measured.",
    )
    threads: int = Field(default=1, ge=0, description="intra-op threads; 0 = all cores.")
    batch_size: int = Field(default=1, gt=0, description="Batch of every timed call.")
    warmup: int | None = Field(default=None, ge=0, description="Untimed calls; default: global.")
    runs: int | None = Field(default=None, gt=0, description="Timed calls; default: global.")
    budgets: Budgets = Budgets()


class EvaluateConfig(Section):
    profiles: dict[str, DeviceProfile] = Field(
        description="Profile name -> device profile (params.yaml is their only source)."
    )
    warmup: int = Field(default=20, ge=0, description="Default untimed calls per measurement.")
    runs: int = Field(default=200, gt=0, description="Default timed calls per measurement.")
    timeout_s: float = Field(default=300, gt=0, description="Limit of one measuring process.")

    @model_validator(mode="after")
    def _some_profile(self) -> EvaluateConfig:
        if not self.profiles:
            raise ValueError("at least one profile is required under `profiles`")
        return self
