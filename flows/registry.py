"""Registry writes: each variant bundle becomes a version of one MLflow registered model.

Each variant bundle (`models/bundles/<variant>/model.onnx` + `metadata.json`) becomes a version
of one registered model, logged with `mlflow.onnx.log_model` in a run of its own (nested under
the stage run) and tagged with its variant, lineage and per-profile `evaluate` metrics; a model
card (`flows.model_card`) goes to the run as `model_card.md` and, shortened, into the version
description. A model whose ONNX bytes are already registered as the same variant is not logged
again: that version gets the new metrics. Also here: the names of the aliases and tags that
`flows.promotion`, the CLI and `reproduce` read and write, and the reads they share: versions by
alias, the latest registration, the champion loaded through pyfunc.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from components.config import RegisterConfig
from components.core.data import load_split
from components.core.io import read_json, sha256_file, sha256_tree
from flows.model_card import _summary, model_card
from flows.tracking import configured_mlflow, git_commit

CHAMPION, CHALLENGER = "champion", "challenger"
T = "distillery."  # prefix of every tag the registry modules write
VARIANT, BATCH, SHA = f"{T}variant", f"{T}batch", f"{T}onnx_sha256"
METRICS, SELECTED = f"{T}metrics", f"{T}selected_for"
DECISION, RECORD = f"{T}decision", f"{T}decision_record"
PREVIOUS, ROLLED_BACK = f"{T}previous_champion", f"{T}rolled_back"
NOT_LINEAGE = (METRICS, SELECTED, BATCH)  # bookkeeping tags, left out of the card's lineage
DECISION_HEADING = "\n\n## Promotion decision\n"
DESCRIPTION_LIMIT = 5000  # the SQL registry's column size
# Which variant each one is derived from, for the parent-version tag (when both are registered).
# the variant each is derived from: fp32 from the student, every quantized one from fp32
PARENT_VARIANT = {"student": "", "fp32": "student"}
KEPT_METRICS = ("accuracy", "val_accuracy", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99",
                "throughput_per_s", "size_bytes", "peak_rss_mb", "model_rss_mb",
                "meets_budget", "failed_budgets", "val_accuracy_ci", "accuracy_ci",
                "latency_spread_ms", "latency_p95_spread_ms", "model_file",
                # per-sample correctness (packed bits): promotion compares paired on them
                "val_correct", "test_correct")


def _client() -> Any:
    return configured_mlflow().MlflowClient()


def register_variants(cfg: RegisterConfig, bundles_dir: Path, evaluate_metrics: dict[str, Any],
                      lineage: dict[str, Any],
                      prepared_dir: Path = Path("data/prepared")) -> list[Any]:
    """Register every bundle of ``cfg.variants`` found in ``bundles_dir``; return the versions.

    ``lineage``: ``data_hash``, ``params_hash``, ``git_commit`` (default: HEAD), optional
    ``teacher_run_ids`` {teacher: run id} and ``validation`` (the validate metrics).
    """
    mlflow = configured_mlflow()
    client = mlflow.MlflowClient()
    test = load_split(Path(prepared_dir) / "test.npz")
    example = np.ascontiguousarray(test.x[: cfg.example_size])
    lineage = {"git_commit": git_commit(), **lineage}
    batch = uuid.uuid4().hex
    known = _all_versions(client, cfg.model_name)
    found = {v: Path(bundles_dir) / v for v in cfg.variants
             if (Path(bundles_dir) / v / "model.onnx").is_file()}
    if not found:
        raise FileNotFoundError(f"register: none of {cfg.variants} has a bundle in {bundles_dir}")
    metrics = {v: {p: {k: m.get(k) for k in KEPT_METRICS}
                   for p, m in evaluate_metrics.get(v, {}).items()} for v in found}
    versions: dict[str, Any] = {}
    for variant, folder in found.items():
        sha = sha256_file(folder / "model.onnx")
        same = [v for v in known if v.tags.get(SHA) == sha and v.tags.get(VARIANT) == variant]
        versions[variant] = (max(same, key=lambda v: int(v.version)) if same else
                             _log_version(mlflow, cfg, variant, folder, example, lineage,
                                          metrics[variant]))
    out = []
    for variant, mv in versions.items():
        folder, version = found[variant], str(mv.version)
        meta = read_json(folder / "metadata.json") if (folder / "metadata.json").exists() else {}
        selected = sorted(p for p, n in evaluate_metrics.get("selected", {}).items()
                          if n == variant)
        parent = versions.get(PARENT_VARIANT.get(variant, "fp32"))
        tags = {
            VARIANT: variant, BATCH: batch, SHA: sha256_file(folder / "model.onnx"),
            f"{T}bundle_sha256": sha256_tree(folder), METRICS: json.dumps(metrics[variant]),
            SELECTED: ",".join(selected),
            "git_commit": lineage["git_commit"], "data_hash": lineage.get("data_hash"),
            "params_hash": lineage.get("params_hash"),
            **({f"{T}parent_version": str(parent.version)} if parent else {}),
            **{f"lineage.{k}": str(v) for k, v in (meta.get("lineage") or {}).items()
               if not isinstance(v, dict | list)},
            **({f"{T}teacher_run_ids": json.dumps(lineage["teacher_run_ids"])}
               if lineage.get("teacher_run_ids") else {}),
        }
        tags = {k: str(v) for k, v in tags.items() if v is not None}
        for key, value in tags.items():
            client.set_model_version_tag(cfg.model_name, version, key, value)
        card = model_card(cfg.model_name, version, variant, meta, metrics[variant], selected,
                          evaluate_metrics.get("skipped", {}), lineage,
                          {k: v for k, v in tags.items() if k not in NOT_LINEAGE})
        if mv.run_id:
            client.log_text(mv.run_id, card, "model_card.md")
        decided = (mv.description or "").partition(DECISION_HEADING)[2]  # kept when reused
        summary = _summary(card, mv.run_id)[: DESCRIPTION_LIMIT - len(DECISION_HEADING) - 1500]
        client.update_model_version(cfg.model_name, version, summary + (
            DECISION_HEADING + decided[:1500] if decided else ""))
        out.append(client.get_model_version(cfg.model_name, version))
    client.set_registered_model_tag(cfg.model_name, BATCH, batch)  # what `promote` judges
    return out


def _log_version(mlflow: Any, cfg: RegisterConfig, variant: str, folder: Path,
                 example: np.ndarray, lineage: dict[str, Any],
                 metrics: dict[str, dict[str, Any]]) -> Any:
    """Log ``folder/model.onnx`` as a new version, in a run named `register@<variant>`."""
    import onnx
    import onnxruntime as ort
    from mlflow.models import infer_signature

    session = ort.InferenceSession(str(folder / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    in_name, out_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    outputs = session.run(None, {in_name: example})[0]
    extras = [str(p) for p in (folder / "metadata.json", folder / "model.ort") if p.exists()]
    tags = {"distillery.stage": f"register@{variant}", "git_commit": lineage["git_commit"],
            "data_hash": str(lineage.get("data_hash"))}
    with mlflow.start_run(run_name=f"register@{variant}", nested=True, tags=tags):
        log_version_metrics(mlflow, metrics)
        info = mlflow.onnx.log_model(
            onnx.load(str(folder / "model.onnx")), name="model",
            signature=infer_signature({in_name: example}, {out_name: outputs}),
            input_example={in_name: example}, registered_model_name=cfg.model_name,
            onnx_execution_providers=["CPUExecutionProvider"], extra_files=extras or None,
            # Stated, not inferred: inference loads the model in a subprocess (~4 s a version).
            pip_requirements=mlflow.onnx.get_default_pip_requirements(),
        )
    return mlflow.MlflowClient().get_model_version(cfg.model_name,
                                                   str(info.registered_model_version))


def log_version_metrics(mlflow: Any, metrics: dict[str, dict[str, Any]]) -> None:
    """Numeric per-profile metrics as `<profile>.<metric>` on the active run."""
    mlflow.log_metrics({f"{p}.{k}": float(v) for p, m in metrics.items() for k, v in m.items()
                        if isinstance(v, int | float) and not isinstance(v, bool)})


def latest_batch(client: Any, name: str) -> list[Any]:
    """The versions tagged by the most recent `register_variants` call."""
    batch = client.get_registered_model(name).tags.get(BATCH)
    return [v for v in _all_versions(client, name) if batch and v.tags.get(BATCH) == batch]


def load_champion(name: str) -> Any:
    """`models:/<name>@champion` through mlflow.pyfunc, checked to predict (1, K) finite scores."""
    mlflow = configured_mlflow()
    model = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    shape = model.metadata.get_input_schema().inputs[0].shape
    scores = predict_logits(model, np.zeros((1, *shape[1:]), dtype=np.float32))
    if scores.ndim != 2 or scores.shape[0] != 1 or not np.isfinite(scores).all():
        raise RuntimeError(f"models:/{name}@{CHAMPION}: unexpected output {scores.shape}")
    return model


def predict_logits(model: Any, x: np.ndarray) -> np.ndarray:
    """The first output (N, K) of a pyfunc ONNX model on ``x`` (N, C, H, W) float32."""
    name = model.metadata.get_input_schema().input_names()[0]
    out = model.predict({name: np.ascontiguousarray(x, dtype=np.float32)})
    return np.asarray(next(iter(out.values())) if isinstance(out, dict) else out)


def _by_alias(client: Any, name: str, alias: str) -> Any:
    """The version ``alias`` points to; None only when the registry says there is none.

    Fails closed: any other registry error (a locked database, a server down) propagates, so
    a transient error never reads as "there is no champion" and promotes over it.
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if _is_missing_alias(e, alias):
            return None
        raise


def _is_missing_alias(error: Any, alias: str) -> bool:
    """The registry's own "no such model" or "no such alias" answer (SQL and REST stores)."""
    if error.error_code == "RESOURCE_DOES_NOT_EXIST":  # no model of that name (yet)
        return True
    return error.error_code == "INVALID_PARAMETER_VALUE" and f"alias {alias} not found" in str(
        error)


def _all_versions(client: Any, name: str) -> list[Any]:
    return list(client.search_model_versions(f"name = '{name}'"))


def _metrics(mv: Any) -> dict[str, dict[str, Any]]:
    return json.loads(mv.tags.get(METRICS) or "{}")
