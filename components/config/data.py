"""Config of the data stages: `ingest` (and its split) and `validate`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from components.config.base import Section, plugin_names

Size = Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=2, max_length=2)]  # [H, W]


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
    source: Literal[plugin_names("sources")] = Field(  # type: ignore[valid-type]
        default="digits", description="Data source kind: a module of `components/sources/`."
    )
    path: str | None = Field(
        default=None,
        description="File or folder of the source; a DVC dep of `ingest`, so never null in "
                    "params.yaml (digits: `components/sources/digits.py`).",
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
    resize: Size | None = Field(
        default=None,
        description="[H, W]: resize every image to H x W (bilinear, on the raw values, "
        "before scaling), so sources of mixed sizes ingest; null: keep the source's size.",
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


class MinPerClass(Section):
    """Fewest samples of each class a split may hold: enough to learn from in `train`, at
    least one to measure in `val` and `test` (what `ingest` gives a class of >= 3 samples)."""

    train: int = Field(default=5, ge=1, description="Minimum samples per class in train.")
    val: int = Field(default=1, ge=1, description="Minimum samples per class in val.")
    test: int = Field(default=1, ge=1, description="Minimum samples per class in test.")


class ValidateConfig(Section):
    expected_labels: list[int] | None = Field(
        default=None, description="Exact label set required; default: 0..num_classes-1."
    )
    min_class_share: float = Field(
        default=0.02, ge=0, lt=1, description="Each class's minimum share of each split."
    )
    min_per_class: MinPerClass = Field(
        default_factory=MinPerClass,
        description="Each class's minimum sample count per split ({train, val, test}).",
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
