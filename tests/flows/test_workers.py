"""Warm stage workers, the pool side: commands they take, timeouts and sizes they enforce."""

from __future__ import annotations

import os

import pytest

from flows.graph import read_graph
from flows.workers import (
    WORKERS_ENV,
    StageCall,
    StageWorkers,
    WorkerError,
    default_size,
    parse_stage_cmd,
    pool_for,
    stage_workers,
)
from tests.flows.helpers_workers import job
from tests.helpers_data import REPO
from tests.workspace import make_workspace


def test_every_dvc_yaml_command_is_a_stage_call_of_its_own_stage():
    for node in read_graph(REPO).stages.values():
        assert parse_stage_cmd(node.cmd) == StageCall(node.stage, node.item), node.cmd


@pytest.mark.parametrize("cmd", [
    "python train.py", "distillery stage", "distillery stage x --force",
    "distillery stage x && rm -rf models", "distillery stage x --item", "distillery 'stage",
    "distillery stage --item y",
])
def test_other_commands_are_left_to_dvc(cmd):
    assert parse_stage_cmd(cmd) is None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("workers") / "repo")


def test_a_stage_past_its_timeout_is_killed_and_its_worker_replaced(workspace, tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    pool = StageWorkers(workspace, 1)
    try:
        first = pool._idle.queue[0].process
        with pytest.raises(WorkerError, match="timeout"):
            pool.run(job("ingest"), env, timeout_s=0.2)  # start-up alone takes longer
        assert not first.is_alive()
        replacement = pool._idle.queue[0].process
        assert replacement is not first and replacement.is_alive()
    finally:
        pool.close()
    assert not replacement.is_alive()


def test_pool_size_must_be_positive(workspace):
    with pytest.raises(ValueError, match="size"):
        StageWorkers(workspace, 0)


def test_pool_size_defaults_to_the_env_else_cores_capped_by_the_widest_group(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "5")
    assert default_size(2) == 5
    monkeypatch.delenv(WORKERS_ENV)
    assert default_size(10_000) == (os.cpu_count() or 1)
    assert default_size(1) == default_size(0) == 1


def test_size_zero_opens_no_pool(workspace):
    with stage_workers(workspace, 0) as pool:
        assert pool is None and pool_for(workspace) is None


@pytest.mark.parametrize("cmd, call", [
    ("bin/stage ingest", StageCall("ingest")),
    ("bin/stage train_teachers --item mlp", StageCall("train_teachers", "mlp")),
    ("./bin/stage prune --params tiny.yaml", StageCall("prune", None, "tiny.yaml")),
])
def test_the_bin_stage_wrapper_is_a_stage_call_like_distillery_stage(cmd, call):
    assert parse_stage_cmd(cmd) == call


@pytest.mark.parametrize("cmd", ["bin/stage", "bin/stage --item x", "bin/stage x | tee log",
                                 "sh bin/stage x", "bin/stagex x"])
def test_other_wrapper_commands_are_left_to_dvc(cmd):
    assert parse_stage_cmd(cmd) is None


# A parent that starts one worker (from its main thread, or another thread: no parent-death
# signal then, only the watchdog), waits for it to be ready, prints its pid and sleeps.
PARENT = """
import sys, threading, time
from flows.workers import _Worker
where = sys.argv[2]
box = []
start = lambda: box.append(_Worker(sys.argv[1]))
if where == "main":
    start()
else:
    t = threading.Thread(target=start); t.start(); t.join()
box[0]._receive(time.monotonic() + 120, "start-up")
print(box[0].process.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("where", ["main", "thread"])
def test_a_worker_dies_within_seconds_when_its_parent_is_killed(workspace, where):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(workspace), where],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        worker = psutil.Process(int(parent.stdout.readline()))
        assert worker.is_running() and worker.ppid() == parent.pid
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.1)
    else:
        worker.kill()
        pytest.fail(f"worker {worker.pid} still runs 10 s after its parent was killed")


def test_terminate_stops_a_busy_worker_and_its_process_group(workspace, tmp_path):
    import threading

    import psutil

    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    pool = StageWorkers(workspace, 1)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pool.run(job("ingest"), env, timeout_s=300)
        except WorkerError as e:
            errors.append(e)

    (pid,) = pool.pids()
    runner = threading.Thread(target=run)
    runner.start()
    try:
        assert pool.terminate() == [pid]
        runner.join(30)
        assert not runner.is_alive() and errors  # the caller hears of it, nothing replaces it
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        assert pool.pids() == [] and pool.closed
        with pytest.raises(WorkerError, match="closed"):
            pool.run(job("ingest"), env, timeout_s=5)
    finally:
        pool.close()


def test_the_logging_spawn_target_is_found_by_reference():
    import pickle

    from flows.workers import serve_with_logs

    assert pickle.loads(pickle.dumps(serve_with_logs)) is serve_with_logs


def test_the_log_pipe_sends_distillery_records_and_stderr_lines_to_the_flow():
    """#15, the worker side: what a stage logs or prints to stderr reaches the flow's end of the
    pipe, at its level, split into lines and cut at MAX_LINE_CHARS."""
    import io
    import logging
    import multiprocessing

    from flows.workers import MAX_LINE_CHARS, _LogPipe, _StderrLines

    flow_end, worker_end = multiprocessing.Pipe(duplex=False)
    pipe = _LogPipe(worker_end)
    logger = logging.getLogger("distillery.test_workers")
    logger.addHandler(pipe)
    logger.setLevel(logging.DEBUG)
    try:
        logger.info("mlp: epoch %d/%d", 1, 2)
        logger.debug("not forwarded: below INFO")
        logger.warning("two\nlines")
    finally:
        logger.removeHandler(pipe)
    real = io.StringIO()
    stderr = _StderrLines(real, pipe)
    stderr.write("50%|#####     |\r100%|##########|\nhalf a ")
    stderr.write("line\n" + "x" * (MAX_LINE_CHARS + 10))
    received = []
    while flow_end.poll():
        received.append(flow_end.recv())
    assert received == [
        (logging.INFO, "distillery.test_workers INFO: mlp: epoch 1/2"),
        (logging.WARNING, "distillery.test_workers WARNING: two"),
        (logging.WARNING, "lines"),
        (logging.INFO, "50%|#####     |"), (logging.INFO, "100%|##########|"),
        (logging.INFO, "half a line"), (logging.INFO, "x" * MAX_LINE_CHARS),
    ]
    assert real.getvalue().startswith("50%|#####     |\r100%")  # the real stderr gets it all
    assert stderr.isatty() is False  # the stream's own answers: a bar only on a terminal


@pytest.mark.slow
def test_a_stage_in_a_worker_hands_its_epoch_log_lines_to_the_caller(tmp_path):
    """#15: `distillery.training` logs one INFO line per epoch (no terminal); the pool's caller
    gets them for the job that ran, the flow then forwards them to Prefect."""
    workspace = make_workspace(tmp_path / "repo")  # its own: the shared one stays unreproduced
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "DISTILLERY_PROGRESS": "0"}
    logs: dict[str, list[str]] = {}
    with stage_workers(workspace, 1) as pool:
        for address in read_graph(workspace).upstream_closure(["train_teachers@mlp"]).stages:
            lines = logs.setdefault(address, [])
            pool.run(job(address), env, timeout_s=600,
                     log=lambda level, line, lines=lines: lines.append(line))
    epochs = [line for line in logs["train_teachers@mlp"] if "distillery.training INFO" in line]
    assert epochs and all("epoch" in line for line in epochs), logs["train_teachers@mlp"]
    assert not any("distillery.training" in line for line in logs["ingest"] + logs["validate"])
