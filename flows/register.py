"""`register`: put the compressed variants in the MLflow Model Registry and apply the policy.

Each variant bundle (`models/bundles/<variant>/model.onnx` + `metadata.json`) becomes a version
of one registered model, logged with `mlflow.onnx.log_model` in a run of its own (nested under
the stage run) and tagged with its variant, lineage and per-profile `evaluate` metrics; a model
card goes to the run as `model_card.md` and, shortened, into the version description. A model
whose ONNX bytes are already registered as the same variant is not logged again: that version
gets the new metrics. `promote` then judges the version selected for the primary profile with
`components.gates.decide` against the `@champion`'s recorded metrics and moves aliases:
`@challenger` when the gates pass, `@champion` only on a champion decision. Every decision is
recorded on the version; re-running it writes nothing new. `promote_version` (by hand) and
`rollback` keep `distillery.previous_champion` on each champion so a rollback can walk back.
"""

from __future__ import annotations

import getpass
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from components.data import load_split
from components.evaluate import select_candidate
from components.gates import HIGHER_IS_BETTER, Decision, PromotionPolicy, RegisterConfig, decide
from components.io import atomic_write_json, read_json, sha256_file, sha256_tree
from flows.tracking import configured_mlflow, git_commit

CHAMPION, CHALLENGER = "champion", "challenger"
T = "distillery."  # prefix of every tag this module writes
VARIANT, BATCH, SHA = f"{T}variant", f"{T}batch", f"{T}onnx_sha256"
METRICS, SELECTED = f"{T}metrics", f"{T}selected_for"
DECISION, RECORD = f"{T}decision", f"{T}decision_record"
PREVIOUS, ROLLED_BACK = f"{T}previous_champion", f"{T}rolled_back"
DECISION_HEADING = "\n\n## Promotion decision\n"
DESCRIPTION_LIMIT = 5000  # the SQL registry's column size
# Which variant each one is derived from, for the parent-version tag (when both are registered).
PARENT_VARIANT = {"int8": "fp32", "int8_dynamic": "fp32", "fp16": "fp32", "fp32": "student"}
KEPT_METRICS = ("accuracy", "val_accuracy", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99",
                "throughput_per_s", "size_bytes", "peak_rss_mb", "model_rss_mb",
                "meets_budget", "failed_budgets")


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
        parent = versions.get(PARENT_VARIANT.get(variant, ""))
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
                          evaluate_metrics.get("skipped", {}), lineage, tags)
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


def model_card(name: str, version: str, variant: str, meta: dict[str, Any],
               metrics: dict[str, dict[str, Any]], selected: list[str], skipped: dict[str, str],
               lineage: dict[str, Any], tags: dict[str, str]) -> str:
    """Markdown card: intended use, data and validation, metrics, selection, limits, lineage."""
    inp = meta.get("input", {})
    out = meta.get("output", {})
    classes = meta.get("classes", [])
    lines = [f"# {name} version {version}: `{variant}`", "",
             f"Selected for profiles: {', '.join(selected) or 'none'}.", "",
             "## Intended use", "",
             f"Classify images of shape {inp.get('shape', '?')} "
             f"(`{inp.get('name', 'image')}`, float32 in [0, 1], NCHW) into {len(classes)} "
             f"classes ({', '.join(map(str, classes[:20]))}); output `{out.get('name', '?')}` "
             f"({out.get('kind', 'logits')}). Normalisation is inside the graph.", "",
             "## Data", "",
             f"data_hash `{lineage.get('data_hash')}`; validation: "
             f"{json.dumps(lineage.get('validation'), sort_keys=True)[:800]}", "",
             "## Metrics (test split, per device profile)", "",
             "| profile | accuracy | p50 ms | p95 ms | size B | peak RSS MiB | budgets |",
             "|---|---|---|---|---|---|---|"]
    for p, m in metrics.items():
        ok = "ok" if m.get("meets_budget") else "; ".join(m.get("failed_budgets") or [])
        lines.append(f"| {p} | {_num(m.get('accuracy'))} | {_num(m.get('latency_ms_p50'))} "
                     f"| {_num(m.get('latency_ms_p95'))} | {_num(m.get('size_bytes'))} "
                     f"| {_num(m.get('peak_rss_mb'))} | {ok} |")
    lines += ["", *[f"Profile `{p}` skipped: {r}" for p, r in skipped.items()], "",
              "## Known limits", "",
              "- Accuracy is measured on this dataset's held-out test split only; inputs from "
              "another source (scanner, resolution, stroke width) are out of scope.",
              "- Latency and memory were measured on the machine that ran `evaluate`, one "
              "process at a time; other hardware will differ.",
              "- Quantized variants may disagree with fp32 on a few borderline samples.", "",
              "## Lineage", ""]
    lines += [f"- {k}: `{v}`" for k, v in sorted(tags.items())
              if k not in (METRICS, SELECTED, BATCH)]
    return "\n".join(lines) + "\n"


