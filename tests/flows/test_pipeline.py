"""compression_pipeline: logic tests without a server, then real runs on a tiny clone."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.graph import StageNode, read_graph
from flows.pipeline import (
    compression_pipeline,
    pipeline_flow,
    stage_timeout,
    tracking_env,
)
from tests.helpers_data import REPO

DVC = str(Path(sys.executable).parent / "dvc")


def test_stage_timeout_prefers_address_then_stage_then_default(monkeypatch):
    node = StageNode("train_teachers@mlp", "train_teachers", "mlp", "true", ())
    monkeypatch.delenv("DISTILLERY_STAGE_TIMEOUT_S", raising=False)
    assert stage_timeout(node, 50, {"train_teachers": 20, "train_teachers@mlp": 10}) == 10
    assert stage_timeout(node, 50, {"train_teachers": 20}) == 20
    assert stage_timeout(node, 50, None) == 50
    monkeypatch.setenv("DISTILLERY_STAGE_TIMEOUT_S", "7")
    assert stage_timeout(node, None, None) == 7


def test_tracking_env_makes_the_default_sqlite_store_absolute(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking_env(tmp_path) as uri:
        assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_a_pipeline_run_whose_process_died_is_marked_failed_and_its_stage_outs_quarantined(
        tmp_path):
    import os

    import mlflow
    import psutil

    from flows.pipeline import HOST_TAG, PID_TAG, STARTED_TAG, fail_orphaned_runs, record_owner

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("orphans")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    crashed = client.create_run(exp, tags={"distillery.stage": "pipeline", PID_TAG: str(dead.pid),
                                           STARTED_TAG: "1.0", HOST_TAG: os.uname().nodename})
    stage = client.create_run(exp, tags={"distillery.stage": "ensemble",
                                         "mlflow.parentRunId": crashed.info.run_id})
    live = client.create_run(exp, tags={"distillery.stage": "pipeline"})
    record_owner(live.info.run_id, uri)  # this process: alive
    assert client.get_run(live.info.run_id).data.tags[PID_TAG] == str(psutil.Process().pid)
    node = read_graph(REPO).stages["ensemble"]
    for out in node.outs:  # what the killed stage left half-written
        (tmp_path / out).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / out).write_text("half")

    assert fail_orphaned_runs("orphans", uri, tmp_path, read_graph(REPO)) == [crashed.info.run_id]
    assert client.get_run(crashed.info.run_id).info.status == "FAILED"
    assert client.get_run(stage.info.run_id).info.status == "FAILED"
    assert client.get_run(live.info.run_id).info.status == "RUNNING"
    assert not any((tmp_path / out).exists() for out in node.outs)
    assert all((tmp_path / "reports/failed/ensemble" / Path(out).name).read_text() == "half"
               for out in node.outs)
    assert fail_orphaned_runs("orphans", uri, tmp_path) == []  # done once


def test_sigterm_in_the_flow_body_stops_the_workers_and_is_reported(tmp_path):
    import os
    import signal

    import psutil

    from flows.pipeline import stop_on_signals
    from flows.workers import stage_workers
    from tests.workspace import make_workspace

    repo = make_workspace(tmp_path / "repo")
    before = signal.getsignal(signal.SIGTERM)
    with stage_workers(repo, 1) as pool, stop_on_signals(repo) as caught:
        (pid,) = pool.pids()
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (main) thread: handled here
        assert caught == {"signal": signal.SIGTERM}
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        assert pool.closed
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_in_the_flow_body_stops_a_running_dvc_repro_stage(tmp_path):
    """#14: the `dvc repro` processes (workers=0, Dask, other commands) outlived a SIGTERM."""
    import os
    import signal
    import threading

    from flows.dvc_ops import StageFailed, read_lock_stages, run_dvc
    from flows.pipeline import stop_on_signals

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run_dvc(["init", "-q"], tmp_path)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  sleepy:\n    cmd: touch started && sleep 120 && echo late > slept.txt\n"
        "    outs: [slept.txt]\n")
    errors: list[BaseException] = []

    def repro() -> None:
        try:
            run_dvc(["repro", "sleepy"], tmp_path)
        except StageFailed as e:
            errors.append(e)

    runner = threading.Thread(target=repro)
    with stop_on_signals(tmp_path) as caught:
        runner.start()
        for _ in range(600):
            if (tmp_path / "started").exists() or not runner.is_alive():
                break
            runner.join(0.1)
        assert (tmp_path / "started").exists(), "the stage's command never started"
        os.kill(os.getpid(), signal.SIGTERM)  # handled in this (main) thread
        runner.join(60)
    assert caught == {"signal": signal.SIGTERM}
    assert not runner.is_alive() and errors and "stopped by SIGTERM" in str(errors[0])
    assert "sleepy" not in read_lock_stages(tmp_path)


