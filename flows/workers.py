"""Warm stage workers: `distillery stage` commands run in long-lived processes.

A fresh stage process spends about 4 s before its first line of work (Python, torch, MLflow,
ONNX Runtime imports); over the chain's twelve stages that was nearly half of a fresh `dvc repro`.
The flow therefore keeps a few spawned worker processes that import all of that once and then run
stage after stage. A worker runs one stage at a time, so process-wide state (torch's global RNG
and thread count, MLflow's active run) is never shared by two running stages, and each stage seeds
what it uses: results are the same as under `dvc repro`.

DVC stays the record of what is up to date. For a stage whose command is `distillery stage NAME
[--item ITEM]` (or `bin/stage NAME ...`, the repo's wrapper of that command), the worker (its
working directory is the repo, as DVC expects) reproduces it as `dvc repro --single-item` would
and writes the same dvc.lock (`flows.worker_child`, the code that runs inside a worker). Other
commands run through `dvc repro` unchanged. This module is the flow's side: which commands a
worker takes, and the pool of workers, which `terminate` stops at once (SIGTERM, SIGINT).

What a stage logs comes back to the flow, which forwards it to the Prefect run logs: each worker
runs `_serve` under `serve_with_logs`, which sends the records of the `distillery` loggers (INFO
and up) and each line the stage writes to ``sys.stderr`` over a second pipe; `StageWorkers.run`
hands the lines that arrived while a job ran to its caller's ``log``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from flows.worker_child import StageCall, StageJob, _serve, reproduce

__all__ = [  # StageCall, StageJob and reproduce re-exported for flows.pipeline and the tests
    "StageCall", "StageJob", "StageWorkers", "WorkerError", "WorkerLost", "default_size",
    "parse_stage_cmd", "pool_for", "reproduce", "serve_with_logs", "stage_workers",
]

WORKERS_ENV = "DISTILLERY_WORKERS"
MAX_LINE_CHARS = 2000  # a longer log line (a tqdm bar redrawn without newlines) is cut here

LogSink = Callable[[int, str], None]  # (logging level, line), as in `flows.dvc_ops`


class WorkerError(RuntimeError):
    """A stage failed inside a worker, ran past its timeout, or its worker died."""


class WorkerLost(WorkerError):
    """The worker gave no answer: it ran past the timeout or died. It must be replaced."""


# The commands that run `distillery stage`: the installed script, and the repo's sh wrapper
STAGE_COMMANDS = (["distillery", "stage"], ["bin/stage"], ["./bin/stage"])


def parse_stage_cmd(cmd: str) -> StageCall | None:
    """The call a dvc.yaml command makes, or None when it is not a plain `distillery stage`."""
    try:
        words = shlex.split(cmd)
    except ValueError:
        return None
    prefix = next((p for p in STAGE_COMMANDS if words[:len(p)] == p), None)
    if prefix is None or len(words) <= len(prefix) or words[len(prefix)].startswith("-"):
        return None
    name, rest = words[len(prefix)], words[len(prefix) + 1:]
    options: dict[str, str] = {}
    while rest:
        if len(rest) < 2 or rest[0] not in ("--item", "--params"):
            return None  # anything else (pipes, &&, other flags): let DVC run it
        options[rest[0][2:]] = rest[1]
        rest = rest[2:]
    return StageCall(name, options.get("item"), options.get("params", "params.yaml"))


# --- the worker side of the log pipe (runs in the child) ------------------------------------------


class _LogPipe(logging.Handler):
    """Sends log records and stderr lines to the flow: ``(level, line)`` over ``conn``.

    A send blocks only while the pipe is full, and the flow reads it whenever it waits for a
    job; lines written between jobs go to the next one."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
        self.conn = conn
        self.send_lock = threading.Lock()  # Connection.send is not thread-safe

    def send(self, level: int, line: str) -> None:
        with self.send_lock, contextlib.suppress(OSError, ValueError):  # the flow went away
            self.conn.send((level, line[:MAX_LINE_CHARS]))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - logging must never fail the stage
            self.handleError(record)
            return
        for line in text.splitlines():
            self.send(record.levelno, line)


class _StderrLines:
    """``sys.stderr`` that also sends each line (split at newlines and carriage returns) to the
    flow; the worker's real stderr still gets everything."""

    def __init__(self, stream: Any, pipe: _LogPipe) -> None:
        self._stream, self._pipe, self._partial = stream, pipe, ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        with self._lock:
            *lines, self._partial = (self._partial + text).replace("\r", "\n").split("\n")
            if len(self._partial) > MAX_LINE_CHARS:
                lines.append(self._partial)
                self._partial = ""
        for line in lines:
            if line.strip():
                self._pipe.send(logging.INFO, line)
        return written

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding: the stream's
        return getattr(self._stream, name)


def serve_with_logs(repo: str, conn: Connection, log_conn: Connection, parent: int | None = None,
                    pdeathsig: bool = False) -> None:  # pragma: no cover - runs in the child
    """The worker's target: `_serve`, with the `distillery` loggers' records (INFO and up) and
    the lines written to stderr sent to the flow over ``log_conn``."""
    pipe = _LogPipe(log_conn)
    logger = logging.getLogger("distillery")
    logger.addHandler(pipe)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)  # a stage's progress lines are INFO
    sys.stderr = _StderrLines(sys.stderr, pipe)
    _serve(repo, conn, parent, pdeathsig)


