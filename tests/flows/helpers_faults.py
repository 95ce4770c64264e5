"""Fault injection with real processes: a stage's process group killed, a real `mlflow server`
stopped by its PID, a write limit (`RLIMIT_FSIZE`) on a `dvc` or stage process.

Waiting is on conditions (a temporary folder appearing, a port answering), with a deadline only
to fail instead of hanging; no test asserts on a duration.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.workspace import BIN, env_for

# A real `mlflow server` answers a failed call at once, and the stage must not spend minutes in
# MLflow's retry loop once it has been stopped.
FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def fsize_limit(max_bytes: int) -> Callable[[], None]:
    """A `preexec_fn`: no file of the process (and its children) may grow past ``max_bytes``.

    Only the soft limit: a child may raise it again (`ulimit -f unlimited`), as the stage of the
    disk-full-in-DVC's-cache test does so that only DVC's own copy fails.
    """
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, resource.RLIM_INFINITY))

    return limit


def start(cmd: list[str], workspace: Path, env: dict[str, str] | None = None,
          preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen:
    """``cmd`` in ``workspace`` as the leader of its own process group (so a kill ends it all)."""
    return subprocess.Popen(cmd, cwd=workspace, env={**env_for(workspace), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=preexec_fn is None, preexec_fn=_session(preexec_fn))


def _session(preexec_fn: Callable[[], None] | None) -> Callable[[], None] | None:
    if preexec_fn is None:
        return None

    def both() -> None:
        os.setsid()
        preexec_fn()

    return both


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen | None = None,
             deadline_s: float = 300.0) -> None:
    """Poll ``condition``; fail if ``proc`` exits first or the deadline passes."""
    end = time.monotonic() + deadline_s
    while not condition():
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process exited ({proc.returncode}) before the fault point:\n"
                                 f"{out[-4000:]}")
        if time.monotonic() > end:
            raise AssertionError(f"no fault point within {deadline_s:g} s")
        time.sleep(0.02)


def temp_beside(out: Path) -> Callable[[], bool]:
    """True once an atomic write of ``out`` (`.NAME.*.tmp`) is under way."""
    return lambda: any(out.parent.glob(f".{out.name}.*.tmp")) if out.parent.exists() else False


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> str:
    """Send ``sig`` to ``proc``'s whole process group and reap it; return its output once no
    process of the group is left (a killed process takes a moment to go)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    wait_for(lambda: not group_alive(proc.pid), deadline_s=60)
    return out


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real `mlflow server` (sqlite store in ``root``) on a free loopback port; yields its URL
    and process. Stopped (whole group) on exit if the test has not stopped it."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "mlartifacts")],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url), proc, deadline_s=240)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
