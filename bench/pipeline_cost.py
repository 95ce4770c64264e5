"""What the pipeline costs to run: fresh, no-op and one-parameter-change runs, DVC and Prefect.

Each chain runs in its own fresh clone: `dvc repro` three times (fresh, nothing changed, after
halving `quantize.calibration_size`), then the same three through the Prefect flow
(`distillery run`). A stage's own compute is the `stage_seconds` metric its MLflow run logged
(the component's work, without process start-up or logging); the MLflow run's duration (start to
end, logging included) is kept beside it. Orchestration overhead =
(flow wall time - sum of stage compute) / fresh `dvc repro` wall time.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bench.clone import BIN, Timed, clone_env, make_clone, set_key, timed, write_params

CHANGED_KEY = "quantize.calibration_size"


def stage_runs(clone: Path, run: Timed) -> list[dict[str, Any]]:
    """The MLflow runs ``run`` created in the clone's store: stage, compute, duration."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(
        experiments, filter_string=f"attributes.start_time >= {run.started_ms - 1000}",
        max_results=1000)
    rows = []
    for r in found:
        if r.info.start_time > run.ended_ms + 1000:
            continue
        end = r.info.end_time or r.info.start_time
        rows.append({"run": r.info.run_name, "stage": r.data.tags.get("distillery.stage"),
                     "compute_s": r.data.metrics.get("stage_seconds"),
                     "run_s": (end - r.info.start_time) / 1000,
                     "start_ms": r.info.start_time})
    return sorted(rows, key=lambda row: row["start_ms"])


def summarize(clone: Path, run: Timed) -> dict[str, Any]:
    """Wall time, stages that ran, their summed compute and MLflow run time, per-stage rows."""
    rows = stage_runs(clone, run)
    stages = [r for r in rows if r["stage"] != "pipeline"]
    parent = next((r for r in rows if r["stage"] == "pipeline"), None)
    compute = sum(r["compute_s"] or 0.0 for r in stages)
    return {
        "wall_s": run.seconds,
        "stages_ran": run.stages_ran,
        "stage_compute_s": round(compute, 3),
        "stage_run_s": round(sum(r["run_s"] for r in stages), 3),
        # from launch to the flow's MLflow pipeline run: imports, Prefect's server, flow start
        "startup_s": round((parent["start_ms"] - run.started_ms) / 1000, 3) if parent else None,
        "stages": {r["run"]: {"compute_s": r["compute_s"], "run_s": r["run_s"]} for r in stages},
        "log": run.log,
    }


def run_chain(kind: str, command: list[str], repo: Path, dest: Path,
              overrides: dict[str, Any], env: dict[str, str | None] | None = None
              ) -> dict[str, Any]:
    """Fresh, no-op and changed-parameter runs of ``command`` in a fresh clone at ``dest``."""
    clone = make_clone(repo, dest, overrides)
    logs = dest.parent / "logs"
    out: dict[str, Any] = {"clone": str(clone)}
    fresh = timed(f"{kind}-fresh", command, clone, logs, env)
    out["fresh"] = summarize(clone, fresh)
    out["noop"] = summarize(clone, timed(f"{kind}-noop", command, clone, logs, env))
    params = yaml.safe_load((clone / "params.yaml").read_text(encoding="utf-8"))
    old = functools.reduce(lambda node, key: node[key], CHANGED_KEY.split("."), params)
    new = max(1, int(old) // 2)
    write_params(clone, set_key({}, CHANGED_KEY, new))
    out["changed"] = {"key": CHANGED_KEY, "from": old, "to": new,
                      **summarize(clone, timed(f"{kind}-changed", command, clone, logs, env))}
    return out


@contextlib.contextmanager
def prefect_server(repo: Path, state: Path) -> Iterator[str]:
    """`PREFECT_API_URL` if set, else a Prefect server started by `infra/dev-servers.sh`."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    script = repo / "infra" / "dev-servers.sh"
    env = {**os.environ, "DISTILLERY_DEV_DIR": str(state), "DISTILLERY_BIN": str(BIN),
           "DISTILLERY_DEV_PREFECT_SERVICES": "0", "PREFECT_SERVER_UI_ENABLED": "false"}
    started = subprocess.run(["bash", str(script), "start"], env=env, capture_output=True,
                             text=True, timeout=240)
    try:
        if started.returncode:
            raise RuntimeError(f"dev servers did not start:\n{started.stdout}{started.stderr}")
        urls = dict(line.removeprefix("export ").split("=", 1)
                    for line in started.stdout.splitlines() if line.startswith("export "))
        yield urls["PREFECT_API_URL"]
    finally:
        subprocess.run(["bash", str(script), "stop"], env=env, capture_output=True, timeout=60)


def tool_floor(repo: Path) -> dict[str, float]:
    """Start-up cost of the tools alone: `dvc version` and `distillery --help`, wall seconds."""
    floors = {}
    for name, cmd in (("dvc_version_s", [str(BIN / "dvc"), "version"]),
                      ("distillery_help_s", [str(BIN / "distillery"), "--help"])):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=repo, env=clone_env(repo), capture_output=True, check=False)
        floors[name] = round(time.perf_counter() - start, 3)
    return floors


def measure_pipeline(repo: Path, work: Path, overrides: dict[str, Any],
                     with_flow: bool = True) -> dict[str, Any]:
    """DVC chain, then (``with_flow``) the Prefect chain; overhead figures from both."""
    result: dict[str, Any] = {"changed_key": CHANGED_KEY, "floor": tool_floor(repo)}
    result["dvc"] = run_chain("dvc", [str(BIN / "dvc"), "repro"], repo, work / "dvc",
                              overrides)
    fresh = result["dvc"]["fresh"]
    result["dvc_overhead"] = round((fresh["wall_s"] - fresh["stage_compute_s"])
                                   / fresh["wall_s"], 4)
    result["prefect_api"] = None
    if with_flow:
        run = [str(BIN / "distillery"), "run"]
        with prefect_server(repo, work / "servers") as api:
            result["prefect_api"] = ("server started by the bench" if api.startswith(
                "http://127.0.0.1") and not os.environ.get("PREFECT_API_URL") else api)
            result["flow"] = run_chain("flow", run, repo, work / "flow", overrides,
                                       {"PREFECT_API_URL": api})
        clone = Path(result["flow"]["clone"])
        temporary = timed("flow-noop-temporary-server", run, clone, work / "logs",
                          {"PREFECT_API_URL": None})
        result["temporary_server_noop"] = summarize(clone, temporary)
        flow = result["flow"]["fresh"]
        result["orchestration_overhead"] = round(
            (flow["wall_s"] - flow["stage_compute_s"]) / fresh["wall_s"], 4)
        result["flow_vs_dvc"] = round(flow["wall_s"] / fresh["wall_s"] - 1, 4)
    else:
        result["flow"] = None
        result["temporary_server_noop"] = None
        result["orchestration_overhead"] = None
        result["flow_vs_dvc"] = None
    return result
