"""Registry writes: each variant bundle becomes a version of one MLflow registered model.

Each variant bundle (`models/bundles/<variant>/model.onnx` + `metadata.json`) becomes a version
of one registered model, logged with `mlflow.onnx.log_model` in a run of its own (nested under
the stage run) and created already tagged with its variant, lineage and per-profile `evaluate`
metrics (one registry call: never a READY version without them); a model card
(`flows.model_card`) goes to the run as `model_card.md` and, shortened, into the version
description. A model whose ONNX bytes are already registered as the same variant is not logged
again: that version gets the new metrics (so a re-run after a failure completes its own
half-made versions). Also here: the names of the aliases and tags that `flows.promotion`, the
CLI and `reproduce` read and write, and the reads they share: versions by alias, the latest
registration, the champion loaded through pyfunc (ONNX flavour only), and `missing_versions`,
what the last `register` recorded that the configured registry lacks.
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
ONNX_FLAVOR, ONNX_LOADER = "onnx", "mlflow.onnx"  # the one flavour `register` logs
REPORT = Path("reports/register.json")  # version ids: this registry's, so not in metrics/
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
                      lineage: dict[str, Any], prepared_dir: Path = Path("data/prepared"),
                      client: Any = None) -> list[Any]:
    """Register every bundle of ``cfg.variants`` found in ``bundles_dir``; return the versions.

    ``lineage``: ``data_hash``, ``params_hash``, ``git_commit`` (default: HEAD), optional
    ``teacher_run_ids`` {teacher: run id} and ``validation`` (the validate metrics).

    Idempotent: a version is created with its variant, bytes and lineage tags in the same
    registry call, so none is ever READY untagged; a re-run after a failure reuses (and
    completes) the versions holding the same bytes, and deletes the untagged ones an older
    release left behind for this lineage (`_drop_untagged`).
    """
    mlflow = configured_mlflow()
    client = client or mlflow.MlflowClient()
    test = load_split(Path(prepared_dir) / "test.npz")
    example = np.ascontiguousarray(test.x[: cfg.example_size])
    lineage = {"git_commit": git_commit(), **lineage}
    batch = uuid.uuid4().hex
    found = {v: Path(bundles_dir) / v for v in cfg.variants
             if (Path(bundles_dir) / v / "model.onnx").is_file()}
    if not found:
        raise FileNotFoundError(f"register: none of {cfg.variants} has a bundle in {bundles_dir}")
    known = _drop_untagged(client, cfg.model_name, _all_versions(client, cfg.model_name),
                           lineage)
    metrics = {v: {p: {k: m.get(k) for k in KEPT_METRICS}
                   for p, m in evaluate_metrics.get(v, {}).items()} for v in found}
    selected = {v: sorted(p for p, n in evaluate_metrics.get("selected", {}).items() if n == v)
                for v in found}
    metas = {v: read_json(f / "metadata.json") if (f / "metadata.json").exists() else {}
             for v, f in found.items()}
    tags = {v: _identity_tags(folder, batch, metrics[v], selected[v], lineage, metas[v])
            for v, folder in found.items()}
    if not known:
        _ensure_registered_model(client, cfg.model_name)
    versions: dict[str, Any] = {}
    for variant, folder in found.items():
        same = [v for v in known if v.tags.get(SHA) == tags[variant][SHA]
                and v.tags.get(VARIANT) == variant]
        versions[variant] = (max(same, key=lambda v: int(v.version)) if same else
                             _log_version(mlflow, client, cfg, variant, folder, example,
                                          lineage, metrics[variant], tags[variant],
                                          metas[variant]))
    out = []
    for variant, mv in versions.items():
        version = str(mv.version)
        parent = versions.get(PARENT_VARIANT.get(variant, "fp32"))
        wanted = {**tags[variant], **({f"{T}parent_version": str(parent.version)}
                                      if parent else {})}
        for key, value in wanted.items():  # a reused version: the new batch, metrics, lineage
            if mv.tags.get(key) != value:
                client.set_model_version_tag(cfg.model_name, version, key, value)
        card = model_card(cfg.model_name, version, variant, metas[variant], metrics[variant],
                          selected[variant], evaluate_metrics.get("skipped", {}), lineage,
                          {k: v for k, v in wanted.items() if k not in NOT_LINEAGE})
        if mv.run_id:
            client.log_text(mv.run_id, card, "model_card.md")
        decided = (mv.description or "").partition(DECISION_HEADING)[2]  # kept when reused
        summary = _summary(card, mv.run_id)[: DESCRIPTION_LIMIT - len(DECISION_HEADING) - 1500]
        description = summary + (DECISION_HEADING + decided[:1500] if decided else "")
        if mv.description != description:
            client.update_model_version(cfg.model_name, version, description)
        out.append(client.get_model_version(cfg.model_name, version))
    client.set_registered_model_tag(cfg.model_name, BATCH, batch)  # what `promote` judges
    return out


def _identity_tags(folder: Path, batch: str, metrics: dict[str, Any], selected: list[str],
                   lineage: dict[str, Any], meta: dict[str, Any]) -> dict[str, str]:
    """Every tag a version of ``folder`` carries but its parent's: given at creation."""
    tags = {
        VARIANT: folder.name, BATCH: batch, SHA: sha256_file(folder / "model.onnx"),
        f"{T}bundle_sha256": sha256_tree(folder), METRICS: json.dumps(metrics),
        SELECTED: ",".join(selected),
        "git_commit": lineage["git_commit"], "data_hash": lineage.get("data_hash"),
        "params_hash": lineage.get("params_hash"),
        **{f"lineage.{k}": str(v) for k, v in (meta.get("lineage") or {}).items()
           if not isinstance(v, dict | list)},
        **({f"{T}teacher_run_ids": json.dumps(lineage["teacher_run_ids"])}
           if lineage.get("teacher_run_ids") else {}),
    }
    return {k: str(v) for k, v in tags.items() if v is not None}


