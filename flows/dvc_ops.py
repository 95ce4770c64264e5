"""DVC as the flows run it: `dvc` commands in their own processes, and reads of dvc.lock.

Each command is a `dvc` subprocess leading its own process group, so a timeout ends the stage's
whole process tree. Locking: `dvc repro` holds DVC's repo lock (`.dvc/tmp/lock`) while it plans
and commits a stage but releases it while the stage's command runs. Parallel `dvc repro`
processes therefore only contend for a few seconds around each command, and `dvc
--wait-for-lock` makes them queue for the lock instead of failing with "Unable to acquire lock"
after DVC's 3 s default. dvc.lock is read and rewritten under that same lock.

A commit is verified, not trusted: when the cache copy fails (a full disk), `dvc repro` still
writes the new hash into dvc.lock and exits 0, leaving a lock file that names an object the cache
does not hold. `run_dvc` therefore checks, after every `repro` or `commit`, that each cached out
of each stage whose dvc.lock entry changed has its objects in the cache (`verify_commit`); when
one is missing it puts back that stage's previous entry, so `dvc status` truthfully reports the
stage changed, and raises `CacheIncomplete` naming the stage, the out and the object.

The flow owns these processes as it owns its warm workers: `run_dvc` keeps the process group of
each command while it runs, and `terminate_running` (the flow's SIGTERM/SIGINT handler calls it)
ends them all, the stage's command included; DVC then commits nothing of the interrupted stages.
A stage's output (DVC's and the command's stdout and stderr, merged) goes line by line to the
caller's ``log``, which the flow forwards to the Prefect run logs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml


class StageFailed(RuntimeError):
    """A `dvc` command of a stage exited non-zero or ran past its timeout."""


class CacheIncomplete(StageFailed):
    """dvc.lock recorded an output whose object is not in the DVC cache (e.g. the disk filled)."""


COMMITTING = ("repro", "commit")  # the `dvc` commands that write hashes into dvc.lock
# DVC's temporary names in its cache folders (`.<22 url-safe base64 chars>.tmp`)
_CACHE_TEMP = re.compile(r"\.[A-Za-z0-9_-]{22}\.tmp")

# Process groups of the `dvc` commands running now, for `terminate_running`. Re-entrant: the
# flow's signal handler runs in the main thread, which may be holding it when the signal lands.
_RUNNING: set[int] = set()
_RUNNING_LOCK = threading.RLock()

LogSink = Callable[[int, str], None]  # (logging level, line): where a stage's output goes


def run_dvc(args: list[str], repo: str | Path, env: dict[str, str] | None = None,
            timeout_s: float | None = None, log: LogSink | None = None) -> str:
    """Run `dvc --wait-for-lock ARGS` in `repo`; return its output or raise `StageFailed`.

    The command leads its own process group, so a timeout (or `terminate_running`) ends the
    stage's training process too. ``log`` gets each line of the output, also when it failed.
    After `repro` and `commit`, `verify_commit` checks the cache (`CacheIncomplete` if not).
    """
    bin_dir = Path(sys.executable).parent  # the venv's `dvc` and `distillery`
    exe = str(bin_dir / "dvc") if (bin_dir / "dvc").exists() else "dvc"
    # PYTHONPATH: the stage runs the code of `repo`, the code whose hashes DVC records.
    python_path = os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH")) if p)
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": python_path,
                "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [exe, "--wait-for-lock", *args]
    commits = bool(args) and args[0] in COMMITTING
    before = read_lock_stages(repo) if commits else {}
    try:
        out = _communicate(cmd, args, repo, full_env, timeout_s, log)
    except StageFailed as failed:
        if commits:
            try:
                verify_commit(repo, before)
            except CacheIncomplete as incomplete:
                raise CacheIncomplete(f"{incomplete}\n{failed}") from None
        raise
    if commits:
        verify_commit(repo, before)
    return out


def _communicate(cmd: list[str], args: list[str], repo: str | Path, full_env: dict[str, str],
                 timeout_s: float | None, log: LogSink | None = None) -> str:
    proc = subprocess.Popen(cmd, cwd=repo, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    with _RUNNING_LOCK:
        _RUNNING.add(proc.pid)  # its own session: the group id is its pid
    try:
        out, timed_out = _wait(proc, timeout_s)
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(proc.pid)
    if log is not None:
        for line in out.splitlines():
            if line.strip():
                log(logging.INFO, line)  # stdout and stderr are one stream here
    if timed_out:
        raise StageFailed(f"`dvc {' '.join(args)}` ran past its {timeout_s:g} s timeout")
    if proc.returncode:
        tail = "\n".join(out.strip().splitlines()[-25:])
        how = (f"was stopped by {signal.Signals(-proc.returncode).name}"
               if proc.returncode < 0 else f"failed (exit {proc.returncode})")
        raise StageFailed(f"`dvc {' '.join(args)}` {how}:\n{tail}")
    return out


def _wait(proc: subprocess.Popen, timeout_s: float | None) -> tuple[str, bool]:
    """(output, whether it ran past ``timeout_s``): past it, its group gets SIGTERM, then
    SIGKILL after 30 s."""
    try:
        return proc.communicate(timeout=timeout_s)[0], False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.communicate(timeout=30)[0], True
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return proc.communicate()[0], True


def terminate_running(grace_s: float = 3.0) -> list[int]:
    """Stop every `dvc` command `run_dvc` is running in this process: SIGTERM to each one's
    process group, SIGKILL to the groups with a process left after ``grace_s``; returns once
    the groups are empty (or 5 s after the SIGKILL). Each interrupted `run_dvc` raises
    `StageFailed`; DVC commits nothing of the stage. Returns the group ids."""
    with _RUNNING_LOCK:
        stopped = sorted(_RUNNING)
    alive = stopped
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pgid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + wait_s
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [g for g in alive if _group_alive(g)]
        if not alive:
            break
    return stopped


def _group_alive(pgid: int) -> bool:
    """Whether group ``pgid`` has a process left (its leader until `run_dvc` reaps it)."""
    from flows.worker_child import alive

    return alive(pgid, group=True)


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


def read_lock_stages(repo: str | Path) -> dict[str, Any]:
    """dvc.lock's `stages` mapping as it is now (empty when there is no dvc.lock yet)."""
    path = Path(repo) / "dvc.lock"
    if not path.exists():
        return {}
    with dvc_repo_lock(repo):
        return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages") or {}