# --- real runs: a Prefect server, an MLflow server, a tiny clone ---------------------------------


def flow_run_and_tasks(state):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    flow_run_id = state.state_details.flow_run_id
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:  # task run states reach the API through batched events: poll briefly
            flow_run = client.read_flow_run(flow_run_id)
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200)
            final = tasks and all(t.state and t.state.is_final() for t in tasks)
            if final or time.monotonic() > deadline:
                return flow_run, {t.name: t for t in tasks}
            time.sleep(0.5)


def dvc(repo: Path, *args: str) -> str:
    return subprocess.run([DVC, *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout


def teacher_metrics(repo: Path) -> dict[str, dict]:
    out = {}
    for path in sorted((repo / "metrics" / "teachers").glob("*.json")):
        data = json.loads(path.read_text())
        out[path.stem] = {k: v for k, v in data.items() if "seconds" not in k}
    return out


@pytest.mark.slow
def test_pipeline_runs_each_stage_once_then_skips_all(servers, tiny_repo, monkeypatch):
    from prefect.task_runners import ThreadPoolTaskRunner

    monkeypatch.setenv("DISTILLERY_PROGRESS", "0")  # log lines, not a bar, even on a terminal
    order = read_graph(tiny_repo).order
    serial = compression_pipeline.with_options(task_runner=ThreadPoolTaskRunner(max_workers=1))
    state = serial(repo=str(tiny_repo), return_state=True)
    flow_run, tasks = flow_run_and_tasks(state)
    assert flow_run.state.type.value == "COMPLETED"
    assert sorted(tasks) == sorted(order)
    assert all(t.state.type.value == "COMPLETED" for t in tasks.values())
    records = state.result()
    assert [r.name for r in records] == order
    assert {r.status for r in records} == {"ran"}
    assert all(r.mlflow_run_id and r.inputs for r in records)
    # #15: what a stage in a warm worker logged (an INFO line per epoch) is in its task's logs
    assert any("distillery.training INFO" in m and "epoch" in m
               for m in task_logs(tasks["train_teachers@mlp"].id))

    # DVC's record is exactly that of `dvc repro`: clean status, and a plain repro changes nothing
    assert json.loads(dvc(tiny_repo, "status", "--json")) == {}
    lock = (tiny_repo / "dvc.lock").read_text()
    assert list(yaml.safe_load(lock)["stages"]) == order
    dvc(tiny_repo, "repro")
    assert (tiny_repo / "dvc.lock").read_text() == lock

    import mlflow

    client = mlflow.MlflowClient(servers["MLFLOW_TRACKING_URI"])
    parents = {client.get_run(r.mlflow_run_id).data.tags["mlflow.parentRunId"] for r in records}
    assert len(parents) == 1

    # the registry holds one version per registered variant, and the gated `champion`
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())["register"]
    register = json.loads((tiny_repo / "reports" / "register.json").read_text())
    versions, champion = registry_state(params["model_name"])
    # variants quantize dropped (int8 slower than fp32 at 8x8) are reported missing
    assert len(versions) == len(register["versions"]) == \
        len(params["variants"]) - len(register["missing"])
    assert set(register["versions"]) | set(register["missing"]) == set(params["variants"])
    assert register["decision"]["outcome"] == "champion"
    assert champion == str(register["champion_version"])
    summary = json.loads((tiny_repo / "metrics" / "register.json").read_text())
    assert summary["outcome"] == "champion" and "versions" not in summary

    again = pipeline_flow()(repo=str(tiny_repo), return_state=True)
    assert {r.status for r in again.result()} == {"skipped"}
    _, tasks = flow_run_and_tasks(again)
    assert sorted(tasks) == sorted(order)
    (tiny_repo / "serial_metrics.json").write_text(json.dumps(teacher_metrics(tiny_repo)))


@pytest.mark.slow
def test_teachers_on_two_dask_workers_match_serial_training(servers, tiny_repo):
    from distributed import LocalCluster

    serial_file = tiny_repo / "serial_metrics.json"
    if not serial_file.exists():
        pytest.skip("needs test_pipeline_runs_each_stage_once_then_skips_all first")
    serial = json.loads(serial_file.read_text())
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, host="127.0.0.1") as cluster:
        state = pipeline_flow(cluster.scheduler_address)(
            repo=str(tiny_repo), targets=["train_teachers"], force=True, return_state=True)
    flow_run, tasks = flow_run_and_tasks(state)
    assert flow_run.state.type.value == "COMPLETED"
    teachers = [n for n in tasks if n.startswith("train_teachers@")]
    assert len(teachers) == len(serial) >= 2
    assert {r.name: r.status for r in state.result() if r.name in teachers} == dict.fromkeys(
        teachers, "ran")
    assert _close(teacher_metrics(tiny_repo), serial)
    # the targets are up to date; downstream stages are stale (forced teachers), as with DVC
    stale = json.loads(dvc(tiny_repo, "status", "--json"))
    assert not any(name.startswith("train_teachers@") for name in stale)


