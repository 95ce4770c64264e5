"""`distillery` (flows.cli) through Typer's CliRunner: messages and exit codes, no real DVC run."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

import flows.dvc_ops
import flows.tracking
from flows.cli import app
from tests.helpers_data import REPO

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding this repository's params.yaml and dvc.yaml, as the working directory."""
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(REPO / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISTILLERY_DEBUG", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture
def pipeline_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Records each `start_pipeline_run` call (a fake run, no MLflow) instead of opening a run."""
    calls: list[tuple] = []

    @contextlib.contextmanager
    def record(*args, **kwargs):
        calls.append((args, kwargs))
        yield SimpleNamespace(info=SimpleNamespace(run_id="fake-run"))

    monkeypatch.setattr(flows.tracking, "start_pipeline_run", record)
    return calls


def test_check_accepts_a_good_params_file(project: Path):
    result = runner.invoke(app, ["check", "--params", "params.yaml"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "params.yaml: ok"


def test_check_rejects_a_bad_params_file_naming_the_key(project: Path):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train_teachers"]["training"]["lr"] = -0.1
    (project / "bad.yaml").write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["check", "--params", "bad.yaml"])
    assert result.exit_code == 1
    assert "train_teachers.training.lr" in result.stderr and "bad.yaml" in result.stderr
    assert "ok" not in result.stdout and "Traceback" not in result.output


def test_stage_with_an_unknown_name_fails_with_a_one_line_error(project: Path):
    result = runner.invoke(app, ["stage", "distil"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: dvc.yaml: no stage `distil`")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not (project / "mlflow.db").exists()  # refused before any tracking


def test_repro_with_nothing_changed_says_so_and_opens_no_mlflow_run(
        project: Path, pipeline_runs: list, monkeypatch: pytest.MonkeyPatch):
    asked: list[tuple] = []
    monkeypatch.setattr(flows.dvc_ops, "changed_stages",
                        lambda *args, **kwargs: asked.append(args) or set())
    result = runner.invoke(app, ["repro"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "Data and pipelines are up to date: nothing to run."
    assert "Summary" in lines and "champion: none registered yet" in result.stdout
    assert asked == [(".", None)]
    assert pipeline_runs == []
    assert not (project / "mlflow.db").exists()


def test_repro_with_a_changed_stage_runs_dvc_repro_under_one_pipeline_run(
        project: Path, pipeline_runs: list, monkeypatch: pytest.MonkeyPatch):
    import flows.cli
    import flows.pipeline

    monkeypatch.setattr(flows.dvc_ops, "changed_stages", lambda *args, **kwargs: {"distill"})
    swept: list[tuple] = []  # the fake run has no MLflow store: record what would be tagged
    monkeypatch.setattr(flows.pipeline, "fail_orphaned_runs", lambda *a: swept.append(a) or [])
    monkeypatch.setattr(flows.pipeline, "record_owner", lambda *a: swept.append(a))
    commands: list[list[str]] = []
    monkeypatch.setattr(flows.cli.subprocess, "run",
                        lambda cmd, **kwargs: commands.append(cmd) or SimpleNamespace(returncode=0))
    result = runner.invoke(app, ["repro", "distill"])
    assert result.exit_code == 0, result.output
    assert commands == [["dvc", "repro", "distill"]]
    experiment = yaml.safe_load((project / "params.yaml").read_text())["tracking"]["experiment"]
    assert pipeline_runs == [((experiment,), {})]
    assert [a[0] for a in swept] == [experiment, "fake-run"]  # stale runs swept, owner recorded


def test_every_command_runs_with_telemetry_off_unless_the_user_set_it(monkeypatch):
    from flows import cli

    for key in cli.QUIET_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DO_NOT_TRACK", "0")  # the user's own choice wins
    result = CliRunner().invoke(cli.app, ["check", "--params", str(REPO / "params.yaml")])
    assert result.exit_code == 0, result.output
    import os

    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "180"
    assert os.environ["DO_NOT_TRACK"] == "0"


def test_children_find_the_venvs_tools_with_the_venv_unactivated():
    import os
    import sys

    from flows.cli import venv_path

    bin_dir = str(Path(sys.executable).parent)
    path = venv_path(os.pathsep.join(["/usr/bin", bin_dir, "/bin"]))
    assert path.split(os.pathsep) == [bin_dir, "/usr/bin", "/bin"]  # first, and only once
    assert venv_path("").split(os.pathsep) == [bin_dir]
    assert (Path(venv_path("/usr/bin").split(os.pathsep)[0]) / "uvicorn").exists()


def test_run_fails_in_one_line_when_prefects_server_misses_its_startup_timeout(project: Path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="0", DISTILLERY_WORKERS="0",
               PREFECT_HOME=str(project / "prefect-home"), PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "flows.cli", "run"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]  # after Prefect's own INFO lines
    assert last.startswith("error: Prefect's temporary API server did not answer within 0 s")
    assert "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in last


def _recorded_registration(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """metrics/register.json as a register stage wrote it against another registry; the
    configured one (a fresh sqlite store) holds none of it."""
    from components.core.io import atomic_write_json

    atomic_write_json(project / "metrics" / "register.json", {
        "model_name": "moved-store", "registered": ["fp32"], "onnx_sha256": {"fp32": "a" * 64},
        "missing": [], "outcome": "champion", "candidate": "fp32"})
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'other.db'}")


def test_repro_registers_again_when_the_registry_lacks_what_register_recorded(
        project: Path, pipeline_runs: list, monkeypatch: pytest.MonkeyPatch):
    import flows.cli
    import flows.pipeline

    _recorded_registration(project, monkeypatch)
    monkeypatch.setattr(flows.dvc_ops, "changed_stages", lambda *args, **kwargs: set())
    monkeypatch.setattr(flows.pipeline, "fail_orphaned_runs", lambda *a: [])
    monkeypatch.setattr(flows.pipeline, "record_owner", lambda *a: None)
    commands: list[list[str]] = []
    real_run = flows.cli.subprocess.run

    def run(cmd, **kwargs):  # `dvc` is recorded, not run; anything else (git) runs
        if cmd[0] != "dvc":
            return real_run(cmd, **kwargs)
        commands.append(cmd)
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(flows.cli.subprocess, "run", run)
    result = runner.invoke(app, ["repro"])
    assert result.exit_code == 0, result.output
    assert "the registry lacks fp32: no version of `moved-store`" in result.stdout
    assert commands == [["dvc", "repro", "--force", "--single-item", "register"]]
    assert "up to date" not in result.stdout


def test_status_never_calls_register_up_to_date_when_the_registry_lacks_its_versions(
        project: Path, monkeypatch: pytest.MonkeyPatch):
    import subprocess

    from tests.workspace import BIN

    _recorded_registration(project, monkeypatch)
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=project, check=True)
    monkeypatch.setattr(flows.dvc_ops, "changed_stages", lambda *args, **kwargs: set())
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith("register ")]
    assert "stale" in line and "the registry lacks fp32" in line
    assert result.stdout.strip().splitlines()[-1].startswith("champion of")
