"""A throwaway clone of this repository with tiny parameters, for end-to-end runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bench.run import OPEN_BUDGETS, QUICK
from components.config import merge_params

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Tiny parameters: seconds per stage; the same ones `make bench --quick` uses.
TINY: dict[str, Any] = QUICK




# Never copied into a workspace: outputs, caches and local state.
SKIP_PREFIXES = (".dvc/tmp", ".dvc/cache", ".dev-servers", "data/", "models/", "metrics/",
                 "reports/", "mlruns", "mlartifacts", "dvc.lock", "mlflow.db")


def tracked_files(repo: Path = REPO) -> list[str]:
    """Files git would commit (tracked or new, not ignored) that exist on disk."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=repo, capture_output=True, text=True, check=True).stdout
    return sorted({p for p in out.splitlines()
                   if (repo / p).is_file() and not p.startswith(SKIP_PREFIXES)})


def make_workspace(dest: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Copy the repo's files (as a fresh clone would have them) into ``dest``; commit them."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in tracked_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    merge_params(params, overrides if overrides is not None else TINY)
    if overrides is None:
        for profile in params.get("evaluate", {}).get("profiles", {}).values():
            profile["budgets"] = dict(OPEN_BUDGETS)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "workspace"], cwd=dest, check=True)
    return dest


def env_for(workspace: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workspace / 'mlflow.db'}"
    env["GX_ANALYTICS_ENABLED"] = "false"
    env.pop("DISTILLERY_PARENT_RUN_ID", None)
    return env


def run(cmd: list[str], workspace: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=workspace, env=env_for(workspace), capture_output=True,
                          text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc
