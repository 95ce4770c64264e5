"""`register`: put the compressed variants in the MLflow Model Registry and apply the policy.

The stage module: `run` is the stage (`distillery stage register`). `collect_lineage` gathers
what every version is tagged with (data and params hashes, validation, teacher runs), and
`register_stage` registers the variant bundles (`flows.registry`), promotes (`flows.promotion`)
when `register.promote` is set, and writes `metrics/register.json`. The model card is
`flows.model_card`. The names the CLI, `reproduce` and the end-to-end tests take from this
module are re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.config import PARAMS_FILE, Params, RegisterConfig
from components.core.io import atomic_write_json, read_json, sha256_file
from components.core.stage import StageIO, StageResult
from flows.promotion import champion_summary, promote, promote_version, rollback
from flows.registry import (
    CHAMPION,
    REPORT,
    SHA,
    VARIANT,
    _by_alias,
    _client,
    load_champion,
    missing_versions,
    predict_logits,
    register_variants,
)

__all__ = [  # the stage, and what flows.cli, flows.reproduce and the e2e tests import from here
    "CHAMPION", "VARIANT", "_by_alias", "_client", "champion_summary", "collect_lineage",
    "load_champion", "missing_versions", "predict_logits", "promote_version", "register_stage",
    "rollback", "run", "REPORT",
]


def collect_lineage(params_path: Path, prepared_dir: Path, validate_metrics: Path,
                    teachers: list[str], experiment: str) -> dict[str, Any]:
    """data_hash, params_hash, validation and the latest finished run of each teacher."""
    manifest = read_json(Path(prepared_dir) / "manifest.json")
    lineage: dict[str, Any] = {"data_hash": manifest.get("data_hash"),
                               "params_hash": sha256_file(params_path)}
    if Path(validate_metrics).exists():
        lineage["validation"] = read_json(validate_metrics)
    client = _client()
    exp = client.get_experiment_by_name(experiment)
    runs = {}
    for teacher in teachers if exp else []:
        found = client.search_runs(
            [exp.experiment_id],
            f"tags.`distillery.stage` = 'train_teachers@{teacher}' and "
            f"attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if found:
            runs[teacher] = found[0].info.run_id
    if runs:
        lineage["teacher_run_ids"] = runs
    return lineage


def register_stage(cfg: RegisterConfig, bundles_dir: Path, evaluate_metrics_path: Path,
                   prepared_dir: Path, lineage: dict[str, Any], metrics_path: Path,
                   report_path: Path = REPORT) -> dict:
    """Register the variants, promote (when configured); return the full record.

    The record, with this registry's version ids, goes to ``report_path`` (and MLflow); the
    metrics file gets what holds in any clone: variants and their ONNX hashes, outcome and the
    decided candidate. Run again (on another tracking URI, say) it registers the same bundles
    anew where the registry lacks them (`flows.registry.missing_versions` tells when).
    """
    evaluate_metrics = read_json(evaluate_metrics_path)
    versions = register_variants(cfg, bundles_dir, evaluate_metrics, lineage, prepared_dir)
    decision = promote(cfg, versions=versions) if cfg.promote else None
    champion = _by_alias(_client(), cfg.model_name, CHAMPION)
    record = {"model_name": cfg.model_name,
              "versions": {v.tags[VARIANT]: int(v.version) for v in versions},
              "missing": [v for v in cfg.variants
                          if not (Path(bundles_dir) / v / "model.onnx").is_file()],
              "decision": decision.to_dict() if decision else None,
              "champion_version": int(champion.version) if champion else None}
    candidate = next((v.tags[VARIANT] for v in versions
                      if decision and str(v.version) == str(
                          (decision.compared or {}).get("candidate_version"))), None)
    atomic_write_json(metrics_path, {
        "model_name": cfg.model_name, "registered": sorted(record["versions"]),
        "onnx_sha256": {v.tags[VARIANT]: v.tags[SHA] for v in versions},
        "missing": record["missing"], "outcome": decision.outcome if decision else None,
        "candidate": candidate})
    atomic_write_json(report_path, record)
    return record


def run(cfg: Params, io: StageIO) -> StageResult:
    """The `register` stage: lineage, registration, promotion; the decision as a run tag."""
    lineage = collect_lineage(PARAMS_FILE, io.dep("prepared"), io.dep("validate_metrics"),
                              list(cfg.train_teachers.teachers), cfg.tracking.experiment)
    metrics = register_stage(cfg.register_, io.dep("bundles"), io.dep("evaluate_metrics"),
                             io.dep("prepared"), lineage, io.metrics)
    outcome = (metrics.get("decision") or {}).get("outcome", "none")
    return StageResult(metrics=read_json(io.metrics), params=cfg.register_.model_dump(),
                       artifacts=[REPORT], tags={"distillery.decision": outcome})