def _drop_untagged(client: Any, name: str, known: list[Any], lineage: dict[str, Any]) -> list[Any]:
    """Delete the versions a `register@<variant>` run of this lineage (git commit, data hash)
    left without their variant tag (a registry outage mid-register, before tags went in at
    creation); return the rest. Versions of other lineages, and aliased ones, are left alone."""
    kept = []
    for mv in known:
        if (mv.tags.get(VARIANT) and mv.tags.get(SHA)) or not mv.run_id or mv.aliases:
            kept.append(mv)
            continue
        run_tags = client.get_run(mv.run_id).data.tags
        if (run_tags.get("distillery.stage", "").startswith("register@")
                and run_tags.get("git_commit") == lineage["git_commit"]
                and run_tags.get("data_hash") == str(lineage.get("data_hash"))):
            client.delete_model_version(name, str(mv.version))
        else:
            kept.append(mv)
    return kept


def _ensure_registered_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _log_version(mlflow: Any, client: Any, cfg: RegisterConfig, variant: str, folder: Path,
                 example: np.ndarray, lineage: dict[str, Any],
                 metrics: dict[str, dict[str, Any]], tags: dict[str, str],
                 meta: dict[str, Any]) -> Any:
    """Log ``folder/model.onnx`` in a run named `register@<variant>`; create its version with
    ``tags`` in the same registry call (one write: never a READY version without them)."""
    import onnx
    import onnxruntime as ort
    from mlflow.models import infer_signature

    session = ort.InferenceSession(str(folder / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    in_name = session.get_inputs()[0].name
    spec = meta.get("input") or {}
    example = model_input(example, spec, f"{folder / 'metadata.json'}: input")
    outputs = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {in_name: example}), strict=True))  # logits first
    extras = [str(p) for p in (folder / "metadata.json", folder / "model.ort") if p.exists()]
    run_tags = {"distillery.stage": f"register@{variant}", "git_commit": lineage["git_commit"],
                "data_hash": str(lineage.get("data_hash"))}
    with mlflow.start_run(run_name=f"register@{variant}", nested=True, tags=run_tags) as run:
        log_version_metrics(mlflow, metrics)
        info = mlflow.onnx.log_model(
            onnx.load(str(folder / "model.onnx")), name="model",
            signature=infer_signature({in_name: example}, outputs),
            input_example={in_name: example},
            onnx_execution_providers=["CPUExecutionProvider"], extra_files=extras or None,
            # Stated, not inferred: inference loads the model in a subprocess (~4 s a version).
            pip_requirements=mlflow.onnx.get_default_pip_requirements(),
            # the input contract in the MLmodel, so `predict_logits` can feed prepared floats
            metadata={"input": spec} if spec else None,
        )
        return client.create_model_version(cfg.model_name, info.model_uri, run.info.run_id,
                                           tags=tags, model_id=info.model_id)


def log_version_metrics(mlflow: Any, metrics: dict[str, dict[str, Any]]) -> None:
    """Numeric per-profile metrics as `<profile>.<metric>` on the active run."""
    mlflow.log_metrics({f"{p}.{k}": float(v) for p, m in metrics.items() for k, v in m.items()
                        if isinstance(v, int | float) and not isinstance(v, bool)})


def latest_batch(client: Any, name: str) -> list[Any]:
    """The versions tagged by the most recent `register_variants` call."""
    batch = client.get_registered_model(name).tags.get(BATCH)
    return [v for v in _all_versions(client, name) if batch and v.tags.get(BATCH) == batch]


