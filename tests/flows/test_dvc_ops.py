"""`flows.dvc_ops` on a throwaway `git init` + `dvc init` repo with a two-stage dvc.yaml."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.dvc_ops import StageFailed, changed_stages, read_lock_entry, run_dvc, stage_changed
from tests.helpers_data import REPO

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


BIG_DVC_YAML = """\
stages:
  big:
    # the stage lifts the write limit for itself: only DVC's own cache copy hits it
    cmd: bash -c 'ulimit -f unlimited; mkdir -p outdir; head -c 3000000 /dev/urandom >
      outdir/a.bin; echo small > outdir/b.txt'
    outs: [outdir]
"""


@pytest.mark.slow
def test_a_cache_copy_cut_by_a_full_disk_leaves_dvc_lock_truthful(tmp_path: Path):
    """#14 item 8: DVC writes the new hash into dvc.lock and exits 0 although the copy failed."""
    from flows.dvc_ops import missing_from_cache
    from tests.flows.helpers_faults import fsize_limit

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run_dvc(["init", "-q"], tmp_path)
    (tmp_path / "dvc.yaml").write_text(BIG_DVC_YAML)
    run_dvc(["repro"], tmp_path)
    before = (tmp_path / "dvc.lock").read_text()
    assert missing_from_cache(tmp_path) == {}

    # DVC itself, under a 1 MB file-size limit, and nothing of ours: what it leaves behind
    raw = subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro", "--force"],
                         cwd=tmp_path, capture_output=True, text=True,
                         preexec_fn=fsize_limit(1_000_000))
    assert raw.returncode == 0 and "File too large" in raw.stderr  # DVC calls it a success
    assert (tmp_path / "dvc.lock").read_text() != before  # ... and records the new hash
    missing = missing_from_cache(tmp_path)
    assert list(missing) == [("big", "outdir")]

    # through run_dvc: the same fault is caught, named and dvc.lock put back
    (tmp_path / "dvc.lock").write_text(before)
    limited = subprocess.run(
        [sys.executable, "-c", "import sys; from flows.dvc_ops import run_dvc; "
         "run_dvc(['repro', '--force'], sys.argv[1])", str(tmp_path)],
        capture_output=True, text=True, preexec_fn=fsize_limit(1_000_000),
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert limited.returncode == 1
    assert "CacheIncomplete" in limited.stderr
    assert "stage `big`, out `outdir`" in limited.stderr and "restored" in limited.stderr
    assert (tmp_path / "dvc.lock").read_text() == before
    assert not list((tmp_path / ".dvc/cache").rglob("*.tmp"))  # DVC's partial copy is gone
    assert changed_stages(tmp_path) == {"big"}  # truthful: the new outdir is not committed
    run_dvc(["repro"], tmp_path)  # with room on the disk it commits
    assert missing_from_cache(tmp_path) == {} and changed_stages(tmp_path) == set()


SLEEPY_DVC_YAML = """\
stages:
  sleepy:
    cmd: touch started && sleep 120 && echo late > slept.txt
    outs: [slept.txt]
  chatty:
    cmd: bash -c 'for i in 1 2 3; do echo "epoch $i/3 loss 0.$i" >&2; done; echo ok > said.txt'
    outs: [said.txt]
"""


def group_members(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes of process group ``pgid``."""
    import psutil

    live = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                live.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return live


@pytest.fixture
def sleepy_repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run_dvc(["init", "-q"], tmp_path)
    (tmp_path / "dvc.yaml").write_text(SLEEPY_DVC_YAML)
    return tmp_path


def test_terminate_running_stops_a_running_dvc_repro_and_nothing_is_committed(sleepy_repo: Path):
    """#14: SIGTERM to the flow stopped its warm workers but not its `dvc repro` processes."""
    import threading

    import psutil

    from flows.dvc_ops import read_lock_stages, terminate_running

    errors: list[BaseException] = []

    def repro() -> None:
        try:
            run_dvc(["repro", "sleepy"], sleepy_repo)
        except StageFailed as e:
            errors.append(e)

    runner = threading.Thread(target=repro)
    runner.start()
    for _ in range(600):  # DVC plans the stage, then its command starts
        if (sleepy_repo / "started").exists() or not runner.is_alive():
            break
        runner.join(0.1)
    assert (sleepy_repo / "started").exists(), "the stage's command never started"
    sleepers = [p for p in psutil.process_iter(["cmdline"])
                if p.info["cmdline"] == ["sleep", "120"]]
    (group,) = terminate_running()
    runner.join(60)
    assert not runner.is_alive(), "run_dvc still waits on the stopped command"
    assert errors and "`dvc repro sleepy`" in str(errors[0])
    assert not any(p.is_running() and p.status() != "zombie" for p in sleepers)
    assert not group_members(group)  # the whole group is gone, the stage's command too
    assert "sleepy" not in read_lock_stages(sleepy_repo)
    assert not (sleepy_repo / "slept.txt").exists()
    assert terminate_running() == []  # nothing left running


def test_run_dvc_hands_each_line_of_the_stage_output_to_its_log(sleepy_repo: Path):
    """#15: the stage's stderr lines reach the caller (the flow forwards them to Prefect)."""
    import logging

    lines: list[tuple[int, str]] = []
    run_dvc(["repro", "chatty"], sleepy_repo, log=lambda level, line: lines.append((level, line)))
    assert [line for _, line in lines if line.startswith("epoch")] == [
        "epoch 1/3 loss 0.1", "epoch 2/3 loss 0.2", "epoch 3/3 loss 0.3"]
    assert {level for level, _ in lines} == {logging.INFO}
