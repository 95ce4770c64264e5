"""`distillery`: the command-line entry point.

`check` validates params.yaml, `stage` runs one DVC stage (what dvc.yaml calls), `repro` runs
`dvc repro` under one MLflow pipeline run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distillery: small, fast, verified models from a labelled image dataset.")

# Errors a user can act on: print the message, not a traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, RuntimeError)


def _fail(e: BaseException) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@app.command()
def check(params: Path = typer.Option(Path("params.yaml"), help="Params file to validate.")) -> None:
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
    """Run `dvc repro` with every stage's MLflow run nested under one pipeline run."""
    from components.config import load_params
    from flows.tracking import start_pipeline_run

    try:
        experiment = load_params().tracking.experiment
    except _USER_ERRORS as e:
        _fail(e)
    cmd = ["dvc", "repro", *(targets or []), *(["--force"] if force else [])]
    with start_pipeline_run(experiment) as run:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        code = subprocess.run(cmd, env=env).returncode
        if code:  # raising inside the run marks it FAILED in MLflow
            typer.secho(f"dvc repro failed (exit {code}); MLflow run {run.info.run_id}",
                        fg=typer.colors.RED, err=True)
            raise typer.Exit(code)


if __name__ == "__main__":
    app()