def missing_from_cache(repo: str | Path,
                       stages: Iterable[str] | None = None) -> dict[tuple[str, str], str]:
    """{(stage, out): what is missing} for each cached out that dvc.lock records but whose
    object (or, for a folder, its `.dir` listing or one of its files) the cache lacks."""
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    wanted = None if stages is None else set(stages)
    missing: dict[tuple[str, str], str] = {}
    with Repo(str(repo)) as dvc_repo:
        odb = dvc_repo.cache.local
        root = Path(dvc_repo.root_dir)
        for stage in dvc_repo.index.stages:
            # the root dvc.yaml's stages, by their dvc.lock key (`train_teachers@mlp`)
            if not isinstance(stage, PipelineStage) or Path(stage.dvcfile.path).parent != root:
                continue
            if wanted is not None and stage.name not in wanted:
                continue
            for out in stage.outs:
                oid = out.hash_info.value if out.hash_info else None
                if not out.use_cache or not oid:
                    continue
                lack = _missing_objects(odb, oid)
                if lack:
                    missing[(stage.name, str(out.def_path))] = (
                        f"{len(lack)} object(s) not in the cache {odb.path}, e.g. "
                        f"{odb.oid_to_path(lack[0])}")
    return missing


def _missing_objects(odb: Any, oid: str) -> list[str]:
    """The object ids of ``oid`` (a file's md5, or a folder's `md5.dir` and its files) that the
    cache does not hold."""
    path = Path(odb.oid_to_path(oid))
    if not path.is_file():
        return [oid]
    if not oid.endswith(".dir"):
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [oid]  # a truncated listing is as good as none
    return [e["md5"] for e in entries if not Path(odb.oid_to_path(e["md5"])).is_file()]


def verify_commit(repo: str | Path, before: dict[str, Any]) -> None:
    """After a commit: every stage whose dvc.lock entry changed since ``before`` (what
    `read_lock_stages` returned before the command) has its cached outs in the cache.

    Otherwise its previous entry goes back into dvc.lock (or the entry is dropped when it had
    none), DVC's partial temporary files in the cache are removed, and `CacheIncomplete` names
    every stage, out and missing object.
    """
    from dvc.utils.serialize import modify_yaml

    path = Path(repo) / "dvc.lock"
    if not path.exists():
        return
    with dvc_repo_lock(repo):
        after = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages") or {}
        changed = [name for name, entry in after.items() if before.get(name) != entry]
        if not changed:
            return
        missing = missing_from_cache(repo, changed)
        if not missing:
            return
        bad = sorted({stage for stage, _ in missing})
        with modify_yaml(str(path)) as data:
            stages = data.setdefault("stages", {})
            for name in bad:
                if name in before:
                    stages[name] = before[name]
                else:
                    stages.pop(name, None)
        _remove_cache_temps(repo)
    lines = "\n".join(f"  stage `{stage}`, out `{out}`: {what}"
                      for (stage, out), what in sorted(missing.items()))
    raise CacheIncomplete(
        f"{path}: the commit recorded outputs the DVC cache does not hold (disk full?):\n"
        f"{lines}\n{path}: restored the previous entry of {', '.join(bad)}; "
        "`dvc status` reports them changed until they are reproduced")


def _remove_cache_temps(repo: str | Path) -> None:
    """DVC's partial copies (`.dvc/cache/files/md5/xx/.NAME.tmp`) left by a failed transfer.

    Called under the repo lock, while no DVC process of this repo is transferring."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        root = Path(dvc_repo.cache.local.path)
    for p in root.glob("*/.*.tmp"):
        if _CACHE_TEMP.fullmatch(p.name):
            p.unlink(missing_ok=True)
