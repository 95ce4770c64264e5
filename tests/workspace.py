"""A throwaway clone of this repository with tiny parameters, for end-to-end runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY: dict[str, Any] = {
    "ingest": {"limit_per_class": 15},
    "validate": {"max_drift": 0.5},
    "train_teachers": {
        "training": {"epochs": 2, "patience": 2, "batch_size": 32},
        "teachers": {
            "wide_cnn": {"arch": "cnn", "channels": [8, 16], "head": "flatten", "hidden": 16},
            "resnet": {"arch": "resnet", "width": 8, "blocks": [8], "pool_after": [0]},
            "mlp": {"arch": "mlp", "hidden": [32]},
        },
    },
    "distill": {"training": {"epochs": 3, "patience": 3, "batch_size": 32}, "seeds": 1},
    "prune": {"steps": 1, "finetune_epochs": 1, "calibration_samples": 32,
              "max_accuracy_drop": 1.0},
    "quantize": {"calibration_size": 32},
    "evaluate": {"runs": 10, "warmup": 2},
    "register": {"policy": {"gates": {"min_accuracy": 0.0}, "require_all_budgets": False}},
}

# Budgets every tiny model meets, so the registry path to `champion` is exercised.
OPEN_BUDGETS = {"max_latency_ms_p95": None, "max_size_bytes": None, "max_peak_rss_mb": None,
                "min_accuracy": 0.0}


def deep_update(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k != "teachers":
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


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
    deep_update(params, overrides if overrides is not None else TINY)
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
