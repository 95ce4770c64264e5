"""`compression_pipeline`: the dvc.yaml stages as Prefect tasks, built from the stage graph.

DVC stays the record of what is up to date: each task asks DVC whether its stage changed, runs it
only then, and leaves `dvc.lock` exactly as a plain `dvc repro` would. Stages are submitted in
topological order, each waiting only for its upstream futures, so independent stages (the
`train_teachers@*` items) run in parallel through the flow's task runner.

Two ways to run a stage:
- locally (threads), in warm worker processes (`flows.workers`): the stage's imports are paid once
  per worker, not once per stage; each worker also runs the stage's DVC status and commit;
- on a Dask cluster (`DISTILLERY_DASK_ADDRESS`), or for a command that is not `distillery stage`,
  as `dvc repro --single-item STAGE` in a subprocess.

What a stage logs (its `distillery` log records and stderr lines in a worker, the output of its
`dvc repro` process) goes to the Prefect run logs of its task when it ends, the last
`STAGE_LOG_LINES` lines of it: a chatty stage cannot flood the API.

The flow owns its children. SIGTERM or SIGINT stops the workers (their process groups) and the
`dvc repro` processes (`flows.dvc_ops.terminate_running`) at once:
the running stages fail, their outputs go to `reports/failed/<stage>/`, nothing of theirs reaches
dvc.lock, and the flow ends with `FlowInterrupted` (MLflow pipeline run KILLED, Prefect flow run
FAILED). A flow killed outright (SIGKILL) leaves its pipeline run RUNNING; the next flow (or
`distillery repro`) finds it by the pid it recorded and marks it FAILED.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, task
from prefect.context import FlowRunContext
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from flows.dvc_ops import (
    StageFailed,
    order_lockfile,
    read_lock_entry,
    run_dvc,
    stage_changed,
    terminate_running,
)
from flows.graph import StageGraph, StageNode, read_graph
from flows.notify import apprise_url, failure_hook
from flows.workers import (
    StageJob,
    StageWorkers,
    WorkerError,
    default_size,
    parse_stage_cmd,
    pool_for,
    stage_workers,
)

DASK_ENV = "DISTILLERY_DASK_ADDRESS"
TIMEOUT_ENV = "DISTILLERY_STAGE_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 6 * 3600.0
EVALUATION_REPORT = Path("reports/evaluate/evaluate.md")
# Recorded on the MLflow pipeline run: which process owns it, to tell a crashed run from a live one
PID_TAG, HOST_TAG, STARTED_TAG = "distillery.pid", "distillery.host", "distillery.pid_started"
INTERRUPTS = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}
STAGE_LOG_LINES = 200  # per stage, the most lines forwarded to the Prefect run logs


class FlowInterrupted(StageFailed):
    """SIGTERM or SIGINT stopped the flow; the stages it interrupted committed nothing."""

    def __init__(self, signum: int, failed: list[str]) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {INTERRUPTS.get(signum, signum)}; stages stopped or "
                         f"not run: {', '.join(failed) or 'none'}")


@dataclass
class StageRecord:
    """What a stage task returns: DVC's version of its inputs and where its run was tracked."""

    name: str
    status: str  # ran | skipped (DVC: unchanged) | restored (DVC: run cache, no new run)
    seconds: float
    inputs: dict[str, str] = field(default_factory=dict)  # dep path -> md5, from dvc.lock
    params: dict[str, Any] = field(default_factory=dict)  # params.yaml keys, from dvc.lock
    mlflow_run_id: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    # where `seconds` went, when a warm worker ran it: DVC (status, commit) and the stage runner
    timings: dict[str, float] = field(default_factory=dict)


# --- MLflow look-ups ---------------------------------------------------------------------------