# --- the flow side --------------------------------------------------------------------------------


class _Worker:
    def __init__(self, repo: str) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded flow process
        self.conn, child = ctx.Pipe()
        self.logs, child_logs = ctx.Pipe(duplex=False)
        # PR_SET_PDEATHSIG fires when the starting *thread* ends: asked for from the main one only
        main = threading.current_thread() is threading.main_thread()
        self.process = ctx.Process(target=serve_with_logs,
                                   args=(repo, child, child_logs, os.getpid(), main),
                                   name="distillery-stage")
        self.process.start()
        child.close()
        child_logs.close()
        self.ready = False

    def call(self, job: StageJob, env: dict[str, str], timeout_s: float,
             log: LogSink | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        if not self.ready:
            self._receive(deadline, f"worker start-up for `{job.address}`", log)
            self.ready = True
        # plain values only: the worker imports the repo's code, which may not define StageJob
        self.conn.send((asdict(job), env))
        status, message, trace = self._receive(deadline, f"stage `{job.address}`", log)
        if status != "ok":
            raise WorkerError(f"{message}\n{trace}".strip())
        return message

    def _receive(self, deadline: float, what: str, log: LogSink | None = None) -> tuple[Any, ...]:
        """The worker's next answer; meanwhile its log lines go to ``log``."""
        while True:
            waiting = [self.conn, self.process.sentinel, *([self.logs] if self.logs else [])]
            ready = wait(waiting, max(0.0, deadline - time.monotonic()))
            if self.logs in ready:
                self._drain_logs(log)
            if self.conn in ready:
                with contextlib.suppress(EOFError):
                    answer = self.conn.recv()
                    self._drain_logs(log)  # the lines it sent before it answered
                    return answer
                break
            if not ready:
                self._drain_logs(log)
                raise WorkerLost(f"{what} ran past its timeout")
            if self.process.sentinel in ready:
                break
        self._drain_logs(log)
        self.process.join(1)
        raise WorkerLost(f"{what}: worker process died (exit {self.process.exitcode})")

    def _drain_logs(self, log: LogSink | None) -> None:
        """Read every log line waiting in the pipe (None once the worker closed it)."""
        try:
            while self.logs is not None and self.logs.poll():
                level, line = self.logs.recv()
                if log is not None:
                    log(level, line)
        except (EOFError, OSError):
            self.logs = None

    def ask_to_exit(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self.conn.send(None)

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the worker's process group (it leads one), stage subprocesses too."""
        pid = self.process.pid
        if pid is None:
            return
        for send in (os.killpg, os.kill):  # os.kill: a worker not yet past its `setsid`
            with contextlib.suppress(OSError):
                send(pid, sig)

    def stop(self, grace_s: float = 5.0) -> None:
        self.ask_to_exit()
        self.process.join(grace_s)
        if self.process.is_alive():
            self.signal_group(signal.SIGKILL)
            self.process.join()
        self.conn.close()
        if self.logs is not None:
            self.logs.close()


class StageWorkers:
    """A pool of warm worker processes for the stages of the DVC project at ``repo``."""

    def __init__(self, repo: str | Path, size: int) -> None:
        if size < 1:
            raise ValueError(f"StageWorkers: size must be >= 1, got {size}")
        self.repo = str(Path(repo).resolve())
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._started: list[_Worker] = []  # idle or busy: what `terminate` must reach
        self._lock = threading.RLock()  # `terminate` may run in a signal handler
        self.closed = False
        for _ in range(size):  # started now: their imports overlap the flow's own start-up
            self._idle.put(self._start())

    def _start(self) -> _Worker:
        with self._lock:
            worker = _Worker(self.repo)
            self._started.append(worker)
            return worker

    def run(self, job: StageJob, env: dict[str, str], timeout_s: float,
            log: LogSink | None = None) -> dict[str, Any]:
        """Reproduce one stage in an idle worker (waiting for one); what `reproduce` returns.

        ``log`` gets each line the stage logged or wrote to stderr, as it arrives. Raises
        `WorkerError` on failure; a worker that timed out or died is replaced (unless the pool was
        closed meanwhile), one whose stage raised lives on.
        """
        worker = self._idle.get()
        try:
            if self.closed:
                raise WorkerError(f"stage `{job.address}`: the worker pool is closed")
            return worker.call(job, env, timeout_s, log)
        except WorkerLost:
            worker.stop(grace_s=0)
            with self._lock:
                self._started.remove(worker)
            if not self.closed:
                worker = self._start()
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
        for worker in workers:  # back for a `run` still waiting on the queue: it sees `closed`
            self._idle.put(worker)

    def terminate(self, grace_s: float = 3.0) -> list[int]:
        """Stop every worker now, busy ones included: SIGTERM to each process group, SIGKILL to
        those still alive after ``grace_s``. A stage it interrupts fails in its `run` call (the
        flow quarantines its outputs); it commits nothing. Returns the workers' pids."""
        self.closed = True
        with self._lock:
            workers = list(self._started)
        for worker in workers:
            worker.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.signal_group(signal.SIGKILL)
                worker.process.join(1)
        return [w.process.pid for w in workers if w.process.pid]

    def pids(self) -> list[int]:
        """Pids of the workers alive now."""
        with self._lock:
            return [w.process.pid for w in self._started if w.process.is_alive()]


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
