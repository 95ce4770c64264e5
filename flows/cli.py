"""`distillery`: the command-line entry point.

`check` validates params.yaml, `stage` runs one DVC stage (what dvc.yaml calls), `repro` runs
`dvc repro` under one MLflow pipeline run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distillery: small, fast, verified models from a labelled image dataset.")

# Off unless the user turns them on (set any of these in the environment to override).
QUIET_DEFAULTS = {
    "DO_NOT_TRACK": "1",  # Prefect's and others' usage telemetry
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # Prefect's temporary server must start within this; 20 s (its default) is missed on a
    # busy 2-core machine while the stage workers import torch
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


@app.callback()
def _defaults() -> None:
    """Distillery: small, fast, verified models from a labelled image dataset."""
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)


# Errors a user can act on: print the message, not a traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, RuntimeError)


def _fail(e: BaseException) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def venv_path(path: str | None = None) -> str:
    """PATH with this interpreter's bin folder first: the venv's `dvc`, `uvicorn`, `mlflow` are
    found by child processes whether or not the venv is activated."""
    bin_dir = str(Path(sys.executable).parent)
    rest = [p for p in (os.environ.get("PATH", "") if path is None else path).split(os.pathsep)
            if p and p != bin_dir]
    return os.pathsep.join([bin_dir, *rest])


STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"


def start_prefect_api() -> int | None:
    """Start Prefect's temporary API server now (when no PREFECT_API_URL is set); its pid.

    A start-up timeout becomes one line naming the cause and the setting to raise; a reaper
    process ends the server should this process be killed before Prefect's exit hook runs.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    try:
        server.start()
    except RuntimeError as e:
        server.stop()  # Prefect leaves a server that missed its deadline running
        if "Timed out" not in str(e):
            raise
        typer.secho(f"error: Prefect's temporary API server did not answer within "
                    f"{os.environ.get(STARTUP_TIMEOUT_ENV, '20')} s; raise "
                    f"{STARTUP_TIMEOUT_ENV} (e.g. {STARTUP_TIMEOUT_ENV}=600) or set "
                    f"PREFECT_API_URL to a running server", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    pid = server.server_process.pid
    code = ("import sys; from flows.worker_child import reap_when_orphaned; "
            "reap_when_orphaned(int(sys.argv[1]), [int(sys.argv[2])])")
    subprocess.Popen([sys.executable, "-c", code, str(os.getpid()), str(pid)],
                     start_new_session=True, stdin=subprocess.DEVNULL)
    return pid


@contextlib.contextmanager
def interrupts_stop_workers() -> Iterator[dict[str, int]]:
    """SIGTERM/SIGINT outside the flow's body (start-up, teardown): stop the stage workers and
    leave what was running with KeyboardInterrupt; the flow's body has its own handlers."""
    from flows.dvc_ops import terminate_running
    from flows.pipeline import handling_interrupts
    from flows.workers import pool_for

    caught: dict[str, int] = {}

    def stop(signum: int, frame: Any) -> None:
        caught.setdefault("signal", signum)
        pool = pool_for(".")
        if pool is not None:
            pool.terminate()
        terminate_running()
        raise KeyboardInterrupt

    with handling_interrupts(stop):
        yield caught


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record comes (a test runner may swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _log_progress() -> None:
    """Stage progress (the `distillery` loggers, e.g. one line per epoch off a TTY) to stderr."""
    logger = logging.getLogger("distillery")
    if not logger.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


@app.command()
def check(params: Path = typer.Option(Path("params.yaml"), help="Params file.")) -> None:
    """Validate the whole params file and exit non-zero, naming each bad key."""
    from components.config import load_params

    try:
        load_params(params)
    except _USER_ERRORS as e:
        _fail(e)
    typer.echo(f"{params}: ok")


@app.command()
def stage(
    name: str = typer.Argument(..., help="Stage name as in dvc.yaml."),
    item: str = typer.Option(None, help="Item of a foreach stage (e.g. the teacher's name)."),
    params: Path = typer.Option(Path("params.yaml")),
) -> None:
    """Run one pipeline stage (this is what `dvc repro` calls)."""
    from flows.stages import run_stage

    _log_progress()
    try:
        run_stage(name, item, params)
    except Exception as e:  # noqa: BLE001 - the message is the report (DataValidationError...)
        if os.environ.get("DISTILLERY_DEBUG"):
            raise
        _fail(e)


@app.command()
def repro(
    targets: list[str] = typer.Argument(None, help="DVC targets (default: the whole pipeline)."),
    force: bool = typer.Option(False, help="Re-run stages even when up to date."),
) -> None:
    """Run `dvc repro` with every stage's MLflow run nested under one pipeline run.

    When DVC has nothing to do (and no `--force`), it says so and opens no MLflow run.
    """
    from components.config import load_params
    from flows.dvc_ops import changed_stages
    from flows.summary import pipeline_summary

    try:
        experiment = load_params().tracking.experiment
        stale = force or bool(changed_stages(".", targets or None))
        lacking = [] if stale else registry_lacks(targets)
        if not stale and not lacking:
            typer.echo("Data and pipelines are up to date: nothing to run.")
            typer.echo(pipeline_summary())
            return
    except _USER_ERRORS as e:
        _fail(e)
    from flows.pipeline import fail_orphaned_runs, record_owner
    from flows.tracking import start_pipeline_run, tracking_uri

    fail_orphaned_runs(experiment, tracking_uri())
    with start_pipeline_run(experiment) as run:
        record_owner(run.info.run_id, tracking_uri())
        if stale:
            _dvc(["repro", *(targets or []), *(["--force"] if force else [])], run)
            lacking = registry_lacks(targets)
        if lacking:  # the registry changed under DVC: register the bundles again, no retraining
            typer.echo("the registry lacks " + "; ".join(lacking) + ": registering again")
            _dvc(["repro", "--force", "--single-item", "register"], run)
    typer.echo(pipeline_summary())


def _dvc(args: list[str], run: Any) -> None:
    """One committing `dvc` command inside the pipeline run, its cache copies verified."""
    from flows.dvc_ops import CacheIncomplete, read_lock_stages, verify_commit

    before = read_lock_stages(".")
    code = subprocess.run(["dvc", *args], env={**os.environ, "PATH": venv_path()}).returncode
    try:  # DVC exits 0 even when a full disk cut its cache copy short
        verify_commit(".", before)
    except CacheIncomplete as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        code = code or 1
    if code:  # raising inside the run marks it FAILED in MLflow
        typer.secho(f"dvc {' '.join(args)} failed (exit {code}); MLflow run {run.info.run_id}",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(code)


def registry_lacks(targets: list[str] | None = None) -> list[str]:
    """What the last `register` recorded that the configured registry does not hold (another
    tracking URI, a wiped store); a registry that cannot be read forces nothing, with a warning.
    Empty when ``targets`` leave `register` out."""
    from flows.graph import stage_io
    from flows.registry import missing_versions

    if targets and "register" not in targets:
        return []
    try:
        metrics = stage_io("register").metrics
    except ValueError:  # a dvc.yaml without a register stage
        return []
    try:
        return missing_versions(metrics)
    except Exception as e:  # noqa: BLE001 - an outage: say so, and do not re-register blindly
        typer.secho(f"warning: cannot read the registry ({e}); `register` not re-run",
                    fg=typer.colors.YELLOW, err=True)
        return []


@app.command()
def run(
    targets: list[str] = typer.Argument(None, help="Stages to bring up to date (default: all)."),
    force: bool = typer.Option(False, help="Re-run stages even when up to date."),
    dask_address: str = typer.Option(None, envvar="DISTILLERY_DASK_ADDRESS",
                                     help="Dask scheduler address for parallel stages."),
    stage_timeout: float = typer.Option(None, help="Seconds allowed per stage."),
) -> None:
    """Run the DVC pipeline as the Prefect flow `compression_pipeline`."""
    from flows.pipeline import pipeline_flow
    from flows.workers import default_size, stage_workers

    # Local runs: the stage workers start now and warm up while Prefect creates the flow run.
    size = 0 if dask_address else default_size(os.cpu_count() or 1)
    os.environ["PATH"] = venv_path()
    with interrupts_stop_workers() as caught:
        try:
            with stage_workers(".", size):
                start_prefect_api()
                state = pipeline_flow(dask_address)(targets=targets or None, force=force,
                                                    stage_timeout_s=stage_timeout,
                                                    return_state=True)
        except KeyboardInterrupt:
            caught.setdefault("signal", signal.SIGINT)
            state = None
    if state is None or _interrupted(state, caught):
        _exit_interrupted(caught, state)
    records = state.result(raise_on_failure=False)
    for r in records if isinstance(records, list) else []:
        if hasattr(r, "status"):
            spent = "  ".join(f"{k} {v:.1f}" for k, v in (r.timings or {}).items())
            typer.echo(f"{r.name:28} {r.status:8} {r.seconds:8.1f}s  {r.mlflow_run_id or '':32}"
                       f"  {spent}")
    if not state.is_completed():
        typer.secho(f"flow {state.name}: {state.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    from flows.summary import pipeline_summary

    typer.echo(pipeline_summary())


def _interrupted(state: Any, caught: dict[str, int]) -> bool:
    from flows.pipeline import FlowInterrupted

    if "signal" in caught:
        return True
    if not state.is_failed():
        return False
    error = state.result(raise_on_failure=False)
    if isinstance(error, FlowInterrupted):
        caught["signal"] = error.signum
        return True
    return False


def _exit_interrupted(caught: dict[str, int], state: Any) -> None:
    """One line, then 128 + the signal (130 for SIGINT, 143 for SIGTERM), as a shell reports."""
    signum = caught.get("signal", signal.SIGINT)
    message = state.message if state is not None else "before the flow run started"
    typer.secho(f"interrupted by {signal.Signals(signum).name}: {message}",
                fg=typer.colors.RED, err=True)
    raise typer.Exit(128 + signum)


@app.command()
def retrain(
    push: bool = typer.Option(True, help="Push artifacts to the DVC remote at the end."),
    dask_address: str = typer.Option(None, envvar="DISTILLERY_DASK_ADDRESS"),
) -> None:
    """Pull, validate, rebuild what changed, evaluate, register and promote, push."""
    from flows.retrain import retrain as retrain_flow

    os.environ["PATH"] = venv_path()
    start_prefect_api()
    state = retrain_flow(push=push, dask_address=dask_address, return_state=True)
    if not state.is_completed():
        typer.secho(f"retrain: {state.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@app.command()
def serve() -> None:
    """Serve the `retrain` deployment on params.yaml's `schedule` (blocks)."""
    from flows.retrain import load_schedule
    from flows.retrain import serve as serve_retrain

    os.environ["PATH"] = venv_path()  # the flow runs' children: `dvc`, `mlflow`, `uvicorn`
    serve_retrain(load_schedule())


@app.command()
def deploy() -> None:
    """Register the `retrain` deployment with the Prefect server (`schedule.work_pool`)."""
    from flows.retrain import apply_deployment, load_schedule

    typer.echo(apply_deployment(load_schedule()))


# The few figures `status` shows per stage (dotted keys into the stage's metrics file).
HEADLINE = {
    "validate": ["success", "failed_expectations"],
    "train_teachers": ["test_accuracy", "params"],
    "ensemble": ["ensemble.test_accuracy"],
    "distill": ["student.test_accuracy", "student.params", "kd_gain_mean"],
    "prune": ["test_accuracy_after", "macs_before", "macs_after"],
    "quantize": ["variants.fp32.test_accuracy", "variants.int8.test_accuracy", "int8_status"],
    "evaluate": ["selected"],
    "register": ["outcome", "candidate"],
}


@app.command()
def status() -> None:
    """Each stage in order, up to date or stale, its headline metrics; the current champion."""

    from components.core.io import read_json
    from flows.dvc_ops import changed_stages
    from flows.graph import read_graph
    from flows.tracking import flatten

    graph = read_graph(".")
    stale = changed_stages(".")  # one dvc call for every stage
    for name, node in graph.stages.items():
        values: dict = {}
        for path in node.metrics:
            if Path(path).exists():
                values.update(flatten(read_json(path)))
        shown = []
        for key in HEADLINE.get(node.stage, []):
            picked = {k: v for k, v in values.items() if k == key or k.startswith(key + ".")}
            shown += [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in picked.items()]
        lacking = registry_lacks() if node.stage == "register" else []
        state = "stale" if name in stale or lacking else "up to date"
        if lacking:  # never "up to date" beside a registry that lacks what it recorded
            shown.append("the registry lacks " + "; ".join(lacking))
        typer.echo(f"{name:26} {state:11} {', '.join(shown)}")
    try:
        from flows.register import champion_summary

        typer.echo(champion_summary(_model_name()))
    except Exception as e:  # noqa: BLE001 - no registry yet is a normal state
        typer.echo(f"champion: none ({e})")


@app.command()
def reproduce(
    version: str = typer.Argument(..., help="Registered version (or `champion`)."),
    workdir: Path = typer.Option(None, help="New folder to rebuild in (default: a temp dir)."),
    name: str = typer.Option(None, help="Registered model name (default: params.yaml)."),
) -> None:
    """Rebuild a registered version from its commit and compare hashes and metrics."""
    import tempfile

    from flows.register import CHAMPION, _by_alias, _client
    from flows.reproduce import reproduce as rebuild

    name = name or _model_name()
    try:
        if version in (CHAMPION, "challenger"):
            mv = _by_alias(_client(), name, version)
            if mv is None:
                raise ValueError(f"{name} has no `{version}` alias")
            version = str(mv.version)
        folder = workdir or Path(tempfile.mkdtemp(prefix="distillery-reproduce-")) / "work"
        result = rebuild(name, version, folder)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    typer.echo(result.table())
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def predict(
    bundle: Path = typer.Argument(..., help="A bundle folder (models/bundles/<variant>)."),
    inputs: list[Path] = typer.Argument(..., help="PNG/JPEG images or an .npz with `x`."),
    raw: bool = typer.Option(False, "--raw", help="Inputs hold the source's raw values "
                             "(metadata input.raw_source; digits: 0..16), not 0..255 pixels."),
    max_pixels: int = typer.Option(64_000_000, help="Refuse image files with more pixels "
                                   "(read from the header, before decoding)."),
) -> None:
    """Run a deployable bundle on image files or an .npz and print one label per input."""
    from components.convert import predict_bundle

    try:
        labels = predict_bundle(bundle, inputs, raw=raw, max_pixels=max_pixels)
    except Exception as e:  # noqa: BLE001 - bad file or bundle: say which
        _fail(e)
    names = [str(p) for p in inputs]
    if len(names) != len(labels):  # an .npz holds many samples
        names = [f"{inputs[0]}[{i}]" for i in range(len(labels))]
    for name, label in zip(names, labels, strict=True):
        typer.echo(f"{name}\t{label}")


@app.command()
def promote(
    version: str = typer.Argument(..., help="Registered model version to make champion."),
    name: str = typer.Option(None, help="Registered model name (default: params.yaml)."),
    reason: str = typer.Option("", help="Why, recorded on the version."),
) -> None:
    """Make VERSION the `champion` by hand (no gates), recording who and why."""
    from flows.register import promote_version

    try:
        decision = promote_version(name or _model_name(), version, reason=reason)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    typer.echo(f"{decision.outcome}: {'; '.join(decision.reasons)}")


@app.command()
def rollback(
    name: str = typer.Option(None, help="Registered model name (default: params.yaml)."),
    reason: str = typer.Option("", help="Why, recorded on the demoted version."),
) -> None:
    """Point `champion` back at the previous champion."""
    from flows.register import rollback as do_rollback

    try:
        restored = do_rollback(name or _model_name(), reason=reason)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    typer.echo(f"champion is now version {restored.version}")


@app.command("accept-profile")
def accept_profile(
    report: Path = typer.Option(Path("reports/validate"), help="Validation report folder."),
    reference: Path = typer.Option(Path("reference/profile.json"), help="Reference to write."),
) -> None:
    """Accept the last validated dataset as the drift reference (then commit reference/)."""
    from components.validate import accept_profile as accept

    try:
        accept(report, reference)
    except Exception as e:  # noqa: BLE001
        _fail(e)
    typer.echo(f"{reference}: updated; commit it so `validate` checks drift against it")


def _model_name() -> str:
    from components.config import load_params

    return load_params().register_.model_name


if __name__ == "__main__":
    app()
