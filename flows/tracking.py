"""MLflow tracking for stages: one run per stage, grouped under one pipeline run.

`sqlite:///mlflow.db` by default; `MLFLOW_TRACKING_URI` is honoured. When a pipeline driver
(`distillery repro`, the Prefect flow) sets `DISTILLERY_PARENT_RUN_ID`, stage runs nest under it;
every run is also tagged with the git commit and the data hash so they group without a parent.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PARENT_ENV = "DISTILLERY_PARENT_RUN_ID"
# the MLflow 3 UI opens an experiment of this kind on its model-training views
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


# What the pipeline itself writes into git-tracked places: not a source change.
PIPELINE_WRITES = ("dvc.lock", ".gitignore", "metrics/", "reports/")


def git_commit() -> str:
    """HEAD's commit, suffixed `-dirty` when a tracked source file differs; `unknown` outside git.

    Files the pipeline writes itself (dvc.lock, DVC's .gitignore entries, metrics) do not count:
    they are outputs of the commit, not changes to it.
    """
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, check=True).stdout
        changed = [line[3:].split(" -> ")[-1] for line in status.splitlines() if line.strip()]
        dirty = [p for p in changed
                 if not (p.startswith(PIPELINE_WRITES) or p.endswith(".gitignore"))]
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are kept as values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def numeric_metrics(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in flatten(d).items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def configured_mlflow() -> Any:
    """`mlflow`, imported late (heavy) and pointed at `tracking_uri()`."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def use_experiment(mlflow: Any, name: str) -> None:
    """Make ``name`` the active experiment, marked as a model-training one unless the user
    already gave it a kind."""
    experiment = mlflow.set_experiment(name)
    key, kind = EXPERIMENT_KIND
    if key not in (experiment.tags or {}):
        mlflow.set_experiment_tag(key, kind)


def log_prepared_input(prepared: Path, manifest: dict[str, Any], context: str) -> None:
    """The prepared dataset as an input of the active run (`mlflow.log_input`): its folder, its
    content hash as the digest, and its split sizes as tags. Nothing is loaded."""
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(Path(prepared).resolve()))
    name = (manifest.get("source") or {}).get("kind") or Path(prepared).name
    dataset = MetaDataset(source=source, name=str(name), digest=str(manifest["data_hash"])[:36])
    counts = {f"count.{split}": str(info["count"])
              for split, info in (manifest.get("splits") or {}).items()
              if isinstance(info, dict) and "count" in info}
    mlflow.log_input(dataset, context=context, tags=counts)


@contextlib.contextmanager
def start_stage_run(stage: str, experiment: str, tags: dict[str, str]) -> Iterator[Any]:
    """Open the MLflow run of one stage (nested under the pipeline run when there is one).

    The run ends FINISHED, FAILED when the body raises, KILLED on KeyboardInterrupt/SystemExit.
    When the store cannot take the final status, the body's own error is raised, with a note.
    """
    mlflow = configured_mlflow()
    use_experiment(mlflow, experiment)
    parent = os.environ.get(PARENT_ENV)
    all_tags = {"distillery.stage": stage, "git_commit": git_commit(), **tags}
    if parent:
        all_tags["mlflow.parentRunId"] = parent
    run = mlflow.start_run(run_name=stage, tags=all_tags)
    try:
        yield run
    except BaseException as e:
        # an interrupt (SIGTERM raises a KeyboardInterrupt in the stage runner) is KILLED
        status = "KILLED" if isinstance(e, KeyboardInterrupt | SystemExit) else "FAILED"
        try:
            mlflow.end_run(status)
        except Exception as end_error:  # noqa: BLE001 - the stage's own error is the report
            e.add_note(f"MLflow run {run.info.run_id} of stage `{stage}` could not be marked "
                       f"{status} at {tracking_uri()}: {end_error}")
        raise
    mlflow.end_run("FINISHED")


@contextlib.contextmanager
def start_pipeline_run(experiment: str, name: str = "pipeline") -> Iterator[Any]:
    """Parent run for a whole chain; children find it through `DISTILLERY_PARENT_RUN_ID`."""
    mlflow = configured_mlflow()
    use_experiment(mlflow, experiment)
    with mlflow.start_run(run_name=name, tags={"git_commit": git_commit(),
                                               "distillery.stage": "pipeline"}) as run:
        previous = os.environ.get(PARENT_ENV)
        os.environ[PARENT_ENV] = run.info.run_id
        try:
            yield run
        finally:
            if previous is None:
                os.environ.pop(PARENT_ENV, None)
            else:
                os.environ[PARENT_ENV] = previous


def log_stage(
    params: dict[str, Any],
    metrics: dict[str, Any],
    history: dict[str, list[dict[str, float]]] | None = None,
    artifacts: list[Path] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Log a stage's params (flattened), metrics, per-epoch history (batched), artifacts, tags."""
    import mlflow
    from mlflow.entities import Metric, Param

    client = mlflow.tracking.MlflowClient()
    run_id = mlflow.active_run().info.run_id
    flat = {k: str(v)[:6000] for k, v in flatten(params).items()}
    items = [Param(k, v) for k, v in flat.items()]
    for i in range(0, len(items), 100):  # MLflow's batch limit is 100 params
        client.log_batch(run_id, params=items[i : i + 100])
    now = _now_ms()
    values = [Metric(k, v, now, 0) for k, v in numeric_metrics(metrics).items()]
    for series, rows in (history or {}).items():
        for row in rows:
            step = int(row.get("epoch", 0))
            values += [Metric(f"{series}.{k}", float(v), now, step) for k, v in row.items()
                       if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)]
    for i in range(0, len(values), 1000):  # and 1000 metrics
        client.log_batch(run_id, metrics=values[i : i + 1000])
    for path in artifacts or []:
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=path.name)
        elif path.exists():
            mlflow.log_artifact(str(path))
    if tags:
        mlflow.set_tags(tags)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
