"""retrain: schedule config, the deployment's cron, data gate, I/O retries, push."""

from __future__ import annotations

import time

import pytest
import yaml

import flows.retrain as retrain_module
from components.config import ScheduleConfig
from flows.retrain import DataRejected, apply_deployment, load_schedule, retrain


def test_schedule_defaults_to_monday_3am_utc(tmp_path):
    cfg = load_schedule(tmp_path / "missing.yaml")
    assert (cfg.cron, cfg.timezone, cfg.deployment) == ("0 3 * * 1", "UTC", "weekly")


def test_schedule_reads_params_and_rejects_unknown_keys(tmp_path):
    path = tmp_path / "params.yaml"
    cfg = {"schedule": {"cron": "30 1 * * *", "timezone": "Europe/Paris"}}
    path.write_text(yaml.safe_dump(cfg))
    assert load_schedule(path).cron == "30 1 * * *"
    path.write_text(yaml.safe_dump({"schedule": {"crontab": "x"}}))
    with pytest.raises(ValueError, match="crontab"):
        load_schedule(path)


def flow_tasks(state):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:  # task run states reach the API through batched events: poll briefly
            run = client.read_flow_run(state.state_details.flow_run_id)
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[run.id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200)
            if (tasks and all(t.state and t.state.is_final() for t in tasks)) or (
                    time.monotonic() > deadline):
                return run, {t.name.rsplit("-", 1)[0]: t for t in tasks}
            time.sleep(0.5)


@pytest.mark.slow
def test_deployment_carries_the_configured_cron(servers, tmp_path):
    from prefect.client.orchestration import get_client

    cfg = ScheduleConfig(cron="15 4 * * 2", timezone="Europe/Berlin", deployment="test-weekly")
    deployment_id = apply_deployment(cfg, tmp_path)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
    assert deployment.name == "test-weekly"
    assert [s.schedule.cron for s in deployment.schedules] == ["15 4 * * 2"]
    assert deployment.schedules[0].schedule.timezone == "Europe/Berlin"
    assert deployment.parameters["repo"] == str(tmp_path.resolve())


@pytest.mark.slow
def test_pull_retries_then_fails_the_run(servers, tiny_repo, monkeypatch):
    monkeypatch.setattr(retrain_module, "pull_data",
                        retrain_module.pull_data.with_options(retry_delay_seconds=0))
    config = tiny_repo / ".dvc" / "config"
    good = config.read_text()
    # dvc-s3 is not installed: every pull attempt fails the same way, offline
    config.write_text(good.replace("url = ", "url = s3://no-such-bucket/"))
    try:
        state = retrain(repo=str(tiny_repo), return_state=True)
    finally:
        config.write_text(good)
    run, tasks = flow_tasks(state)
    assert run.state.type.value == "FAILED"
    assert tasks["pull_data"].run_count == retrain_module.IO_RETRIES + 1
    assert "compression_pipeline" not in str(tasks)


@pytest.mark.slow
def test_bad_data_stops_retrain_before_training(servers, tiny_repo):
    params_path = tiny_repo / "params.yaml"
    good = params_path.read_text()
    params = yaml.safe_load(good)
    params["validate"]["value_max"] = 0.25
    params_path.write_text(yaml.safe_dump(params))
    try:
        state = retrain(repo=str(tiny_repo), push=False, return_state=True)
    finally:
        params_path.write_text(good)
    run, tasks = flow_tasks(state)
    assert run.state.type.value == "FAILED"
    assert tasks["check_data"].state.type.value == "FAILED"
    with pytest.raises(DataRejected, match="nothing trained"):
        state.result()
    assert not any(n.startswith("train_teachers") for n in tasks)


@pytest.mark.slow
def test_retrain_pulls_runs_and_pushes(servers, tiny_repo):
    state = retrain(repo=str(tiny_repo), return_state=True)
    run, tasks = flow_tasks(state)
    assert run.state.type.value == "COMPLETED"
    assert {"pull_data", "check_data", "push_data"} <= set(tasks)
    remote = tiny_repo.parent / (tiny_repo.name + "-remote")
    assert any(remote.rglob("*")), "dvc push wrote nothing to the remote"