def find_stage_run(name: str, parent_run_id: str, experiment: str, uri: str) -> str | None:
    """Id of the MLflow run that `distillery stage` logged for NAME under the pipeline run."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=(f"tags.`distillery.stage` = '{name}' "
                       f"and tags.`mlflow.parentRunId` = '{parent_run_id}'"),
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0].info.run_id if runs else None


# --- the stage task -----------------------------------------------------------------------------


class StageLog:
    """The last ``limit`` lines a stage logged, as ``(level, line)``; call it with each line."""

    def __init__(self, limit: int = STAGE_LOG_LINES) -> None:
        self.lines: deque[tuple[int, str]] = deque(maxlen=limit)
        self.seen = 0
        self._lock = threading.Lock()

    def __call__(self, level: int, line: str) -> None:
        with self._lock:
            self.seen += 1
            self.lines.append((level, line))

    def forward(self, address: str, logger: logging.Logger | logging.LoggerAdapter) -> None:
        """Log the kept lines on ``logger`` at their own level, after a note of those dropped."""
        with self._lock:
            lines, dropped = list(self.lines), self.seen - len(self.lines)
        if dropped:
            logger.info("stage `%s`: %d earlier line(s) of its log left out, the last %d follow",
                        address, dropped, len(lines))
        for level, line in lines:
            logger.log(level, "%s", line)


def run_logger(address: str) -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger of the task running ``address``; outside a run (``task.fn()``)
    the `distillery.stage` logger."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(f"distillery.stage.{address}")


@task(name="stage")
def reproduce_stage(node: StageNode, repo: str, env: dict[str, str], experiment: str,
                    timeout_s: float, force: bool = False) -> StageRecord:
    """Reproduce one stage (warm worker or `dvc repro`) and record DVC's version of it."""
    start = time.perf_counter()
    pool = pool_for(repo)
    call = parse_stage_cmd(node.cmd) if pool else None
    timings: dict[str, float] = {}
    log = StageLog()
    try:
        if pool is not None and call is not None:
            result = run_in_worker(StageJob(node.name, call, node.outs, force), pool, repo, env,
                                   timeout_s, log)
            changed = result.pop("status") == "ran"
            timings = result
        else:
            changed = force or stage_changed(node.name, repo, env)
            if changed:
                run_dvc(["repro", "--single-item", *(["--force"] if force else []), node.name],
                        repo, env, timeout_s, log)
    finally:
        log.forward(node.name, run_logger(node.name))
    inputs, params = read_lock_entry(node.name, repo)
    parent, uri = env.get("DISTILLERY_PARENT_RUN_ID"), env.get("MLFLOW_TRACKING_URI", "")
    run_id = find_stage_run(node.name, parent, experiment, uri) if changed and parent else None
    status = "skipped" if not changed else "ran" if run_id else "restored"
    metrics = {}
    for path in node.metrics:
        if (Path(repo) / path).exists():
            metrics.update(yaml.safe_load((Path(repo) / path).read_text(encoding="utf-8")) or {})
    return StageRecord(node.name, status, round(time.perf_counter() - start, 3), inputs, params,
                       run_id, metrics, timings)


def run_in_worker(job: StageJob, pool: StageWorkers, repo: str, env: dict[str, str],
                  timeout_s: float, log: StageLog | None = None) -> dict[str, Any]:
    """`dvc repro --single-item` in a warm worker (`flows.workers.reproduce`'s result);
    StageFailed on failure. ``log`` gets what the stage logged."""
    from flows.stages import quarantine

    try:
        return pool.run(job, env, timeout_s, log)
    except WorkerError as e:
        # the stage moves its outputs aside itself; a killed or dead worker cannot
        root = Path(repo)
        quarantine(job.address, [root / p for p in job.outs], root=root)
        raise StageFailed(f"stage `{job.address}` failed: {e}") from None


def stage_timeout(node: StageNode, default_s: float | None,
                  overrides: dict[str, float] | None) -> float:
    """Per-stage timeout: by address, else by stage name, else the default / env / 6 h."""
    overrides = overrides or {}
    fallback = default_s or float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S)
    return float(overrides.get(node.name, overrides.get(node.stage, fallback)))


def plan(graph: StageGraph, hook=None) -> dict[str, Any]:
    """One task per stage, named as in dvc.yaml, in topological order."""
    # No Prefect `timeout_seconds`: in a worker thread it cannot interrupt a blocking call, so
    # the stage's runner enforces it by ending the process (`StageWorkers.run` or `run_dvc`).
    hooks = [hook] if hook else []
    return {name: reproduce_stage.with_options(name=name, task_run_name=name, on_failure=hooks,
                                               **io_retries(graph.stages[name].stage))
            for name in graph.order}


# Stages whose work is I/O against a service (the model registry): retried with back-off.
# Training stages are not: a failed fit is a bug or bad data, not a flaky network.
IO_STAGES = {"register"}


def io_retries(stage: str) -> dict[str, Any]:
    from prefect.tasks import exponential_backoff

    if stage not in IO_STAGES:
        return {}
    return {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=5),
            "retry_jitter_factor": 0.5}


# --- reporting ----------------------------------------------------------------------------------


def run_link(run_id: str | None, experiment_id: str | None) -> str:
    from flows.tracking import tracking_uri

    uri = tracking_uri()
    if not run_id:
        return ""
    if uri.startswith("http") and experiment_id:
        return f"[{run_id[:8]}]({uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})"
    return run_id


