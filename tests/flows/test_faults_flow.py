"""`distillery run` interrupted mid-stage (SIGTERM, SIGINT, kill -9): the flow owns its children.

Each test runs the real CLI in a tiny workspace whose `distill` is made slow, signals the flow
while `distill` runs in a warm worker, then checks the end state: exit code, dvc.lock, outputs,
MLflow statuses, no worker or server process left, and that a plain re-run completes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from flows.graph import read_graph
from tests.workspace import env_for, make_workspace, run

pytestmark = pytest.mark.slow
STAGE = "distill"


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A tiny workspace with everything upstream of `distill` already reproduced."""
    workspace = make_workspace(tmp_path_factory.mktemp("faults") / "repo")
    run([str(Path(sys.executable).parent / "dvc"), "repro", "ensemble"], workspace)
    return workspace


def set_epochs(repo: Path, epochs: int) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[STAGE]["training"].update(epochs=epochs, patience=epochs)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def lock_entry(repo: Path) -> dict | None:
    lock = yaml.safe_load((repo / "dvc.lock").read_text()) or {}
    return lock.get("stages", {}).get(STAGE)


def mlflow_client(repo: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")


def runs(repo: Path, stage: str, status: str | None = None) -> list:
    client = mlflow_client(repo)
    exp = client.get_experiment_by_name("distillery")
    if exp is None:
        return []
    where = f"tags.`distillery.stage` = '{stage}'"
    if status:
        where += f" and attributes.status = '{status}'"
    return client.search_runs([exp.experiment_id], filter_string=where,
                              order_by=["attributes.start_time DESC"])


def flow_env(repo: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in env_for(repo).items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(home), DISTILLERY_WORKERS="1")
    return env


def start_flow(repo: Path, home: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", STAGE], cwd=repo,
                            env=flow_env(repo, home), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_mid_stage(repo: Path, flow: subprocess.Popen) -> list[psutil.Process]:
    """Block until `distill` runs (its MLflow run is RUNNING); the flow's processes then."""
    deadline = time.monotonic() + 600
    while not runs(repo, STAGE, "RUNNING"):
        if flow.poll() is not None or time.monotonic() > deadline:
            flow.kill()
            pytest.fail(f"`{STAGE}` never started:\n{flow.communicate()[0][-4000:]}")
        time.sleep(0.5)
    time.sleep(2)  # into its epochs
    return psutil.Process(flow.pid).children(recursive=True)


def assert_gone(children: list[psutil.Process], within_s: float = 15) -> None:
    deadline = time.monotonic() + within_s
    alive = children
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    assert not alive, f"left running: {[(p.pid, p.cmdline()[:4]) for p in alive]}"


def assert_reruns(repo: Path, home: Path) -> None:
    set_epochs(repo, 2)
    again = subprocess.run([sys.executable, "-m", "flows.cli", "run", STAGE], cwd=repo,
                           env=flow_env(repo, home), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert lock_entry(repo) is not None
    status = run([str(Path(sys.executable).parent / "dvc"), "status", STAGE], repo).stdout
    assert "changed" not in status, status


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_stage_stops_the_flow_within_seconds_and_commits_nothing(
        repo, tmp_path, sig, code):
    set_epochs(repo, 5000)
    before = lock_entry(repo)
    flow = start_flow(repo, tmp_path / "prefect")
    children = wait_mid_stage(repo, flow)
    assert any("distillery-stage" in " ".join(p.cmdline()) or "multiprocessing" in
               " ".join(p.cmdline()) for p in children), [p.cmdline() for p in children]
    sent = time.monotonic()
    os.kill(flow.pid, sig)
    out, _ = flow.communicate(timeout=120)
    assert time.monotonic() - sent < 60, "the flow took a minute to stop"
    assert flow.returncode == code, out[-4000:]
    assert f"interrupted by {signal.Signals(sig).name}" in out
    assert "Traceback" not in out.splitlines()[-1]
    assert_gone(children)

    assert lock_entry(repo) == before  # nothing of the interrupted stage reached dvc.lock
    node = read_graph(repo).stages[STAGE]
    assert not any((repo / p).exists() for p in node.outs)  # nothing half-made left in place
    assert runs(repo, "pipeline")[0].info.status == "KILLED"
    assert runs(repo, STAGE)[0].info.status in ("KILLED", "FAILED")
    assert not runs(repo, STAGE, "RUNNING")
    assert_reruns(repo, tmp_path / "prefect")


def test_kill_9_of_the_flow_leaves_no_process_and_the_next_run_closes_its_mlflow_run(
        repo, tmp_path):
    set_epochs(repo, 5000)
    before = lock_entry(repo)
    flow = start_flow(repo, tmp_path / "prefect")
    children = wait_mid_stage(repo, flow)
    pipeline = runs(repo, "pipeline", "RUNNING")[0]
    os.kill(flow.pid, signal.SIGKILL)
    flow.communicate(timeout=60)
    assert_gone(children)  # workers (parent-death signal), the temporary server (reaper)

    assert lock_entry(repo) == before
    assert mlflow_client(repo).get_run(pipeline.info.run_id).info.status == "RUNNING"
    assert_reruns(repo, tmp_path / "prefect")  # ... which finds the dead owner's run
    assert mlflow_client(repo).get_run(pipeline.info.run_id).info.status == "FAILED"
    assert not runs(repo, STAGE, "RUNNING")
