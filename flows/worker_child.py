"""The worker side of the warm stage workers: what runs inside a spawned worker process.

`flows.workers` spawns each worker with `_serve` as its target, which multiprocessing passes
by reference: the new interpreter imports this module first, so it imports only the standard
library at the top (`_use_repo_code` then drops every `flows` and `components` module loaded so
far). `_serve` switches to the repo's code, warms the heavy imports in the background, then takes
`StageJob`s, as plain values, one at a time and answers each with what `reproduce` returned or
the error it raised.

`reproduce` is `dvc repro --single-item` with the stage's command run in-process: it asks DVC
whether the stage changed, removes its outputs as `dvc repro` does, runs it, and `dvc commit`s
it (dep and out hashes into dvc.lock and the run-cache, outs into the cache, autostage): the same
dvc.lock a `dvc repro` writes. DVC's repo lock, waited for, serialises the workers' DVC steps as
it does parallel `dvc` processes. What it does not do is restore a run from DVC's run-cache: a
changed stage always runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# Imported by every worker before its first stage: the libraries most stages use.
WARM_IMPORTS = ("numpy", "torch", "onnxruntime", "mlflow", "components.config",
                "components.modeling.training", "flows.stages", "flows.tracking")


@dataclass(frozen=True)
class StageCall:
    """`distillery stage NAME [--item ITEM] [--params FILE]`, parsed."""

    name: str
    item: str | None = None
    params: str = "params.yaml"


@dataclass(frozen=True)
class StageJob:
    """Reproduce the DVC stage ``address`` (running ``call``), as `dvc repro --single-item`."""

    address: str  # DVC's address: `ingest`, `train_teachers@mlp`
    call: StageCall
    outs: tuple[str, ...] = ()  # removed before the run, relative to the repo
    force: bool = False


def _use_repo_code(repo: str) -> None:
    """Import `flows` and `components` from ``repo``: the code whose hashes DVC records.

    This module's own functions (the orchestration) stay those of the installed package; the
    stage runner and the components the stages call are the repo's."""
    os.chdir(repo)
    sys.path.insert(0, repo)
    for name in list(sys.modules):
        if name.split(".")[0] in ("flows", "components"):
            del sys.modules[name]


def _warm() -> None:  # pragma: no cover - runs in the child
    import importlib

    # Below normal priority (Linux: per thread): the flow's own start-up, and a stage that needs
    # none of these modules yet, keep the cores; this thread uses what is left.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    for module in WARM_IMPORTS:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


def reproduce(job: StageJob) -> dict[str, Any]:
    """In the repo's directory: `dvc repro --single-item` with the command run in-process.

    Returns ``{"status": "ran" | "skipped", "dvc_s": ..., "stage_s": ...}``: "skipped" when DVC
    reports the stage unchanged; seconds spent in DVC (status, commit) and in the stage runner.
    """
    from dvc.repo import Repo

    from flows.stages import run_stage

    start = time.perf_counter()
    if not job.force:
        with Repo(".", _wait_for_lock=True) as repo:
            if not repo.status(targets=[job.address]):
                return {"status": "skipped", "dvc_s": _since(start), "stage_s": 0.0}
    remove_outs([Path(p) for p in job.outs])
    dvc_s = _since(start)
    start = time.perf_counter()
    run_stage(job.call.name, job.call.item, Path(job.call.params))
    stage_s = _since(start)
    start = time.perf_counter()
    with Repo(".", _wait_for_lock=True) as repo, repo.scm_context(quiet=True):
        repo.commit(job.address, force=True)  # autostage as `dvc repro` does, when configured
    return {"status": "ran", "dvc_s": round(dvc_s + _since(start), 3), "stage_s": stage_s}


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def _serve(repo: str, conn: Connection) -> None:  # pragma: no cover - runs in the child
    _use_repo_code(repo)
    # Heavy imports in the background: a status check (no-op run) need not wait for them, and a
    # stage importing the same module waits for the import already under way.
    threading.Thread(target=_warm, name="warm-imports", daemon=True).start()
    conn.send(("ready", os.getpid(), ""))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            request = None
        if request is None:
            # Every stage's work is committed; exit now rather than wait for library threads
            # (MLflow's, torch's) that a normal interpreter shutdown would join.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        fields, env = request
        os.environ.update(env)
        try:
            call = StageCall(**fields.pop("call"))
            status = reproduce(StageJob(call=call, **fields))
        except BaseException as e:  # noqa: BLE001 - reported to the flow, the worker lives on
            conn.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))
        else:
            conn.send(("ok", status, ""))
        finally:
            for key in env:
                os.environ.pop(key, None)


def remove_outs(outs: list[Path]) -> None:
    """Delete a stage's outputs before it runs, as `dvc repro` does."""
    for path in outs:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
