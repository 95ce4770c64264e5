"""Warm stage workers: `distillery stage` commands run in long-lived processes.

A fresh stage process spends about 4 s before its first line of work (Python, torch, MLflow,
ONNX Runtime imports); over the chain's twelve stages that was nearly half of a fresh `dvc repro`.
The flow therefore keeps a few spawned worker processes that import all of that once and then run
stage after stage. A worker runs one stage at a time, so process-wide state (torch's global RNG
and thread count, MLflow's active run) is never shared by two running stages, and each stage seeds
what it uses: results are the same as under `dvc repro`.

DVC stays the record of what is up to date. For a stage whose command is `distillery stage NAME
[--item ITEM]`, the worker (its working directory is the repo, as DVC expects) asks DVC whether
the stage changed, removes its outputs as `dvc repro` does, runs it, and `dvc commit`s it (dep and
out hashes into dvc.lock and the run-cache, outs into the cache, autostage): the same dvc.lock a
`dvc repro` writes. DVC's repo lock, waited for, serialises the workers' DVC steps as it does
parallel `dvc` processes. Other commands run through `dvc repro` unchanged. What this path does
not do is restore a run from DVC's run-cache: a changed stage always runs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import shlex
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

WORKERS_ENV = "DISTILLERY_WORKERS"
# Imported by every worker before its first stage: the libraries most stages use.
WARM_IMPORTS = ("numpy", "torch", "onnxruntime", "mlflow", "components.config",
                "components.training", "flows.stages", "flows.tracking")


class WorkerError(RuntimeError):
    """A stage failed inside a worker, ran past its timeout, or its worker died."""


class WorkerLost(WorkerError):
    """The worker gave no answer: it ran past the timeout or died. It must be replaced."""


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


def parse_stage_cmd(cmd: str) -> StageCall | None:
    """The call a dvc.yaml command makes, or None when it is not a plain `distillery stage`."""
    try:
        words = shlex.split(cmd)
    except ValueError:
        return None
    if len(words) < 3 or words[:2] != ["distillery", "stage"] or words[2].startswith("-"):
        return None
    options: dict[str, str] = {}
    rest = words[3:]
    while rest:
        if len(rest) < 2 or rest[0] not in ("--item", "--params"):
            return None  # anything else (pipes, &&, other flags): let DVC run it
        options[rest[0][2:]] = rest[1]
        rest = rest[2:]
    return StageCall(words[2], options.get("item"), options.get("params", "params.yaml"))


# --- the worker process -------------------------------------------------------------------------


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


class _Worker:
    def __init__(self, repo: str) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded flow process
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(repo, child), name="distillery-stage")
        self.process.start()
        child.close()
        self.ready = False

    def call(self, job: StageJob, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        if not self.ready:
            self._receive(deadline, f"worker start-up for `{job.address}`")
            self.ready = True
        # plain values only: the worker imports the repo's code, which may not define StageJob
        self.conn.send((asdict(job), env))
        status, message, trace = self._receive(deadline, f"stage `{job.address}`")
        if status != "ok":
            raise WorkerError(f"{message}\n{trace}".strip())
        return message

    def _receive(self, deadline: float, what: str) -> tuple[Any, ...]:
        ready = wait([self.conn, self.process.sentinel], max(0.0, deadline - time.monotonic()))
        if self.conn in ready:
            with contextlib.suppress(EOFError):
                return self.conn.recv()
        if not ready:
            raise WorkerLost(f"{what} ran past its timeout")
        self.process.join(1)
        raise WorkerLost(f"{what}: worker process died (exit {self.process.exitcode})")

    def ask_to_exit(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(None)

    def stop(self, grace_s: float = 5.0) -> None:
        self.ask_to_exit()
        self.process.join(grace_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class StageWorkers:
    """A pool of warm worker processes for the stages of the DVC project at ``repo``."""

    def __init__(self, repo: str | Path, size: int) -> None:
        if size < 1:
            raise ValueError(f"StageWorkers: size must be >= 1, got {size}")
        self.repo = str(Path(repo).resolve())
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self.closed = False
        for _ in range(size):  # started now: their imports overlap the flow's own start-up
            self._idle.put(_Worker(self.repo))

    def run(self, job: StageJob, env: dict[str, str], timeout_s: float) -> dict[str, Any]:
        """Reproduce one stage in an idle worker (waiting for one); what `reproduce` returns.

        Raises `WorkerError` on failure; a worker that timed out or died is replaced, one whose
        stage raised lives on.
        """
        if self.closed:
            raise WorkerError(f"stage `{job.address}`: the worker pool is closed")
        worker = self._idle.get()
        try:
            return worker.call(job, env, timeout_s)
        except WorkerLost:
            worker.stop(grace_s=0)
            worker = _Worker(self.repo)
            raise
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        """Stop every idle worker: all are asked first, so they exit at the same time."""
        self.closed = True
        workers = []
        while True:
            try:
                workers.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for worker in workers:
            worker.ask_to_exit()
        for worker in workers:
            worker.stop()


# Pools the flow opened, by repository: tasks find theirs here (a pool is not a task argument:
# Prefect would try to hash it, and a Dask worker cannot use a pool of the flow's process).
_POOLS: dict[str, StageWorkers] = {}


def pool_for(repo: str | Path) -> StageWorkers | None:
    return _POOLS.get(str(Path(repo).resolve()))


def default_size(widest_group: int) -> int:
    """`DISTILLERY_WORKERS`, else one per core, at most as many as stages can run at once."""
    if os.environ.get(WORKERS_ENV):
        return int(os.environ[WORKERS_ENV])
    return max(1, min(os.cpu_count() or 1, widest_group))


@contextlib.contextmanager
def stage_workers(repo: str | Path, size: int) -> Iterator[StageWorkers | None]:
    """A pool for ``repo`` while the block runs (size 0: no pool).

    When an outer block already opened one for ``repo`` (`distillery run` starts its pool before
    Prefect creates the flow run, so the workers warm up meanwhile), that one is used and left
    for its owner to close.
    """
    if size < 1:
        yield None
        return
    outer = pool_for(repo)
    if outer is not None and not outer.closed:
        yield outer
        return
    pool = StageWorkers(repo, size)
    _POOLS[pool.repo] = pool
    try:
        yield pool
    finally:
        _POOLS.pop(pool.repo, None)
        pool.close()  # also safe after an earlier close()


def remove_outs(outs: list[Path]) -> None:
    """Delete a stage's outputs before it runs, as `dvc repro` does."""
    for path in outs:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
