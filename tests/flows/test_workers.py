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