def _close(a: dict, b: dict) -> bool:
    """Same accuracies, losses equal to float noise (1 vs 2 intra-op threads)."""
    for name in b:
        for key, value in b[name].items():
            if isinstance(value, float):
                assert a[name][key] == pytest.approx(value, rel=1e-4, abs=1e-6), (name, key)
            else:
                assert a[name][key] == value, (name, key)
    return True


def registry_state(name: str) -> tuple[list[str], str | None]:
    """(all version numbers, champion version) of ``name`` in the tracking server's registry."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    versions = sorted(v.version for v in client.search_model_versions(f"name = '{name}'"))
    try:
        champion = client.get_model_version_by_alias(name, "champion").version
    except MlflowException:
        champion = None
    return versions, champion


@pytest.mark.slow
def test_a_failing_stage_fails_the_flow_and_notifies(servers, tiny_repo, apprise_inbox,
                                                     monkeypatch):
    url, received = apprise_inbox
    monkeypatch.setenv("DISTILLERY_APPRISE_URL", url)
    params_path = tiny_repo / "params.yaml"
    good = params_path.read_text()
    params = yaml.safe_load(good)
    params["validate"]["value_max"] = 0.25  # the data exceed it: validate must reject them
    params_path.write_text(yaml.safe_dump(params))
    registry_before = registry_state(params["register"]["model_name"])
    try:
        state = pipeline_flow()(repo=str(tiny_repo), return_state=True)
    finally:
        params_path.write_text(good)
    assert registry_state(params["register"]["model_name"]) == registry_before  # no promotion
    flow_run, tasks = flow_run_and_tasks(state)
    assert flow_run.state.type.value == "FAILED"
    assert tasks["validate"].state.type.value == "FAILED"
    upstream = read_graph(tiny_repo).upstream_closure(["validate"]).stages  # ran: ok or failed
    downstream = [n for n in tasks if n not in upstream]
    assert downstream and all(tasks[n].state.type.value != "COMPLETED" for n in downstream)
    assert any("validate" in r["title"] for r in received)
    assert all(tasks[n].run_count <= 1 for n in tasks)  # no retries on training stages


def test_only_registry_stages_are_retried_with_back_off():
    from flows.pipeline import IO_STAGES, plan

    tasks = plan(read_graph(REPO))
    assert {name for name, t in tasks.items() if t.retries} == IO_STAGES == {"register"}
    assert tasks["register"].retry_delay_seconds[0] < tasks["register"].retry_delay_seconds[-1]
    assert all(t.retries == 0 for n, t in tasks.items() if n.startswith("train_teachers"))


CHATTY_DVC_YAML = """\
stages:
  chatty:
    cmd: bash -c 'for i in $(seq 1 250); do echo "chatty epoch $i/250" >&2; done;
      echo ok > said.txt'
    outs: [said.txt]
"""


def task_logs(task_run_id) -> list[str]:
    """The messages of a task run's logs, as the Prefect API holds them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)  # the log worker sends in batches
    logs: list = []
    with get_client(sync_client=True) as client:
        while True:  # pages of the API's largest limit
            page = client.read_logs(
                LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id])),
                limit=200, offset=len(logs))
            logs += page
            if len(page) < 200:
                return [log.message for log in logs]


def test_a_dvc_repro_stages_output_reaches_its_prefect_task_run_logs(servers, tmp_path):
    """#15: the Prefect logs of a stage said only "Finished in state Completed()"."""
    from prefect import flow

    from flows.dvc_ops import run_dvc
    from flows.pipeline import STAGE_LOG_LINES, reproduce_stage

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run_dvc(["init", "-q"], tmp_path)
    (tmp_path / "dvc.yaml").write_text(CHATTY_DVC_YAML)
    node = read_graph(tmp_path).stages["chatty"]

    @flow(name="one-stage")
    def one_stage(repo: str):
        return reproduce_stage.with_options(name="chatty", task_run_name="chatty")(
            node, repo, {}, "chatty-test", 120.0)

    state = one_stage(str(tmp_path), return_state=True)
    assert state.is_completed()
    _, tasks = flow_run_and_tasks(state)
    messages = task_logs(tasks["chatty"].id)
    epochs = [m for m in messages if m.startswith("chatty epoch")]
    assert epochs[-1] == "chatty epoch 250/250"
    # bounded: the last STAGE_LOG_LINES lines of the output, after a note of what was left out
    assert len(epochs) <= STAGE_LOG_LINES and "chatty epoch 1/250" not in epochs
    assert any("earlier line(s) of its log left out" in m for m in messages)
