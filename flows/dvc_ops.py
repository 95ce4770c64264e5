"""DVC as the flows run it: `dvc` commands in their own processes, and reads of dvc.lock.

Each command is a `dvc` subprocess leading its own process group, so a timeout ends the stage's
whole process tree. Locking: `dvc repro` holds DVC's repo lock (`.dvc/tmp/lock`) while it plans
and commits a stage but releases it while the stage's command runs. Parallel `dvc repro`
processes therefore only contend for a few seconds around each command, and `dvc
--wait-for-lock` makes them queue for the lock instead of failing with "Unable to acquire lock"
after DVC's 3 s default. dvc.lock is read and rewritten under that same lock.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


class StageFailed(RuntimeError):
    """A `dvc` command of a stage exited non-zero or ran past its timeout."""


def run_dvc(args: list[str], repo: str | Path, env: dict[str, str] | None = None,
            timeout_s: float | None = None) -> str:
    """Run `dvc --wait-for-lock ARGS` in `repo`; return its output or raise `StageFailed`.

    The command leads its own process group, so a timeout ends the stage's training process too.
    """
    bin_dir = Path(sys.executable).parent  # the venv's `dvc` and `distillery`
    exe = str(bin_dir / "dvc") if (bin_dir / "dvc").exists() else "dvc"
    # PYTHONPATH: the stage runs the code of `repo`, the code whose hashes DVC records.
    python_path = os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH")) if p)
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": python_path,
                "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [exe, "--wait-for-lock", *args]
    proc = subprocess.Popen(cmd, cwd=repo, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        raise StageFailed(f"`dvc {' '.join(args)}` ran past its {timeout_s:g} s timeout") from None
    if proc.returncode:
        tail = "\n".join(out.strip().splitlines()[-25:])
        raise StageFailed(f"`dvc {' '.join(args)}` failed (exit {proc.returncode}):\n{tail}")
    return out


def changed_stages(repo: str | Path, targets: list[str] | None = None,
                   env: dict[str, str] | None = None) -> set[str]:
    """Stages `dvc status --json [TARGETS]` reports with a changed dep, param, out or command."""
    out = run_dvc(["status", "--json", *(targets or [])], repo, env)
    return set(yaml.safe_load(out[out.find("{"):] or "{}"))


def stage_changed(name: str, repo: str | Path, env: dict[str, str] | None = None) -> bool:
    """True when `dvc status NAME` reports the stage changed."""
    return bool(changed_stages(repo, [name], env))


@contextlib.contextmanager
def dvc_repo_lock(repo: str | Path) -> Iterator[None]:
    """Hold DVC's own repo lock (the one `dvc repro` takes) while reading or writing dvc.lock."""
    from dvc.lock import make_lock

    tmp = Path(repo) / ".dvc" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    with make_lock(str(tmp / "lock"), tmp_dir=str(tmp), wait=True):
        yield


def read_lock_entry(name: str, repo: str | Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The stage's dep hashes and params as DVC recorded them in dvc.lock."""
    with dvc_repo_lock(repo):
        lock = yaml.safe_load((Path(repo) / "dvc.lock").read_text(encoding="utf-8")) or {}
    entry = lock.get("stages", {}).get(name, {})
    deps = {d["path"]: d.get("md5") or d.get("hash", "") for d in entry.get("deps", [])}
    params = {k: v for values in entry.get("params", {}).values() for k, v in values.items()}
    return deps, params


def order_lockfile(repo: str | Path, order: list[str]) -> None:
    """Write dvc.lock's stages in graph order, as a serial `dvc repro` would have.

    Parallel stages finish in any order and DVC appends each as it finishes; the content is the
    same either way, this only keeps the file (and its git diff) stable.
    """
    from dvc.utils.serialize import modify_yaml

    path = Path(repo) / "dvc.lock"
    if not path.exists():
        return
    with dvc_repo_lock(repo), modify_yaml(str(path)) as data:
        stages = data.get("stages") or {}
        rank = {n: i for i, n in enumerate(order)}
        ordered = sorted(stages, key=lambda n: rank.get(n, len(rank)))
        if list(stages) != ordered:
            moved = {n: stages[n] for n in ordered}
            stages.clear()
            stages.update(moved)