def publish_report(records: list[StageRecord], failed: list[str], repo: str,
                   parent_run: Any) -> str:
    """A table artifact (lineage) and a markdown artifact (evaluation + MLflow links)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    exp_id = parent_run.info.experiment_id
    create_table_artifact(
        [{"stage": r.name, "status": r.status, "seconds": r.seconds,
          "dvc_s": r.timings.get("dvc_s", ""), "stage_s": r.timings.get("stage_s", ""),
          "inputs": ", ".join(f"{p}:{h[:8]}" for p, h in r.inputs.items()),
          "mlflow_run": r.mlflow_run_id or ""} for r in records],
        key="distillery-stages", description="Stages: DVC input hashes and MLflow runs",
    )
    lines = [f"# Distillery pipeline: {'FAILED ' + ', '.join(failed) if failed else 'ok'}", "",
             f"MLflow pipeline run: {run_link(parent_run.info.run_id, exp_id)}", ""]
    report = Path(repo) / EVALUATION_REPORT
    if report.exists():
        lines += [report.read_text(encoding="utf-8"), ""]
    lines += ["| stage | status | seconds | MLflow run | metrics |", "|---|---|---|---|---|"]
    from flows.tracking import numeric_metrics

    for r in records:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in list(numeric_metrics(r.metrics).items())[:6])
        lines.append(f"| {r.name} | {r.status} | {r.seconds} | "
                     f"{run_link(r.mlflow_run_id, exp_id)} | {shown} |")
    lines += [f"| {name} | failed / not run | | | |" for name in failed]
    markdown = "\n".join(lines)
    create_markdown_artifact(markdown, key="distillery-report",
                             description="Evaluation and MLflow runs of this pipeline run")
    return markdown


@contextlib.contextmanager
def tracking_env(repo: str | Path) -> Iterator[str]:
    """Pin MLFLOW_TRACKING_URI for the run: the default sqlite file is made absolute in `repo`,
    so stage subprocesses (cwd=repo) and this process write to the same store."""
    from flows.tracking import DEFAULT_TRACKING_URI

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    uri = previous or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{(Path(repo) / uri.removeprefix('sqlite:///')).resolve()}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield uri
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


# --- owning the children: signals, stale runs ----------------------------------------------------


@contextlib.contextmanager
def stop_on_signals(repo: str | Path) -> Iterator[dict[str, int]]:
    """While the block runs, SIGTERM and SIGINT stop ``repo``'s stage workers and every `dvc`
    command `flows.dvc_ops.run_dvc` runs, at once.

    Yields a dict that gets ``signal`` when one arrived; the block then ends as its stages fail.
    Main thread only (Python delivers signals there); the previous handlers come back after.
    """
    caught: dict[str, int] = {}
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def stop(signum: int, frame: Any) -> None:
        first = "signal" not in caught
        caught.setdefault("signal", signum)
        pool = pool_for(repo)
        if first and pool is not None:
            pool.terminate()
        if first:
            terminate_running()  # the `dvc repro` stages (workers=0, other commands)

    with handling_interrupts(stop):
        yield caught


@contextlib.contextmanager
def handling_interrupts(handler: Any) -> Iterator[None]:
    """``handler`` for SIGTERM and SIGINT while the block runs; the previous ones after."""
    previous = {sig: signal.signal(sig, handler) for sig in INTERRUPTS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def record_owner(run_id: str, uri: str) -> None:
    """Tag the pipeline run with this process (pid, its start time, host)."""
    import mlflow
    import psutil
    from mlflow.entities import RunTag

    me = psutil.Process()
    tags = {PID_TAG: str(me.pid), STARTED_TAG: f"{me.create_time():.3f}",
            HOST_TAG: socket.gethostname()}
    mlflow.MlflowClient(uri).log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def owner_alive(tags: dict[str, str]) -> bool:
    """Whether the process recorded in a pipeline run's tags still runs (other hosts: assumed)."""
    import psutil

    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return True
    try:
        started = psutil.Process(int(tags[PID_TAG])).create_time()
    except psutil.NoSuchProcess:
        return False
    return abs(started - float(tags.get(STARTED_TAG) or started)) < 1.0  # not a reused pid


