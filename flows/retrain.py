"""`retrain`: the scheduled run. Pull the data, refresh and validate it, run the pipeline, push.

Bad data stops the run at `validate`, before any training. The schedule comes from the
`schedule:` section of params.yaml (`ScheduleConfig`): `serve()` runs it in this process
(development), `apply_deployment()` registers it with a Prefect server for a work pool's worker
(production, see infra/README.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.tasks import exponential_backoff

from components.config import ScheduleConfig
from flows.dvc_ops import StageFailed, run_dvc
from flows.notify import apprise_url, failure_hook
from flows.pipeline import pipeline_flow

IO_RETRIES = 3


class DataRejected(RuntimeError):
    """`validate` refused the data: nothing was trained on it."""


def load_schedule(params_path: str | Path = "params.yaml") -> ScheduleConfig:
    """The `schedule:` section of params.yaml, validated; defaults when it is absent."""
    path = Path(params_path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    return ScheduleConfig.model_validate((raw or {}).get("schedule") or {})


@task(retries=IO_RETRIES, retry_delay_seconds=exponential_backoff(backoff_factor=10),
      retry_jitter_factor=0.5)
def pull_data(repo: str) -> str:
    """`dvc pull`; objects missing on the remote (first run, empty remote) are rebuilt later."""
    return run_dvc(["pull", "--allow-missing"], repo, timeout_s=3600)


@task(retries=IO_RETRIES, retry_delay_seconds=exponential_backoff(backoff_factor=10),
      retry_jitter_factor=0.5)
def push_data(repo: str) -> str:
    """`dvc push` every output of the pipeline to the default remote."""
    return run_dvc(["push"], repo, timeout_s=3600)


@task
def check_data(repo: str, refresh: bool) -> None:
    """Check the params, re-read the source (ingest, forced when `refresh`), then `validate`;
    raise on bad data."""
    run_dvc(["repro", "--single-item", "check"], repo)  # before ingest removes anything
    run_dvc(["repro", "--single-item", *(["--force"] if refresh else []), "ingest"], repo)
    try:
        run_dvc(["repro", "--single-item", "validate"], repo)
    except StageFailed as e:
        raise DataRejected(f"data rejected by `validate`; nothing trained. See "
                           f"{Path(repo) / 'reports/failed/validate'}\n{e}") from None


@flow(name="retrain")
def retrain(repo: str = ".", refresh_source: bool = True, push: bool = True,
            dask_address: str | None = None, stage_timeout_s: float | None = None) -> list[Any]:
    """Pull -> refresh + validate -> compression_pipeline -> push."""
    repo = str(Path(repo).resolve())
    pull_data(repo)
    check_data(repo, refresh_source)
    records = pipeline_flow(dask_address)(repo=repo, stage_timeout_s=stage_timeout_s)
    if push:
        push_data(repo)
    get_run_logger().info("retrain done: %s",
                          ", ".join(f"{r.name}={r.status}" for r in records))
    return records


def build_deployment(cfg: ScheduleConfig, repo: str | Path = "."):
    """`retrain` as a RunnerDeployment carrying the configured cron schedule."""
    from prefect.schedules import Cron

    parameters = {"repo": str(Path(repo).resolve()), **cfg.parameters}
    flow_ = retrain.with_options(on_failure=[failure_hook(apprise_url(repo))])
    return flow_.to_deployment(name=cfg.deployment, parameters=parameters, tags=["distillery"],
                               schedules=[Cron(cfg.cron, timezone=cfg.timezone)],
                               description="Scheduled retrain: pull, validate, pipeline, push.")


def apply_deployment(cfg: ScheduleConfig, repo: str | Path = ".") -> str:
    """Register the deployment with the Prefect API (returns its id); runs need a worker
    on `cfg.work_pool`, or `serve()` for a pool-less deployment."""
    return str(build_deployment(cfg, repo).apply(work_pool_name=cfg.work_pool))


def serve(cfg: ScheduleConfig, repo: str | Path = ".") -> None:
    """Serve the deployment from this process until interrupted (development)."""
    from prefect import serve as prefect_serve

    prefect_serve(build_deployment(cfg, repo))
