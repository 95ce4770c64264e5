"""Faults during a stage, with real processes (#14): what the runner and DVC leave behind.

Each test injects one fault into the cheapest stage that shows it and asserts the end state:
dvc.lock, DVC's cache, the outputs, reports/failed, the MLflow run, leftover processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.dvc_ops import changed_stages, missing_from_cache
from tests.flows.helpers_faults import (
    FAST_FAIL,
    fsize_limit,
    group_alive,
    kill_group,
    mlflow_server,
    start,
    temp_beside,
    wait_for,
)
from tests.helpers_data import REPO
from tests.workspace import make_workspace, run

# Runs the real CLI (`distillery stage NAME`) in this interpreter after wrapping `log_stage`, so
# that the stage itself completes and the signal arrives through the OS while it is being
# tracked: a deterministic point in the middle of the stage.
SIGTERM_DURING_TRACKING = """
import os, signal, sys, time
import flows.tracking
from flows.cli import app

def log_then_terminated(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)  # SIGTERM must interrupt this; if it does not, the test fails on the exit

flows.tracking.log_stage = log_then_terminated
sys.argv = ["distillery", "stage", "ingest"]
app()
"""


def lock_stages(ws: Path) -> dict:
    path = ws / "dvc.lock"
    return (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.exists() else {}


def run_statuses(uri: str, stage: str) -> list[str]:
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`distillery.stage` = '{stage}'")
    return [r.info.status for r in runs]


def stage_folder(tmp_path: Path) -> Path:
    """The repo's params.yaml and dvc.yaml in ``tmp_path``: enough for `distillery stage`."""
    for name in ("params.yaml", "dvc.yaml"):
        (tmp_path / name).write_text((REPO / name).read_text())
    return tmp_path


@pytest.mark.slow
def test_sigterm_during_a_stage_quarantines_and_ends_the_run_killed(tmp_path):
    ws = stage_folder(tmp_path)
    proc = subprocess.run([sys.executable, "-c", SIGTERM_DURING_TRACKING], cwd=ws,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO),
                               "MLFLOW_TRACKING_URI": f"sqlite:///{ws / 'mlflow.db'}"})
    assert proc.returncode not in (0, -signal.SIGTERM), proc.stderr[-2000:]
    assert not (ws / "data/prepared").exists()  # nothing published
    assert (ws / "reports/failed/ingest/prepared/manifest.json").exists()
    assert run_statuses(f"sqlite:///{ws / 'mlflow.db'}", "ingest") == ["KILLED"]


@pytest.mark.slow
def test_a_full_disk_fails_the_stage_naming_it_and_publishes_nothing(tmp_path, monkeypatch):
    """RLIMIT_FSIZE: no file of the stage may pass 20 kB; ingest's train.npz is ~50 kB."""
    ws = stage_folder(tmp_path)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    # MLflow's file store: its files stay tiny, so only the stage's own write hits the limit
    store = f"file://{ws / 'mlruns'}"
    proc = subprocess.run([str(Path(sys.executable).parent / "distillery"), "stage", "ingest"],
                          cwd=ws, capture_output=True, text=True, timeout=300,
                          preexec_fn=fsize_limit(20_000),
                          env={**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": store})
    assert proc.returncode == 1
    assert "File too large: stage `ingest` could not write its outputs" in proc.stderr
    assert "train.npz" in proc.stderr  # and the file it was writing
    assert "data/prepared" in proc.stderr
    assert not (ws / "data/prepared").exists()
    assert not list((ws / "data").glob(".prepared.*"))  # the atomic folder cleaned itself up
    assert run_statuses(store, "ingest") == ["FAILED"]


@pytest.mark.slow
def test_kill_9_mid_stage_leaves_dvc_lock_and_status_truthful_and_a_rerun_completes(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    report = ws / "reports/validate"
    proc = start(["dvc", "repro", "validate"], ws)
    wait_for(temp_beside(report), proc)  # validate is building its report folder
    kill_group(proc)
    assert not group_alive(proc.pid)  # DVC, the stage and anything they started are gone

    locked = lock_stages(ws)
    assert "ingest" in locked and "validate" not in locked  # the killed stage was not recorded
    assert missing_from_cache(ws) == {}  # what is recorded is in the cache
    assert not report.exists() and not (ws / "metrics/validate.json").exists()
    assert list(report.parent.glob(".validate.*.tmp"))  # kill -9: the half-built folder stays
    assert "validate" in changed_stages(ws, ["validate"])  # truthful
    assert run_statuses(f"sqlite:///{ws / 'mlflow.db'}", "validate") == ["RUNNING"]

    run(["dvc", "repro", "validate"], ws)  # a plain re-run completes ...
    assert not list(report.parent.glob(".validate.*.tmp"))  # ... and removes the stale temp
    assert (report / "result.json").exists() and "validate" in lock_stages(ws)
    assert changed_stages(ws, ["validate"]) == set()


@pytest.mark.slow
def test_tracking_server_stopped_mid_stage_quarantines_and_fails(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    run(["dvc", "repro", "ingest"], ws)  # upstream, tracked in the workspace's sqlite store
    lock_before = lock_stages(ws)
    report = ws / "reports/validate"
    with mlflow_server(tmp_path) as (url, server):
        proc = start(["dvc", "repro", "validate"], ws, {"MLFLOW_TRACKING_URI": url, **FAST_FAIL})
        wait_for(temp_beside(report), proc)  # the stage's MLflow run is open, the work under way
        os.killpg(proc.pid, signal.SIGSTOP)  # hold the stage while the server goes away
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=60)
        os.killpg(proc.pid, signal.SIGCONT)
        out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, out[-3000:]
    assert url.removeprefix("http://") in out  # the error names the tracking server
    assert not group_alive(proc.pid)
    assert lock_stages(ws) == lock_before  # validate not recorded, nothing else touched
    assert not report.exists() and not (ws / "metrics/validate.json").exists()
    assert (ws / "reports/failed/validate/validate/result.json").exists()
    assert (ws / "reports/failed/validate/validate.json").exists()
    assert "validate" in changed_stages(ws, ["validate"])