def _summary(card: str, run_id: str | None) -> str:
    """The card up to its metrics table, pointing at the full card."""
    head = card.split("\n## Known limits")[0]
    return f"{head}\nFull model card: `model_card.md` of run {run_id}."


def latest_batch(client: Any, name: str) -> list[Any]:
    """The versions tagged by the most recent `register_variants` call."""
    batch = client.get_registered_model(name).tags.get(BATCH)
    return [v for v in _all_versions(client, name) if batch and v.tags.get(BATCH) == batch]


def pick_candidate(versions: list[Any], policy: PromotionPolicy) -> Any:
    """The version `evaluate` selected for the primary profile; else the registered variant
    that `select_candidate` would pick; else (none meets its budgets) the one best on the
    primary metric, so that its rejection is recorded."""
    p = policy.primary_profile
    chosen = [v for v in versions if p in v.tags.get(SELECTED, "").split(",")]
    if chosen:
        return chosen[0]
    on_p = {str(v.version): _metrics(v).get(p) for v in versions if _metrics(v).get(p)}
    best = select_candidate(on_p)
    if best is None and on_p:
        sign = -1 if HIGHER_IS_BETTER[policy.primary_metric] else 1
        best = min(on_p, key=lambda k: (sign * (on_p[k].get(policy.primary_metric) or 0), k))
    by_version = {str(v.version): v for v in versions}
    return by_version[best] if best else max(versions, key=lambda v: int(v.version))


def promote(cfg: RegisterConfig, client: Any = None, versions: list[Any] | None = None) -> Decision:
    """Judge the candidate of ``versions`` (default: the latest registration) and move aliases."""
    client = client or _client()
    name = cfg.model_name
    versions = versions or latest_batch(client, name)
    if not versions:
        raise RuntimeError(f"promote: `{name}` has no registered versions to judge")
    candidate = client.get_model_version(name, str(pick_candidate(versions, cfg.policy).version))
    champion = _by_alias(client, name, CHAMPION)
    version = str(candidate.version)
    ids = {"candidate_version": version, "champion_version": str(champion.version) if champion
           else None}
    if ids["champion_version"] == version:
        return Decision("champion", [f"version {version} is already the champion"], ids)
    if candidate.tags.get(ROLLED_BACK):
        decision = Decision("rejected", [f"rolled back from champion "
                                         f"({candidate.tags[ROLLED_BACK]}); restore it by hand "
                                         "with promote_version"], {})
    else:
        decision = decide(_metrics(candidate), _metrics(champion) if champion else None,
                          cfg.policy)
        theirs, ours = (champion.tags.get("data_hash") if champion else None,
                        candidate.tags.get("data_hash"))
        if decision.outcome == CHAMPION and champion and theirs != ours:
            # accuracies measured on different test data are not comparable: never auto-promote
            decision = Decision(CHALLENGER, [
                *decision.reasons, f"not promoted: the champion was evaluated on data "
                f"{str(theirs)[:12]}, this version on {str(ours)[:12]}; compare them on the same "
                "data, then promote by hand"], decision.compared)
    decision.compared.update(ids)
    aliases = client.get_registered_model(name).aliases
    _record(client, candidate, decision)
    if decision.outcome == CHALLENGER and str(aliases.get(CHALLENGER)) != version:
        client.set_registered_model_alias(name, CHALLENGER, version)
    if decision.outcome != CHALLENGER and str(aliases.get(CHALLENGER)) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    if decision.outcome == CHAMPION:
        _move_champion(client, name, version, champion)
    return decision


def promote_version(name: str, version: str | int, who: str | None = None, reason: str = "",
                    client: Any = None) -> Decision:
    """Make ``version`` the champion by hand (no gates), recording who and why."""
    client = client or _client()
    version = str(version)
    mv = client.get_model_version(name, version)
    champion = _by_alias(client, name, CHAMPION)
    ids = {"candidate_version": version,
           "champion_version": str(champion.version) if champion else None}
    if ids["champion_version"] == version:
        return Decision("champion", [f"version {version} is already the champion"], ids)
    who = who or getpass.getuser()
    decision = Decision("champion", [f"promoted by hand by {who}: {reason or 'no reason given'}"],
                        ids)
    client.set_model_version_tag(name, version, f"{T}promoted_by", who)
    client.set_model_version_tag(name, version, f"{T}promotion_reason", reason)
    if mv.tags.get(ROLLED_BACK):
        client.delete_model_version_tag(name, version, ROLLED_BACK)
    _record(client, mv, decision)
    _move_champion(client, name, version, champion)
    return decision


