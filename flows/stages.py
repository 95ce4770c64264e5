"""The stage runner: one generic entry for every `dvc.yaml` stage (`distillery stage NAME`).

Each stage is `run(cfg, io)` in the module named after it (`components/NAME.py`, or
`flows/NAME.py` for the registry stage). The runner validates the whole params file first, reads
the stage's paths from dvc.yaml (`flows.graph.stage_io`), runs the stage and tracks it in one
MLflow run. A stage that fails, tracking included, publishes nothing: whatever it left at its
output paths is moved to `reports/failed/<stage>/` for diagnosis, where no later stage reads it.
Durations go to MLflow and `reports/stages/<stage>.json`, never into `metrics/`.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import time
from pathlib import Path
from types import ModuleType

from components.config import load_params
from components.core.io import atomic_write_json, read_json
from components.core.stage import StageIO, StageResult
from flows.graph import stage_io

STAGE_PACKAGES = ("components", "flows")  # where a stage's own module lives, in this order
FAILED = Path("reports/failed")
TIMINGS = Path("reports/stages")


def stage_module(name: str) -> ModuleType:
    """The module named after the stage, which defines `run(cfg, io)`."""
    for package in STAGE_PACKAGES:
        if importlib.util.find_spec(f"{package}.{name}") is not None:
            module = importlib.import_module(f"{package}.{name}")
            if callable(getattr(module, "run", None)):
                return module
    raise ValueError(f"unknown stage `{name}`: no {' or '.join(STAGE_PACKAGES)} module "
                     f"`{name}` with a `run(cfg, io)`")


def _data_tags(io: StageIO) -> dict[str, str]:
    prepared = io.deps.get("prepared")
    manifest = prepared / "manifest.json" if prepared else None
    return {"data_hash": read_json(manifest)["data_hash"]} if manifest and manifest.exists() \
        else {}


def run_stage(name: str, item: str | None = None, params_path: Path = Path("params.yaml"),
              dvc_file: Path = Path("dvc.yaml")) -> StageResult:
    """Run one stage with tracking; on any failure move its outputs aside and re-raise."""
    from flows.tracking import log_stage, start_stage_run

    params = load_params(params_path)  # the whole file, before any work
    io = stage_io(name, item, dvc_file)
    module = stage_module(name)
    with start_stage_run(io.address, params.tracking.experiment, _data_tags(io)) as run:
        try:
            start = time.perf_counter()
            result: StageResult = module.run(params, io)
            result.timings.setdefault("stage_seconds", round(time.perf_counter() - start, 3))
            log_stage(result.params, {**result.metrics, **result.timings}, result.history,
                      result.artifacts, result.tags)
            atomic_write_json(TIMINGS / f"{io.address}.json",
                              {"run_id": run.info.run_id, **result.timings})
        except BaseException:
            quarantine(io.address, list(io.outs.values()))
            raise
    return result


def quarantine(stage: str, outs: list[Path], root: Path = Path(".")) -> None:
    """Move whatever a failed stage left at its output paths to `reports/failed/<stage>/`."""
    target = root / FAILED / stage
    present = [root / p for p in outs if (root / p).exists()]
    if not present:
        return
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    for p in present:
        shutil.move(str(p), target / p.name)
