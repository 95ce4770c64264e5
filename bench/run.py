"""`python -m bench.run`: pipeline cost, compression table and distillation gain for one dataset.

Writes ``<results>/<dataset>.json`` (every figure), ``<dataset>.md`` (the report, with each goal
met or missed) and ``<dataset>.png`` (accuracy vs latency and vs size). All work happens in fresh
clones under ``<work>/`` (default ``bench/work/<dataset>/``, git-ignored): ``dvc/`` for the DVC
chain, the compression table and the distillation grid, ``flow/`` for the Prefect chain.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer
import yaml

from bench.clone import changed_files, set_key

REPO = Path(__file__).resolve().parents[1]

# --quick: the tiny parameters of tests/workspace.py (seconds per stage, any 8x8-ish data)
QUICK: dict[str, Any] = {
    "ingest": {"limit_per_class": 15},
    "validate": {"max_drift": 0.5, "min_class_share": 0.01},
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
    "register": {"policy": {"gates": {"min_val_accuracy": 0.0}, "require_all_budgets": False}},
}
OPEN_BUDGETS = {"max_latency_ms_p95": None, "max_size_bytes": None, "max_peak_rss_mb": None,
                "min_accuracy": 0.0}

app = typer.Typer(add_completion=False)


def build_overrides(source: str, path: Path | None, name: str, quick: bool,
                    params: list[str]) -> dict[str, Any]:
    """What the bench writes into its clones' params.yaml."""
    base = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    over: dict[str, Any] = json.loads(json.dumps(QUICK)) if quick else {}
    over.setdefault("ingest", {})["source"] = source
    if path:  # ingest.path is a DVC dep: the embedded digits keep params.yaml's own
        over["ingest"]["path"] = str(path.resolve())
    if source != "digits":
        # the committed drift reference describes digits; another dataset has none yet
        set_key(over, "validate.reference_profile", f"reference/{name}-profile.json")
        set_key(over, "register.model_name", f"distillery-{name}")
    if quick:  # tiny models cannot meet production budgets; open them so one is selected
        over["evaluate"]["profiles"] = {
            p: {**cfg, "budgets": dict(OPEN_BUDGETS)}
            for p, cfg in base["evaluate"]["profiles"].items()}
    for item in params:
        key, _, value = item.partition("=")
        set_key(over, key.strip(), yaml.safe_load(value))
    return over


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
                 platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def selected_model(clone: Path, profile: str) -> tuple[str | None, str]:
    """The model `evaluate` selected for ``profile``, or None and why."""
    metrics = json.loads((clone / "metrics/evaluate.json").read_text(encoding="utf-8"))
    name = metrics["selected"].get(profile)
    if name:
        return name, ""
    fails = {n: m[profile]["failed_budgets"] for n, m in metrics.items()
             if isinstance(m, dict) and profile in m and "failed_budgets" in m[profile]}
    return None, "no candidate meets every budget: " + "; ".join(
        f"{n}: {', '.join(f)}" for n, f in fails.items())


@app.command()
def main(
    source: str = typer.Option("digits", help="digits | idx | npz | imagefolder | csv"),
    path: Path = typer.Option(None, help="File or folder of the source (not for digits)."),
    name: str = typer.Option(None, help="Dataset name (default: digits, or the path's stem)."),
    quick: bool = typer.Option(False, help="Tiny parameters, fewer timed calls, 1 seed."),
    flow: bool = typer.Option(True, help="Also run the Prefect chain (`distillery run`)."),
    seeds: int = typer.Option(None, help="Distillation seeds (default 3; 1 with --quick)."),
    runs: int = typer.Option(None, help="Timed calls per measurement (default: evaluate.runs)."),
    param: list[str] = typer.Option([], help="Extra params.yaml override KEY=VALUE (YAML)."),
    work: Path = typer.Option(None, help="Work folder (default bench/work/<dataset>)."),
    results: Path = typer.Option(REPO / "bench" / "results", help="Results folder."),
    repo: Path = typer.Option(REPO, help="Repository to clone."),
) -> None:
    """Benchmark the whole chain on one dataset; write <results>/<dataset>.{json,md,png}."""
    from bench.compression import measure_compression
    from bench.kd_grid import run_grid
    from bench.pipeline_cost import measure_pipeline
    from bench.report import PROFILE, model_goals, pipeline_goals, render_markdown, write_plot
    from components.core.io import atomic_write_json, atomic_write_text

    if source != "digits" and path is None:
        raise typer.BadParameter(f"--source {source} needs --path")
    name = name or ("digits" if source == "digits" else path.stem)
    work = (work or REPO / "bench" / "work" / name).resolve()
    overrides = build_overrides(source, path, name, quick, param)
    seeds = seeds or (1 if quick else 3)
    started = time.time()

    def say(msg: str) -> None:
        typer.echo(f"[bench {time.time() - started:6.0f}s] {msg}", err=True)

    say(f"pipeline chains in fresh clones under {work}")
    pipeline = measure_pipeline(repo.resolve(), work, overrides, with_flow=flow)
    clone = Path(pipeline["dvc"]["clone"])
    say("compression table")
    runs = runs or (20 if quick else int(yaml.safe_load(
        (clone / "params.yaml").read_text(encoding="utf-8"))["evaluate"]["runs"]))
    compression = measure_compression(clone, work / "onnx", runs, warmup=2 if quick else 20,
                                      rounds=1 if quick else 3)
    import onnxruntime

    compression["onnxruntime"] = onnxruntime.__version__
    say(f"distillation grid, {seeds} seed(s)")
    distillation = run_grid(clone, seeds)
    selected, why_none = selected_model(clone, PROFILE)
    commit = subprocess.run(["git", "rev-parse", "HEAD~1"], cwd=clone, capture_output=True,
                            text=True).stdout.strip()  # HEAD is the bench's params commit
    result: dict[str, Any] = {
        "meta": {"dataset": name, "source": source, "path": str(path) if path else None,
                 "quick": quick, "seeds": seeds, "date": time.strftime("%Y-%m-%d %H:%M %Z"),
                 "machine": machine(), "commit": commit,
                 "uncommitted": changed_files(repo.resolve(), clone),
                 "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
                 "overrides": overrides, "bench_seconds": None},
        "pipeline": pipeline,
        "compression": compression,
        "distillation": distillation,
        "selected": selected,
    }
    result["goals"] = pipeline_goals(pipeline) + model_goals(compression, selected, why_none)
    result["meta"]["bench_seconds"] = round(time.time() - started, 1)
    results.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results / f"{name}.json", result)
    atomic_write_text(results / f"{name}.md", render_markdown(result))
    write_plot(result, results / f"{name}.png")
    for g in result["goals"]:
        say(f"{g['status']:>12}: {g['goal']}: {g['value']}")
    say(f"wrote {results / name}.json, .md, .png")


if __name__ == "__main__":
    app()
