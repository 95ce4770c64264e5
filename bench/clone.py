"""Fresh clones to benchmark in, the environment their commands run with, and timed commands.

A clone is `git clone` of the repository (its committed HEAD: what a new user gets), with the
bench's parameter overrides written into its params.yaml and committed there, so stage runs are
tagged with a clean commit. Every command runs in the clone with the current venv's `bin` first
on PATH (the "after install" cost), `PYTHONPATH` set to the clone (stages run the code whose
hashes DVC records, as `flows.dvc_ops.run_dvc` does) and MLflow / Prefect state inside the clone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.config import merge_params
from flows.tracking import PIPELINE_WRITES

BIN = Path(sys.executable).parent
GIT_ID = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]


@dataclass
class Timed:
    """One command's wall time, exit code and what it reported running."""

    label: str
    cmd: list[str]
    seconds: float
    returncode: int
    started_ms: int  # epoch ms, to find the MLflow runs it created
    ended_ms: int
    stages_ran: list[str] = field(default_factory=list)
    log: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cmd"] = " ".join(self.cmd)
        return out


def set_key(params: dict, dotted: str, value: Any) -> dict:
    """``params["a"]["b"] = value`` for ``dotted`` = "a.b", creating sections as needed;
    returns ``params``."""
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return params


def changed_files(repo: Path, clone: Path) -> list[str]:
    """Source files tracked in ``clone`` whose copy in ``repo``'s working tree differs
    (uncommitted); what the pipeline writes itself (dvc.lock, metrics) does not count."""
    listed = subprocess.run(["git", "ls-files"], cwd=clone, capture_output=True, text=True,
                            check=True).stdout.splitlines()
    def committed(p: str) -> bytes:  # params.yaml: as before the bench's own commit
        if p != "params.yaml":
            return (clone / p).read_bytes()
        return subprocess.run(["git", "show", "HEAD~1:params.yaml"], cwd=clone,
                              capture_output=True, check=True).stdout

    return [p for p in listed
            if not p.startswith(PIPELINE_WRITES) and not p.endswith(".gitignore")
            and (not (repo / p).is_file() or (repo / p).read_bytes() != committed(p))]


def make_clone(repo: Path, dest: Path, overrides: dict[str, Any]) -> Path:
    """`git clone repo dest` (replacing dest), apply ``overrides`` to params.yaml, commit."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", str(repo), str(dest)], check=True)
    write_params(dest, overrides)
    subprocess.run(["git", *GIT_ID, "commit", "-qam", "bench: parameters"], cwd=dest,
                   check=True, capture_output=True)
    return dest


def write_params(clone: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    path = clone / "params.yaml"
    params = merge_params(yaml.safe_load(path.read_text(encoding="utf-8")), overrides)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return params


def clone_env(clone: Path) -> dict[str, str]:
    """The environment of every command run in ``clone``."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(clone)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{clone / 'mlflow.db'}"
    env["PREFECT_HOME"] = str(clone / ".prefect")  # the temporary server's database, too
    env["GX_ANALYTICS_ENABLED"] = "false"
    env["TQDM_DISABLE"] = "1"
    env.pop("DISTILLERY_PARENT_RUN_ID", None)
    return env


_DVC_RAN = re.compile(r"Running stage '([^']+)'")
_FLOW_ROW = re.compile(r"^(\S+)\s+(ran|skipped|restored)\s+[\d.]+s", re.M)


def timed(label: str, cmd: list[str], clone: Path, log_dir: Path,
          env: dict[str, str | None] | None = None) -> Timed:
    """Run ``cmd`` in ``clone``; wall time, output saved to ``log_dir/<label>.log``.

    ``env`` overrides `clone_env` (None removes a variable). Raises RuntimeError (with the
    output's tail) when the command fails.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    full_env = clone_env(clone)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    started_ms = int(time.time() * 1000)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=clone, env=full_env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    log = log_dir / f"{label}.log"
    log.write_text(out, encoding="utf-8")
    if proc.returncode:
        tail = "\n".join(out.strip().splitlines()[-30:])
        raise RuntimeError(f"{' '.join(cmd)} failed in {clone} (exit {proc.returncode}); "
                           f"see {log}:\n{tail}")
    ran = _DVC_RAN.findall(out) or [m.group(1) for m in _FLOW_ROW.finditer(proc.stdout)
                                    if m.group(2) == "ran"]
    return Timed(label, cmd, round(seconds, 3), proc.returncode, started_ms,
                 int(time.time() * 1000), ran, str(log))
