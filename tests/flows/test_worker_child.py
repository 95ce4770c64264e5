"""Warm stage workers, the child side: how a worker starts, reproduces a stage, survives errors."""

from __future__ import annotations

import importlib.util
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from flows import worker_child
from flows.graph import read_graph
from flows.workers import WorkerError, stage_workers
from tests.flows.helpers_workers import job
from tests.workspace import make_workspace

DVC = str(Path(sys.executable).parent / "dvc")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("workers") / "repo")


def test_a_worker_reproduces_like_dvc_and_survives_a_failed_stage(workspace, tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    with stage_workers(workspace, 1) as pool:
        with pytest.raises(WorkerError, match="data/prepared"):  # nothing ingested yet
            pool.run(job("validate"), env, timeout_s=120)
        if "check" in read_graph(workspace).stages:  # every stage depends on `check`
            pool.run(job("check"), env, timeout_s=120)
        ran = pool.run(job("ingest"), env, timeout_s=120)
        assert ran["status"] == "ran" and ran["stage_s"] > 0 and ran["dvc_s"] > 0
        assert pool.run(job("ingest"), env, timeout_s=120)["status"] == "skipped"  # up to date
    assert (workspace / "data" / "prepared" / "manifest.json").exists()
    status = subprocess.run([DVC, "status", "--json", "ingest"], cwd=workspace,
                            capture_output=True, text=True, check=True).stdout
    assert json.loads(status) == {}  # dvc.lock holds the stage as `dvc repro` would


def test_the_spawn_target_is_found_by_reference():
    assert pickle.loads(pickle.dumps(worker_child._serve)) is worker_child._serve
    assert worker_child._serve.__module__ == "flows.worker_child"


def test_a_worker_starts_on_the_standard_library_then_imports_the_repos_code(tmp_path):
    repo = tmp_path / "repo"
    for package in ("flows", "components"):
        (repo / package).mkdir(parents=True)
        (repo / package / "__init__.py").write_text("")
    (repo / "flows" / "stages.py").write_text("MARK = 'repo'\n")
    script = (
        "import json, os, sys\n"
        "import flows.worker_child as child\n"
        "ours = lambda: sorted(m for m in sys.modules if m.split('.')[0] in "
        "('flows', 'components'))\n"
        "before = ours()\n"
        "child._use_repo_code(sys.argv[1])\n"
        "after = ours()\n"
        "import components, flows.stages\n"
        "print(json.dumps({'before': before, 'after': after, 'cwd': os.getcwd(),\n"
        "                  'stages': flows.stages.MARK, 'components': components.__file__}))\n")
    out = subprocess.run([sys.executable, "-c", script, str(repo)], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    seen = json.loads(out)
    assert seen["before"] == ["flows", "flows.worker_child"]  # nothing of the flow's pool
    assert seen["after"] == []
    assert seen["cwd"] == str(repo) and seen["stages"] == "repo"
    assert seen["components"] == str(repo / "components" / "__init__.py")


def test_remove_outs_deletes_folders_files_and_links_as_dvc_repro_does(tmp_path):
    folder, file = tmp_path / "models" / "student", tmp_path / "metrics.json"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "w.pt").write_bytes(b"w")
    file.write_text("{}")
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "x").write_text("x")
    link, dangling = tmp_path / "link", tmp_path / "dangling"
    link.symlink_to(kept, target_is_directory=True)
    dangling.symlink_to(tmp_path / "gone")
    worker_child.remove_outs([folder, file, link, dangling, tmp_path / "never-written"])
    assert not folder.exists() and not file.exists()
    assert not link.is_symlink() and not dangling.is_symlink()
    assert (kept / "x").read_text() == "x"  # a linked folder loses the link, not its files


@pytest.mark.parametrize("module", worker_child.WARM_IMPORTS)
def test_every_warm_import_names_a_module_that_exists(module):
    # `_warm` skips a missing module silently: a moved one would only make workers slower
    assert importlib.util.find_spec(module) is not None


def test_a_dvc_repro_beside_a_running_stage_fails_at_once_on_dvcs_lock(workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    lock_before = (workspace / "dvc.lock").read_text() if (workspace / "dvc.lock").exists() \
        else None
    with worker_child.stage_rwlock("validate"):  # what a worker holds while `validate` runs
        beside = subprocess.run([DVC, "repro", "--single-item", "validate"], cwd=workspace,
                                capture_output=True, text=True, timeout=120)
        rwlock = json.loads((workspace / ".dvc" / "tmp" / "rwlock").read_text())
    assert beside.returncode != 0
    assert "is busy, it is being blocked by" in beside.stderr + beside.stdout
    assert str(workspace / "reports" / "validate") in json.dumps(rwlock["write"])
    after = (workspace / "dvc.lock").read_text() if (workspace / "dvc.lock").exists() else None
    assert after == lock_before  # the stage beside did not run
    assert json.loads((workspace / ".dvc" / "tmp" / "rwlock").read_text()) == {}  # released
