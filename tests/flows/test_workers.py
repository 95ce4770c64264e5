"""Warm stage workers: commands they take, stages they run, failures and timeouts they survive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.graph import read_graph
from flows.workers import (
    StageCall,
    StageJob,
    StageWorkers,
    WorkerError,
    parse_stage_cmd,
    stage_workers,
)
from tests.conftest import REPO
from tests.workspace import make_workspace

DVC = str(Path(sys.executable).parent / "dvc")


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


def test_graph_lists_the_outputs_dvc_removes_before_a_run():
    graph = read_graph(REPO)
    assert graph.stages["ingest"].outs == ("data/prepared",)
    assert set(graph.stages["train_teachers@mlp"].outs) == {
        "models/teachers/mlp", "metrics/teachers/mlp.json"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("workers") / "repo")


def job(address: str) -> StageJob:
    node = read_graph(REPO).stages[address]
    return StageJob(address, StageCall(node.stage, node.item), node.outs)


def test_a_worker_reproduces_like_dvc_and_survives_a_failed_stage(workspace, tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    with stage_workers(workspace, 1) as pool:
        with pytest.raises(WorkerError, match="data/prepared"):  # nothing ingested yet
            pool.run(job("validate"), env, timeout_s=120)
        ran = pool.run(job("ingest"), env, timeout_s=120)
        assert ran["status"] == "ran" and ran["stage_s"] > 0 and ran["dvc_s"] > 0
        assert pool.run(job("ingest"), env, timeout_s=120)["status"] == "skipped"  # up to date
    assert (workspace / "data" / "prepared" / "manifest.json").exists()
    status = subprocess.run([DVC, "status", "--json", "ingest"], cwd=workspace,
                            capture_output=True, text=True, check=True).stdout
    assert json.loads(status) == {}  # dvc.lock holds the stage as `dvc repro` would


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
