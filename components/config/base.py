"""The base of every params section, the shared training sub-config and plugin-name discovery.

Torch-free on purpose: everything under `components.config` imports only pydantic and the
standard library, so validating `params.yaml` never loads torch, onnxruntime or a stage.
"""

from __future__ import annotations

import pkgutil
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

COMPONENTS = Path(__file__).resolve().parents[1]


class Section(BaseModel):
    """A params section: unknown keys, non-finite numbers (nan, inf) and booleans standing for
    numbers are refused (pydantic's lax mode would read `epochs: true` as 1)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, data: Any) -> Any:
        # A model (not field) validator: a field validator may not touch a discriminator
        # (`arch`). The error carries the key's own location, so the message names its path.
        if not isinstance(data, dict):
            return data
        errors = []
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key in data and (where := bool_for_number(field.annotation, data[key])) is not None:
                errors.append(InitErrorDetails(type=_BOOL_FOR_NUMBER, loc=(key, *where),
                                               input=True))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data


_BOOL_FOR_NUMBER = PydanticCustomError("bool_for_number",
                                       "a number is required, got a boolean (true/false)")


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _members(annotation: Any) -> tuple[Any, ...]:
    annotation = _unwrap(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(_unwrap(a) for a in get_args(annotation))
    return (annotation,)


def _wants_number(annotation: Any) -> bool:
    members = _members(annotation)
    return bool not in members and any(m in (int, float) for m in members)


def bool_for_number(annotation: Any, value: Any) -> tuple[int | str, ...] | None:
    """Where in ``value`` a boolean stands for a number that ``annotation`` asks for: ``()``
    for ``value`` itself, ``(1,)`` or ``("key",)`` (longer when deeper) inside a list or
    mapping; None when there is none."""
    if isinstance(value, bool):
        return () if _wants_number(annotation) else None
    for member in _members(annotation):
        origin, args = get_origin(member), get_args(member)
        items: list[tuple[int | str, Any, Any]]
        if origin in (list, tuple, set) and isinstance(value, list | tuple) and args:
            items = [(i, args[0], v) for i, v in enumerate(value)]
        elif origin is dict and isinstance(value, dict) and len(args) == 2:
            items = [(k, args[1], v) for k, v in value.items()]
        else:
            continue
        for key, item, v in items:
            inner = bool_for_number(item, v)
            if inner is not None:
                return (key, *inner)
    return None


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
    lr: float = Field(default=3e-3, gt=0, le=10, description="Peak learning rate (AdamW).")
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
