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
it does parallel `dvc` processes; DVC's read/write lock on the stage's deps and outs
(`.dvc/tmp/rwlock`, what `dvc repro` holds while a command runs) is held from the status check to
the commit, so a `dvc repro` started beside the flow fails at once on a stage a worker is running
("... is busy, it is being blocked by"). What it does not do is restore a run from DVC's
run-cache: a changed stage always runs.

A worker never outlives the flow that started it: it leads its own process group (the flow stops
it, stage subprocesses included, with one `killpg`), asks Linux for SIGKILL when the flow dies
(`PR_SET_PDEATHSIG`), and a watchdog thread ends the group when its parent pid changes (other
systems, and workers started from a thread other than the flow's main one, see `_serve`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
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

    from flows.dvc_ops import read_lock_stages, verify_commit
    from flows.stages import run_stage

    start = time.perf_counter()
    with stage_rwlock(job.address):
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
        before = read_lock_stages(".")
        with Repo(".", _wait_for_lock=True) as repo, repo.scm_context(quiet=True):
            repo.commit(job.address, force=True)  # autostage as `dvc repro` does, when configured
        verify_commit(".", before)  # a full disk can cut DVC's cache copy short, silently
    return {"status": "ran", "dvc_s": round(dvc_s + _since(start), 3), "stage_s": stage_s}


@contextlib.contextmanager
def stage_rwlock(address: str, repo_root: str | Path = ".") -> Iterator[None]:
    """Hold DVC's read lock on the stage's deps and write lock on its outs, as `dvc repro` does
    while the stage's command runs; DVC's own status and commit inside re-enter it (same pid and
    command). Raises DVC's `LockError` naming the busy path when another process holds one."""
    from dvc.dependency.db import AbstractDependency
    from dvc.dependency.repo import RepoDependency
    from dvc.repo import Repo, lock_repo
    from dvc.rwlock import rwlock

    with Repo(str(repo_root), _wait_for_lock=True) as repo:
        stack = contextlib.ExitStack()
        with lock_repo(repo):  # DVC edits the rwlock under the repo lock
            (info,) = repo.stage.collect_granular(address)
            stage = info.stage
            stack.enter_context(rwlock(
                repo.tmp_dir, repo.fs, " ".join(sys.argv),  # the command DVC's own calls record
                [d.fs_path for d in stage.deps  # DVC's own choice of deps (`rwlocked`)
                 if not isinstance(d, RepoDependency | AbstractDependency)],
                [o.fs_path for o in stage.outs],
                repo.config["core"].get("hardlink_lock", False)))
        with stack:
            yield


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def _serve(repo: str, conn: Connection, parent: int | None = None,
           pdeathsig: bool = False) -> None:  # pragma: no cover - runs in the child
    """Serve stage jobs from ``conn`` until told to exit; die with ``parent``.

    ``pdeathsig``: Linux sends SIGKILL when the *thread* that started this process ends, so the
    flow asks for it only from its main thread; the watchdog covers every other case.
    """
    os.setsid()  # its own process group: the flow stops the worker and its subprocesses at once
    parent = parent or os.getppid()
    # what DVC's rwlock records as the holder: "(PID n): distillery stage worker of flow m"
    sys.argv = [f"distillery stage worker of flow {parent}"]
    if pdeathsig:
        die_with_parent()
    threading.Thread(target=watch_parent, args=(parent,), name="parent-watchdog",
                     daemon=True).start()
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
            if isinstance(e, KeyboardInterrupt):  # SIGTERM from the flow (`StageTerminated`)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)  # the stage cleaned up; the flow is stopping, take no more jobs
        else:
            conn.send(("ok", status, ""))
        finally:
            for key in env:
                os.environ.pop(key, None)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent ends; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(parent: int, interval_s: float = 0.5) -> None:  # pragma: no cover - child
    """Kill this process group once ``parent`` is no longer this process's parent (it died)."""
    while os.getppid() == parent:
        time.sleep(interval_s)
    with contextlib.suppress(OSError):
        os.killpg(os.getpgid(0), signal.SIGKILL)
    os._exit(1)


def alive(ident: int, group: bool = False) -> bool:
    """Whether process ``ident`` (or, with ``group``, any process of group ``ident``) exists:
    signal 0 reaches it (one we may not signal exists too)."""
    try:
        (os.killpg if group else os.kill)(ident, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_when_orphaned(parent: int, pids: list[int], interval_s: float = 0.5) -> None:
    """Run as its own small process: once ``parent`` dies (kill -9 included), end ``pids``.

    For the children of the flow that cannot watch it themselves (Prefect's temporary API
    server). Returns at once when all ``pids`` are gone on their own."""
    while os.getppid() == parent and any(map(alive, pids)):
        time.sleep(interval_s)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in filter(alive, pids):
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while any(map(alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.1)


def remove_outs(outs: list[Path]) -> None:
    """Delete a stage's outputs before it runs, as `dvc repro` does."""
    for path in outs:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
