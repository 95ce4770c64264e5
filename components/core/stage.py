"""The stage contract: every `dvc.yaml` stage is `run(cfg, io) -> StageResult` in its module.

`StageIO` carries the paths a stage reads and writes, named as in `dvc.yaml`'s `vars.paths`
(`io.dep("prepared")`, `io.out("student")`), so a path is written once, in `dvc.yaml`, and the
code reads it. `StageResult` is what the runner (`flows/stages.py`) tracks: `metrics` is what the
stage wrote to its `metrics/` file (quality and size, what `dvc metrics diff` compares);
`timings` (durations) go to MLflow and `reports/`, never to `metrics/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class StageIOError(KeyError):
    """A stage asked for a path its `dvc.yaml` entry does not declare."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


@dataclass(frozen=True)
class StageIO:
    """The declared deps and outs of one stage (one foreach item), by their `vars.paths` name."""

    stage: str
    item: str | None = None
    deps: Mapping[str, Path] = field(default_factory=dict)
    outs: Mapping[str, Path] = field(default_factory=dict)
    metrics: Path | None = None  # the outs entry declared under `metrics:`, if any

    @property
    def address(self) -> str:
        return f"{self.stage}@{self.item}" if self.item else self.stage

    def dep(self, name: str) -> Path:
        return self._get(self.deps, name, "deps")

    def out(self, name: str) -> Path:
        return self._get(self.outs, name, "outs")

    def _get(self, paths: Mapping[str, Path], name: str, kind: str) -> Path:
        try:
            return paths[name]
        except KeyError:
            raise StageIOError(f"dvc.yaml: stage `{self.address}` declares no {kind} `{name}` "
                               f"(it declares {sorted(paths)})") from None


@dataclass
class StageResult:
    """What one stage run hands the runner to track (see the module docstring)."""

    metrics: dict[str, Any]
    params: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
