"""Config of the deployment stages: `convert` and `evaluate` (device profiles and budgets).

`params.yaml` is the only source of device profiles: `evaluate.profiles` has no defaults here.
"""

from __future__ import annotations

from typing import Literal

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
    isa: Literal["auto", "x86-avx512", "x86", "arm64"] = Field(
        default="auto",
        description="The target's instruction set; `auto`: this host's (measured here, the "
        "profile stands for the device). Decides the defaults below.")
    channel_multiple: int | None = Field(
        default=None, gt=0,
        description="Pruned widths are multiples of this (the runtime's channel block); "
        "None: 16 on x86 with AVX-512, 8 otherwise.")
    int8_formats: list[Literal["U8S8", "S8S8"]] | None = Field(
        default=None, min_length=1,
        description="int8 activation/weight types to try, measured; None: both on x86, "
        "S8S8 on arm64 (ONNX Runtime's advice).")

    def resolved_isa(self) -> str:
        from components.core.host import host_isa

        return host_isa() if self.isa == "auto" else self.isa

    def resolved_channel_multiple(self) -> int:
        if self.channel_multiple is not None:
            return self.channel_multiple
        return 16 if self.resolved_isa() == "x86-avx512" else 8

    def resolved_int8_formats(self) -> list[str]:
        if self.int8_formats is not None:
            return list(self.int8_formats)
        return ["S8S8"] if self.resolved_isa() == "arm64" else ["U8S8", "S8S8"]


class EvaluateConfig(Section):
    profiles: dict[str, DeviceProfile] = Field(
        description="Profile name -> device profile (params.yaml is their only source)."
    )
    warmup: int = Field(default=20, ge=0, description="Default untimed calls per measurement.")
    runs: int = Field(default=200, gt=0, description="Default timed calls per measurement.")
    timeout_s: float = Field(default=300, gt=0, description="Limit of one measuring process.")
    rounds: int = Field(
        default=3, ge=1,
        description="Interleaved timing rounds per profile; `runs` are split over them and "
        "the median of the rounds' p50s is reported.")
    selection_margin: float = Field(
        default=0.02, ge=0, le=1,
        description="Largest paired val-accuracy drop (one-sided 95% upper bound, fraction) "
        "for a candidate to count as accuracy-equivalent to the most accurate one.")

    @model_validator(mode="after")
    def _some_profile(self) -> EvaluateConfig:
        if not self.profiles:
            raise ValueError("at least one profile is required under `profiles`")
        return self