def rollback(name: str, who: str | None = None, reason: str = "", client: Any = None) -> Any:
    """Point `@champion` back at the version it replaced; return that version.

    The demoted version is tagged `distillery.rolled_back`, so `promote` will not re-promote it
    automatically; a further rollback follows the restored version's own previous champion.
    """
    client = client or _client()
    current = _by_alias(client, name, CHAMPION)
    if current is None:
        raise RuntimeError(f"rollback: `{name}` has no champion")
    previous = current.tags.get(PREVIOUS)
    if not previous:
        raise RuntimeError(f"rollback: champion version {current.version} of `{name}` has no "
                           "previous champion")
    restored = client.get_model_version(name, previous)
    who = who or getpass.getuser()
    client.set_model_version_tag(name, str(current.version), ROLLED_BACK,
                                 f"by {who}: {reason or 'no reason given'}")
    client.set_model_version_tag(name, str(current.version), DECISION, "rolled_back")
    client.set_registered_model_alias(name, CHAMPION, str(restored.version))
    return client.get_model_version(name, str(restored.version))


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
                   prepared_dir: Path, lineage: dict[str, Any], metrics_path: Path) -> dict:
    """Register the variants, promote (when configured), write and return the stage metrics."""
    evaluate_metrics = read_json(evaluate_metrics_path)
    versions = register_variants(cfg, bundles_dir, evaluate_metrics, lineage, prepared_dir)
    decision = promote(cfg, versions=versions) if cfg.promote else None
    champion = _by_alias(_client(), cfg.model_name, CHAMPION)
    metrics = {"model_name": cfg.model_name,
               "versions": {v.tags[VARIANT]: int(v.version) for v in versions},
               "missing": [v for v in cfg.variants
                           if not (Path(bundles_dir) / v / "model.onnx").is_file()],
               "decision": decision.to_dict() if decision else None,
               "champion_version": int(champion.version) if champion else None}
    atomic_write_json(metrics_path, metrics)
    return metrics


def _record(client: Any, mv: Any, decision: Decision) -> None:
    """Decision tag, JSON record and description section; writes only what changed."""
    name, version = mv.name, str(mv.version)
    record = json.dumps(decision.to_dict(), sort_keys=True)
    if mv.tags.get(DECISION) != decision.outcome:
        client.set_model_version_tag(name, version, DECISION, decision.outcome)
    if mv.tags.get(RECORD) != record:
        client.set_model_version_tag(name, version, RECORD, record)
    c = decision.compared
    text = (f"Outcome: **{decision.outcome}**. Compared {c.get('metric', '-')} on "
            f"`{c.get('profile', '-')}`: candidate v{c.get('candidate_version')} "
            f"{_num(c.get('candidate'))} vs champion v{c.get('champion_version')} "
            f"{_num(c.get('champion'))} (improvement {_num(c.get('improvement'))}, needed > "
            f"{_num(c.get('min_improvement'))}).\n" + "".join(f"- {r}\n" for r in decision.reasons))
    head = (mv.description or "").split(DECISION_HEADING)[0]
    description = head[: DESCRIPTION_LIMIT - len(DECISION_HEADING) - len(text)]
    description += DECISION_HEADING + text
    if mv.description != description[:DESCRIPTION_LIMIT]:
        client.update_model_version(name, version, description[:DESCRIPTION_LIMIT])


def _move_champion(client: Any, name: str, version: str, previous: Any) -> None:
    """Tag ``version`` with the champion it replaces, then move the alias (the commit point)."""
    if previous is not None:
        client.set_model_version_tag(name, version, PREVIOUS, str(previous.version))
    client.set_registered_model_alias(name, CHAMPION, version)


def _by_alias(client: Any, name: str, alias: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _all_versions(client: Any, name: str) -> list[Any]:
    return list(client.search_model_versions(f"name = '{name}'"))


def _metrics(mv: Any) -> dict[str, dict[str, Any]]:
    return json.loads(mv.tags.get(METRICS) or "{}")


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def champion_summary(name: str, client: Any = None) -> str:
    """One line on the current `@champion` of ``name``: version, variant, decision."""
    client = client or _client()
    mv = _by_alias(client, name, CHAMPION)
    if mv is None:
        return f"champion of {name}: none"
    return (f"champion of {name}: version {mv.version} ({mv.tags.get(VARIANT, '?')}), "
            f"{mv.tags.get('distillery.decision', '')}")

