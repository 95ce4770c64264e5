"""The stage runner: one generic entry for every `dvc.yaml` stage (`distillery stage NAME`).

Each stage is `run(cfg, io)` in the module named after it (`components/NAME.py`, or
`flows/NAME.py` for the registry stage). The runner validates the whole params file first, reads
the stage's paths from dvc.yaml (`flows.graph.stage_io`), runs the stage and tracks it in one
MLflow run. A stage that fails, tracking included, publishes nothing: whatever it left at its
output paths is moved to `reports/failed/<stage>/` for diagnosis, where no later stage reads it.
That holds for an interrupt too: SIGTERM (a timeout, `kill`) raises `StageTerminated` inside the
stage, so the same path runs and the MLflow run ends KILLED. Only SIGKILL skips it; what that
leaves (the temporary files and folders of `components.core.io`'s atomic writes) the next run of
the same stage removes before it starts. Durations go to MLflow and `reports/stages/<stage>.json`,
never into `metrics/`.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import importlib.util
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, ModuleType

from components.config import load_params
from components.core.io import atomic_write_json, read_json
from components.core.stage import StageIO, StageResult
from flows.graph import stage_io

STAGE_PACKAGES = ("components", "flows")  # where a stage's own module lives, in this order
FAILED = Path("reports/failed")
TIMINGS = Path("reports/stages")
NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # a write failed for want of space
# `components.core.io`: `tempfile.mkstemp/mkdtemp(prefix=".NAME.", suffix=".tmp")` beside NAME
# (8 random characters from tempfile's alphabet), and `.NAME.old-PID` while a folder is swapped.
_TEMP_TAIL = r"\.(?:[a-z0-9_]{8}\.tmp|old-[0-9]+)"


class NoRoomForOutputs(OSError):
    """A write of the stage failed for want of space (ENOSPC, EFBIG, EDQUOT)."""


class StageTerminated(KeyboardInterrupt):
    """SIGTERM arrived while a stage ran (a KeyboardInterrupt, so `except Exception` lets it by)."""


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


def _log_input(io: StageIO) -> None:
    """The prepared dataset a stage reads, as an MLflow input of its run."""
    from flows.tracking import log_prepared_input

    prepared = io.deps.get("prepared")
    if prepared and (prepared / "manifest.json").exists():
        log_prepared_input(prepared, read_json(prepared / "manifest.json"), io.address)


def run_stage(name: str, item: str | None = None, params_path: Path = Path("params.yaml"),
              dvc_file: Path = Path("dvc.yaml")) -> StageResult:
    """Run one stage with tracking; on any failure move its outputs aside and re-raise.

    Failures include the tracking store going away (at the start, in the middle or when the run
    ends), SIGTERM, KeyboardInterrupt and SystemExit.
    """
    from flows.tracking import log_stage, start_stage_run

    params = load_params(params_path)  # the whole file, before any work
    io = stage_io(name, item, dvc_file)
    module = stage_module(name)
    outs = list(io.outs.values())
    remove_stale_temps(outs + [TIMINGS / f"{io.address}.json"])
    # Quarantine twice: inside the run, before ending it (which may take a while when the
    # store is gone), and outside, for a run that could not start or end.
    with (_terminate_raises(io.address), _quarantine_on_failure(io.address, outs),
          start_stage_run(io.address, params.tracking.experiment, _data_tags(io)) as run,
          _quarantine_on_failure(io.address, outs)):
        _log_input(io)
        start = time.perf_counter()
        result: StageResult = module.run(params, io)
        result.timings.setdefault("stage_seconds", round(time.perf_counter() - start, 3))
        log_stage(result.params, {**result.metrics, **result.timings}, result.history,
                  result.artifacts, result.tags)
        atomic_write_json(TIMINGS / f"{io.address}.json",
                          {"run_id": run.info.run_id, **result.timings})
    return result


@contextlib.contextmanager
def _quarantine_on_failure(stage: str, outs: list[Path]) -> Iterator[None]:
    """Any exception: move the stage's outputs aside and re-raise; a write that failed for want
    of space without naming its file is re-raised naming the stage and its outputs."""
    try:
        yield
    except OSError as e:
        quarantine(stage, outs)
        if e.errno in NO_ROOM and not isinstance(e, NoRoomForOutputs):
            where = f" ({e.filename})" if e.filename else ""
            raise NoRoomForOutputs(e.errno, f"{e.strerror}: stage `{stage}` could not write its "
                                   f"outputs {[str(p) for p in outs]}{where} (disk full or a "
                                   "file-size limit?)") from e
        raise
    except BaseException:
        quarantine(stage, outs)
        raise


@contextlib.contextmanager
def _terminate_raises(stage: str) -> Iterator[None]:
    """While the stage runs, SIGTERM raises `StageTerminated` (main thread only: Python delivers
    signals there); the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
        raise StageTerminated(f"stage `{stage}` received SIGTERM")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stale_temps(out: Path) -> list[Path]:
    """The temporary files and folders an atomic write of ``out`` leaves beside it when killed."""
    pattern = re.compile(re.escape(f".{out.name}") + _TEMP_TAIL)
    if not out.parent.is_dir():
        return []
    return sorted(p for p in out.parent.iterdir() if pattern.fullmatch(p.name))


def remove_stale_temps(outs: list[Path]) -> list[Path]:
    """Remove what a killed earlier run of this stage left beside its own outputs; return it.

    Only names built from this stage's outs match, so another stage's temporaries (even one
    running now beside it, e.g. `models/.quantized.*.tmp` next to `models/bundles`) stay.
    """
    removed = []
    for out in outs:
        for p in stale_temps(out):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


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
