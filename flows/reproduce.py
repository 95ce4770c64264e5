"""`distillery reproduce`: rebuild a registered model version from what was recorded on it.

The version's tags name the git commit, the data hash and the params hash it was built from.
Reproducing clones the repository at that commit into a fresh work folder, runs `dvc repro`
there (with its own MLflow store, so the registry being checked is not touched), and compares
what it rebuilt with what was recorded: data hash, params hash, the accuracy measured on every
device profile, and, when the commit carries a `dvc.lock`, the hashes of the data outputs in it.
Latencies are not compared: they belong to the machine, not to the model. Nor are the hashes of
model folders and metrics files: they record training and measuring times, so they differ
between two runs whose weights and accuracies are identical.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.core.io import read_json, sha256_file
from flows.dvc_ops import run_dvc
from flows.register import VARIANT, _client
from flows.tracking import PARENT_ENV

# Outputs that hold no timings, so their hashes must match exactly.
DETERMINISTIC_OUTS = ("data/",)


@dataclass
class Check:
    what: str
    recorded: Any
    rebuilt: Any

    @property
    def ok(self) -> bool:
        if isinstance(self.recorded, float) and isinstance(self.rebuilt, float):
            return abs(self.recorded - self.rebuilt) <= 1e-9
        return self.recorded == self.rebuilt


@dataclass
class Reproduction:
    name: str
    version: str
    commit: str
    workdir: Path
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def table(self) -> str:
        rows = [f"reproduce {self.name} version {self.version} (commit {self.commit[:12]}) "
                f"in {self.workdir}", "", "| check | recorded | rebuilt | match |",
                "|---|---|---|---|"]
        rows += [f"| {c.what} | {_short(c.recorded)} | {_short(c.rebuilt)} | "
                 f"{'yes' if c.ok else '**NO**'} |" for c in self.checks]
        return "\n".join(rows)


def reproduce(name: str, version: str, workdir: Path, repo: Path = Path("."),
              client: Any = None) -> Reproduction:
    """Rebuild ``name`` version ``version`` in ``workdir`` and compare it with its record."""
    client = client or _client()
    mv = client.get_model_version(name, str(version))
    tags = dict(mv.tags)
    commit = tags.get("git_commit", "unknown")
    if commit == "unknown" or commit.endswith("-dirty"):
        raise ValueError(f"{name} version {version} was built from `{commit}`: a commit with "
                         "uncommitted changes cannot be reproduced")
    workdir = Path(workdir)
    if workdir.exists() and any(workdir.iterdir()):
        raise ValueError(f"{workdir}: work folder must be new or empty")
    _run(["git", "clone", "--quiet", str(Path(repo).resolve()), str(workdir)], Path("."))
    _run(["git", "checkout", "--quiet", commit], workdir)
    recorded_lock = _lock_outs(workdir / "dvc.lock")
    # run_dvc runs the checkout's own code (PYTHONPATH), the code the recorded hashes describe
    run_dvc(["repro"], workdir, {"MLFLOW_TRACKING_URI":
                                 f"sqlite:///{workdir.resolve() / 'mlflow.db'}",
                                 PARENT_ENV: ""})  # a run of its own, under no pipeline run

    result = Reproduction(name, str(version), commit, workdir)
    manifest = read_json(workdir / "data/prepared/manifest.json")
    result.checks.append(Check("data_hash", tags.get("data_hash"), manifest["data_hash"]))
    result.checks.append(Check("params_hash", tags.get("params_hash"),
                               sha256_file(workdir / "params.yaml")))
    variant = tags.get(VARIANT)
    evaluated = read_json(workdir / "metrics/evaluate.json").get(variant, {})
    for profile, recorded in json.loads(tags.get("distillery.metrics", "{}")).items():
        if "accuracy" in recorded:
            rebuilt = evaluated.get(profile, {}).get("accuracy")
            result.checks.append(Check(f"{variant} accuracy on {profile}",
                                       float(recorded["accuracy"]),
                                       None if rebuilt is None else float(rebuilt)))
    rebuilt_lock = _lock_outs(workdir / "dvc.lock")
    for path, md5 in sorted(recorded_lock.items()):
        if path.startswith(DETERMINISTIC_OUTS):
            result.checks.append(Check(f"dvc.lock {path}", md5, rebuilt_lock.get(path)))
    return result


def _lock_outs(path: Path) -> dict[str, str]:
    """{output path: md5} of every stage's outs in a dvc.lock (empty when there is none)."""
    if not path.exists():
        return {}
    lock = yaml.safe_load(path.read_text()) or {}
    return {o["path"]: o.get("md5", "") for stage in lock.get("stages", {}).values()
            for o in stage.get("outs", [])}


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd} ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def _short(value: Any) -> str:
    text = f"{value:.6f}" if isinstance(value, float) else str(value)
    return text if len(text) <= 20 else text[:16] + "…"