def load_champion(name: str, client: Any = None) -> Any:
    """`models:/<name>@champion` through mlflow.pyfunc, checked to predict (1, K) finite scores.

    Only the flavour Distillery registers is loaded: the version's MLmodel (read alone, before
    anything is loaded) must name the `onnx` flavour and `mlflow.onnx` as its pyfunc loader, so
    a cloudpickled `PythonModel` (code run on load) is refused, never unpickled.
    """
    from mlflow.models import Model

    mlflow = configured_mlflow()
    client = client or mlflow.MlflowClient()
    champion = _by_alias(client, name, CHAMPION)
    if champion is None:
        raise RuntimeError(f"models:/{name}@{CHAMPION}: `{name}` has no champion")
    uri = f"models:/{name}/{champion.version}"  # the version checked is the version loaded
    flavors = Model.load(uri).flavors
    loader = (flavors.get("python_function") or {}).get("loader_module")
    if ONNX_FLAVOR not in flavors or loader != ONNX_LOADER:
        raise RuntimeError(
            f"models:/{name}@{CHAMPION} (version {champion.version}): flavours "
            f"{sorted(flavors)} with pyfunc loader `{loader}`; Distillery loads only the "
            f"`{ONNX_FLAVOR}` flavour (loader `{ONNX_LOADER}`), refusing to load it")
    model = mlflow.pyfunc.load_model(uri)
    spec = model.metadata.get_input_schema().inputs[0]
    scores = predict_logits(model, np.zeros((1, *spec.shape[1:]), dtype=spec.type))
    if scores.ndim != 2 or scores.shape[0] != 1 or not np.isfinite(scores).all():
        raise RuntimeError(f"models:/{name}@{CHAMPION} (version {champion.version}): "
                           f"unexpected output {scores.shape}")
    return model


def predict_logits(model: Any, x: np.ndarray) -> np.ndarray:
    """The `logits` output (N, K) of a pyfunc ONNX model (else its first) on ``x``: prepared
    floats (N, C, H, W), or the model's own input (uint8 pixels (N, H, W, C), say)."""
    tensor = model.metadata.get_input_schema().inputs[0]
    spec = (model.metadata.metadata or {}).get("input")
    x = (model_input(x, spec, f"{tensor.name} of the model")
         if spec else np.ascontiguousarray(x, dtype=tensor.type))
    out = model.predict({tensor.name: x})
    if isinstance(out, dict):
        return np.asarray(out.get("logits", next(iter(out.values()))))
    if hasattr(out, "columns"):  # a DataFrame, one column per output
        return np.asarray(out["logits"] if "logits" in out.columns else out.iloc[:, 0])
    return np.asarray(out)


def model_input(x: np.ndarray, spec: dict[str, Any] | None, where: str) -> np.ndarray:
    """Prepared floats ``x`` (N, C, H, W) as a bundle's model takes them (``spec``: its
    metadata's `input`): float32 as they are, or, for a uint8 contract, the 8-bit pixels
    (N, H, W, C) they stand for (x / scale). Input already uint8 passes unchanged."""
    x = np.asarray(x)
    if x.dtype == np.uint8 or not spec or spec.get("dtype") != "uint8":
        return np.ascontiguousarray(x if x.dtype == np.uint8 else x.astype(np.float32))
    pixels = np.rint(x.astype(np.float64) / float(spec["scale"]))
    bad = ~((pixels >= 0) & (pixels <= 255)).reshape(len(x), -1).all(axis=1)  # NaN: bad too
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: sample {i} is outside the pixel range 0..255 at scale "
                         f"{spec['scale']:g} ({int(bad.sum())} such samples)")
    return np.ascontiguousarray(pixels.astype(np.uint8).transpose(0, 2, 3, 1))


def missing_versions(metrics_path: Path, report_path: Path = REPORT,
                     client: Any = None) -> list[str]:
    """What the last `register` recorded that the configured registry does not hold.

    Reads ``metrics_path`` (metrics/register.json: model name, variants, their ONNX hashes) and,
    when present, ``report_path`` (this clone's version ids and champion); returns one line per
    recorded variant with no version of the same variant and bytes (at the recorded id, when one
    was recorded), and for a recorded champion (an id, or the outcome `champion`) when the
    registry has no `@champion`. Empty when `register` never ran. Registry errors propagate:
    an outage is not "nothing registered".
    """
    if not Path(metrics_path).exists():
        return []
    recorded = read_json(metrics_path)
    name = recorded.get("model_name")
    report = read_json(report_path) if Path(report_path).exists() else {}
    report = report if report.get("model_name") == name else {}
    ids = report.get("versions") or {}
    shas = recorded.get("onnx_sha256") or {}
    client = client or _client()
    held = _all_versions(client, name)
    missing = []
    for variant in recorded.get("registered", []):
        ours = [v for v in held if v.tags.get(VARIANT) == variant
                and (variant not in shas or v.tags.get(SHA) == shas[variant])]
        if variant in ids:
            if not any(str(v.version) == str(ids[variant]) for v in ours):
                missing.append(f"{variant}: version {ids[variant]} of `{name}` (recorded in "
                               f"{report_path})")
        elif not ours:
            missing.append(f"{variant}: no version of `{name}` with onnx sha256 "
                           f"{str(shas.get(variant, '?'))[:12]} (recorded in {metrics_path})")
    champion = report.get("champion_version")
    if (champion or recorded.get("outcome") == CHAMPION) and _by_alias(
            client, name, CHAMPION) is None:
        missing.append(f"@{CHAMPION}: " + (f"version {champion} of `{name}` (recorded in "
                                           f"{report_path})" if champion else
                                           f"`{name}` has none (recorded in {metrics_path})"))
    return missing


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
