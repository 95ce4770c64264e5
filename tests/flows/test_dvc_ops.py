"""`flows.dvc_ops` on a throwaway `git init` + `dvc init` repo with a two-stage dvc.yaml."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from flows.dvc_ops import StageFailed, changed_stages, read_lock_entry, run_dvc, stage_changed

DVC_YAML = """\
stages:
  boom:
    cmd: echo about to fail && exit 3
  copy:
    cmd: cp in.txt out.txt
    deps: [in.txt]
    outs: [out.txt]
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dvc-ops")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    run_dvc(["init", "-q"], root)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "in.txt").write_text("first\n")
    return root


def test_run_dvc_raises_stage_failed_naming_the_command_and_its_exit_code(repo: Path):
    with pytest.raises(StageFailed, match=r"`dvc repro boom` failed \(exit 255\)") as err:
        run_dvc(["repro", "boom"], repo)
    assert "about to fail" in str(err.value)  # the output's tail comes with it
    assert "exited with 3" in str(err.value)


def test_run_dvc_returns_the_output_of_a_command_that_succeeds(repo: Path):
    assert "boom" in run_dvc(["stage", "list"], repo)


def test_changed_stages_follows_deps_and_outs(repo: Path):
    assert changed_stages(repo) == {"boom", "copy"}  # boom has no deps: always changed
    run_dvc(["repro", "copy"], repo)
    assert (repo / "out.txt").read_text() == "first\n"
    assert changed_stages(repo, ["copy"]) == set() and not stage_changed("copy", repo)
    assert changed_stages(repo) == {"boom"}
    deps, params = read_lock_entry("copy", repo)
    assert deps == {"in.txt": hashlib.md5(b"first\n").hexdigest()} and params == {}

    (repo / "in.txt").write_text("second\n")
    assert changed_stages(repo, ["copy"]) == {"copy"} and stage_changed("copy", repo)