def fail_orphaned_runs(experiment: str, uri: str, repo: str | Path = ".",
                       graph: StageGraph | None = None) -> list[str]:
    """Mark RUNNING pipeline runs whose recorded process is dead FAILED, with their RUNNING stage
    runs; quarantine what those stages left at their outputs. Returns the pipeline run ids."""
    import mlflow

    from flows.stages import quarantine

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    running = client.search_runs([exp.experiment_id], filter_string=(
        "tags.`distillery.stage` = 'pipeline' and attributes.status = 'RUNNING'"))
    failed = []
    for run in running:
        if owner_alive(run.data.tags):
            continue
        stages = client.search_runs([exp.experiment_id], filter_string=(
            f"tags.`mlflow.parentRunId` = '{run.info.run_id}' and attributes.status = 'RUNNING'"))
        for stage_run in stages:
            address = stage_run.data.tags.get("distillery.stage", "")
            node = graph.stages.get(address) if graph else None
            if node is not None:
                quarantine(address, [Path(p) for p in node.outs], root=Path(repo))
            client.set_terminated(stage_run.info.run_id, "FAILED")
        client.set_tag(run.info.run_id, "distillery.failure",
                       f"process {run.data.tags.get(PID_TAG)} died (killed?) while running")
        client.set_terminated(run.info.run_id, "FAILED")
        failed.append(run.info.run_id)
    return failed


# --- the flow -----------------------------------------------------------------------------------


@flow(name="compression_pipeline", task_runner=ThreadPoolTaskRunner())
def compression_pipeline(
    repo: str = ".",
    targets: list[str] | None = None,
    stage_timeout_s: float | None = None,
    stage_timeouts: dict[str, float] | None = None,
    force: bool = False,
    workers: int | None = None,
) -> list[StageRecord]:
    """Reproduce the DVC pipeline (or TARGETS and their upstream) as one tracked Prefect run.

    ``workers``: warm stage processes (default: one per core, at most the widest parallel group;
    0: every stage as its own `dvc repro` process). Not used on Dask: its workers run `dvc repro`.
    """
    from components.config import load_params
    from flows.tracking import PARENT_ENV, start_pipeline_run

    repo = str(Path(repo).resolve())
    experiment = load_params(Path(repo) / "params.yaml").tracking.experiment  # fail early
    full_graph = read_graph(repo)
    graph = full_graph.upstream_closure(targets) if targets else full_graph
    timeouts = {n: stage_timeout(s, stage_timeout_s, stage_timeouts)
                for n, s in graph.stages.items()}
    tasks = plan(graph, failure_hook(apprise_url(repo)))
    size = default_size(max(map(len, graph.groups), default=1)) if workers is None else workers
    if not isinstance(FlowRunContext.get().task_runner, ThreadPoolTaskRunner):
        size = 0  # tasks run elsewhere (Dask): no pool of this process can serve them
    outer_pool = pool_for(repo)
    with tracking_env(repo) as uri, stage_workers(repo, size) as pool:
        fail_orphaned_runs(experiment, uri, repo, full_graph)
        with start_pipeline_run(experiment) as parent, stop_on_signals(repo) as caught:
            record_owner(parent.info.run_id, uri)
            env = {"MLFLOW_TRACKING_URI": uri, PARENT_ENV: parent.info.run_id}
            futures: dict[str, Any] = {}
            for name, node in graph.stages.items():
                futures[name] = tasks[name].submit(
                    node, repo, env, experiment, timeouts[name], force,
                    wait_for=[futures[u] for u in node.upstream if u in futures],
                )
            wait(list(futures.values()))
            if pool is not None and pool is not outer_pool:
                pool.close()  # no stage is left: the workers exit while the report is written
            records = [f.state.result() for f in futures.values() if f.state.is_completed()]
            failed = [n for n, f in futures.items() if not f.state.is_completed()]
            order_lockfile(repo, full_graph.order)
            publish_report(records, failed, repo, parent)
            if "signal" in caught:
                import mlflow

                mlflow.end_run("KILLED")  # the run context then has no run left to mark FAILED
                raise FlowInterrupted(caught["signal"], failed)
            if failed:  # raising inside the MLflow run marks it FAILED too
                raise StageFailed(f"stages failed or not run: {', '.join(failed)}")
    return records


def task_runner(dask_address: str | None = None):
    """Dask when an address is given (or `DISTILLERY_DASK_ADDRESS` is set), else threads."""
    address = dask_address or os.environ.get(DASK_ENV)
    if address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    return ThreadPoolTaskRunner()


def pipeline_flow(dask_address: str | None = None):
    """`compression_pipeline` with the task runner chosen by `task_runner()`."""
    return compression_pipeline.with_options(task_runner=task_runner(dask_address),
                                             on_failure=[failure_hook(apprise_url())])


def records_table(records: list[StageRecord]) -> list[dict[str, Any]]:
    return [asdict(r) for r in records]
