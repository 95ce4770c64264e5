"""The stage runner: one entry per `dvc.yaml` stage, each calling its component with its paths.

Every stage runs the same way (`distillery stage NAME [--item ITEM]`): validate the whole
params file first, run the component, log the outcome to MLflow. A stage that fails publishes
nothing: its declared outputs are moved to `reports/failed/<stage>/` for diagnosis, where no later
stage reads them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.config import Params, load_params
from components.io import read_json

PREPARED = Path("data/prepared")
VALIDATE_REPORT = Path("reports/validate")
TEACHERS = Path("models/teachers")
STUDENT = Path("models/student")
PRUNED = Path("models/pruned")
QUANTIZED = Path("models/quantized")
BUNDLES = Path("models/bundles")
EVALUATE_REPORT = Path("reports/evaluate")
METRICS = Path("metrics")
FAILED = Path("reports/failed")


@dataclass
class StageOutput:
    metrics: dict[str, Any]
    params: dict[str, Any]
    history: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Stage:
    run: Callable[[Params, str | None], StageOutput]
    outs: Callable[[str | None], list[Path]]


def teacher_dirs(params: Params) -> dict[str, Path]:
    return {name: TEACHERS / name for name in params.train_teachers.teachers}


def _data_tags() -> dict[str, str]:
    manifest = PREPARED / "manifest.json"
    return {"data_hash": read_json(manifest)["data_hash"]} if manifest.exists() else {}


def run_ingest(params: Params, item: str | None) -> StageOutput:
    from components.ingest import ingest

    result = ingest(params.ingest, PREPARED)
    manifest = read_json(PREPARED / "manifest.json")
    metrics = {"samples": {s: v["count"] for s, v in manifest["splits"].items()},
               "num_classes": manifest["num_classes"], "rejected": len(manifest["rejected"])}
    return StageOutput(metrics=metrics, params=params.ingest.model_dump(),
                       artifacts=[PREPARED / "manifest.json"],
                       tags={"data_hash": result.data_hash})


def run_validate(params: Params, item: str | None) -> StageOutput:
    from components.validate import validate

    validate(params.validate_, PREPARED, VALIDATE_REPORT, METRICS / "validate.json")
    return StageOutput(metrics=read_json(METRICS / "validate.json"),
                       params=params.validate_.model_dump(), artifacts=[VALIDATE_REPORT])


def run_train_teachers(params: Params, item: str | None) -> StageOutput:
    from components.data import load_prepared
    from components.train_teachers import train_teacher

    names = params.train_teachers.teachers
    if item not in names:
        raise ValueError(f"train_teachers: unknown teacher `{item}` (params.yaml: {list(names)})")
    cfg = params.train_teachers
    result, history = train_teacher(item, cfg.teachers[item], cfg.training, load_prepared(PREPARED),
                                    TEACHERS / item, METRICS / "teachers" / f"{item}.json")
    return StageOutput(
        metrics=vars(result),
        params={"teacher": item, "arch": cfg.teachers[item].model_dump(),
                "training": cfg.training.model_dump()},
        history={"train": history}, artifacts=[TEACHERS / item],
    )


def run_ensemble(params: Params, item: str | None) -> StageOutput:
    from components.data import load_prepared
    from components.ensemble import score_ensemble

    metrics = score_ensemble(teacher_dirs(params), load_prepared(PREPARED),
                             METRICS / "teachers.json")
    return StageOutput(metrics=metrics, params={"teachers": sorted(params.train_teachers.teachers)})


def _distill_cfg(params: Params):
    if params.distill is None:
        raise ValueError("params.yaml: `distill` section is required for this stage")
    return params.distill


def run_distill(params: Params, item: str | None) -> StageOutput:
    from components.data import load_prepared
    from components.distill import distill

    cfg = _distill_cfg(params)
    metrics = distill(cfg, load_prepared(PREPARED), teacher_dirs(params), STUDENT,
                      METRICS / "distill.json")
    history: dict[str, list[dict[str, float]]] = {}
    for row in metrics.pop("history", []):  # one series per (run, seed): student.seed0, ...
        history.setdefault(f"{row.get('run', 'train')}.seed{row.get('seed', 0)}", []).append(row)
    return StageOutput(metrics=metrics, params=cfg.model_dump(), history=history,
                       artifacts=[STUDENT / "metadata.json"])


def run_prune(params: Params, item: str | None) -> StageOutput:
    from components.data import load_prepared
    from components.distill import load_teachers, make_kd_loss
    from components.prune import make_finetune, prune_stage
    from components.training import accuracy, resolve_device

    if params.prune is None:
        raise ValueError("params.yaml: `prune` section is required for this stage")
    kd = _distill_cfg(params)
    data = load_prepared(PREPARED)
    names = kd.teachers or list(params.train_teachers.teachers)
    teachers = load_teachers({n: TEACHERS / n for n in names}, data)
    device = resolve_device(kd.training.device)  # where `fit` will put the student and batches
    models = [teachers[n].model.to(device).eval() for n in names]
    # fine-tune with the same multi-teacher loss the student was distilled with
    loss = make_kd_loss(models, kd.weighting, kd.temperature, kd.alpha,
                        teacher_accuracies=[accuracy(m, data.val, device) for m in models])
    training = kd.training.model_copy(update={"lr": params.prune.finetune_lr,
                                              "schedule": "cosine"})
    finetune = make_finetune(data, params.prune.finetune_epochs, training, loss_fn=loss)
    metrics = prune_stage(params.prune, STUDENT, data, finetune, PRUNED, METRICS / "prune.json")
    return StageOutput(metrics=metrics, params=params.prune.model_dump(),
                       artifacts=[PRUNED / "layers.json", PRUNED / "metadata.json"])


def run_quantize(params: Params, item: str | None) -> StageOutput:
    from components.data import load_prepared
    from components.quantize import quantize_stage

    metrics = quantize_stage(params.quantize, PRUNED, load_prepared(PREPARED), QUANTIZED,
                             METRICS / "quantize.json")
    return StageOutput(metrics=metrics, params=params.quantize.model_dump(),
                       artifacts=[QUANTIZED / "report.json"])


def run_convert(params: Params, item: str | None) -> StageOutput:
    from components.convert import convert_stage
    from components.data import load_prepared

    metrics = convert_stage(params.convert, QUANTIZED, teacher_dirs(params),
                            load_prepared(PREPARED), BUNDLES, METRICS / "convert.json",
                            references={"student": STUDENT})
    return StageOutput(metrics=metrics, params=params.convert.model_dump())


def run_evaluate(params: Params, item: str | None) -> StageOutput:
    from components.evaluate import evaluate_stage, find_candidates

    metrics = evaluate_stage(params.evaluate, find_candidates(BUNDLES), PREPARED,
                             EVALUATE_REPORT, METRICS / "evaluate.json")
    return StageOutput(metrics=metrics, params=params.evaluate.model_dump(),
                       artifacts=[EVALUATE_REPORT],
                       tags={f"selected.{p}": str(n) for p, n in metrics["selected"].items()})


def run_register(params: Params, item: str | None) -> StageOutput:
    from flows.register import collect_lineage, register_stage

    lineage = collect_lineage(Path("params.yaml"), PREPARED, METRICS / "validate.json",
                              list(params.train_teachers.teachers), params.tracking.experiment)
    metrics = register_stage(params.register_, BUNDLES, METRICS / "evaluate.json", PREPARED,
                             lineage, METRICS / "register.json")
    outcome = (metrics.get("decision") or {}).get("outcome", "none")
    return StageOutput(metrics=metrics, params=params.register_.model_dump(),
                       tags={"distillery.decision": outcome})


STAGES: dict[str, Stage] = {
    "ingest": Stage(run_ingest, lambda _: [PREPARED]),
    "validate": Stage(run_validate, lambda _: [VALIDATE_REPORT, METRICS / "validate.json"]),
    "train_teachers": Stage(
        run_train_teachers,
        lambda item: [TEACHERS / str(item), METRICS / "teachers" / f"{item}.json"],
    ),
    "ensemble": Stage(run_ensemble, lambda _: [METRICS / "teachers.json"]),
    "distill": Stage(run_distill, lambda _: [STUDENT, METRICS / "distill.json"]),
    "prune": Stage(run_prune, lambda _: [PRUNED, METRICS / "prune.json"]),
    "quantize": Stage(run_quantize, lambda _: [QUANTIZED, METRICS / "quantize.json"]),
    "convert": Stage(run_convert, lambda _: [BUNDLES, METRICS / "convert.json"]),
    "evaluate": Stage(run_evaluate, lambda _: [EVALUATE_REPORT, METRICS / "evaluate.json"]),
    "register": Stage(run_register, lambda _: [METRICS / "register.json"]),
}


def run_stage(name: str, item: str | None = None, params_path: Path = Path("params.yaml")) -> None:
    """Run one stage with tracking; on failure move its outputs aside and re-raise."""
    from flows.tracking import log_stage, start_stage_run

    if name not in STAGES:
        raise ValueError(f"unknown stage `{name}` (known: {', '.join(STAGES)})")
    params = load_params(params_path)  # the whole file, before any work
    stage = STAGES[name]
    run_name = f"{name}@{item}" if item else name
    with start_stage_run(run_name, params.tracking.experiment, _data_tags()):
        start = time.perf_counter()
        try:
            out = stage.run(params, item)
        except BaseException:
            quarantine(name if not item else f"{name}@{item}", stage.outs(item))
            raise
        out.metrics.setdefault("stage_seconds", round(time.perf_counter() - start, 3))
        log_stage(out.params, out.metrics, out.history, out.artifacts)
        if out.tags:
            import mlflow

            mlflow.set_tags(out.tags)


def quarantine(stage: str, outs: list[Path], root: Path = Path(".")) -> None:
    """Move whatever a failed stage left at its output paths to `reports/failed/<stage>/`."""
    target = root / FAILED / stage
    present = [p for p in outs if p.exists()]
    if not present:
        return
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    for p in present:
        shutil.move(str(p), target / p.name)
