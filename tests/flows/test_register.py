"""Registry side on a throwaway sqlite MLflow: register, promote, idempotence, rollback, load."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from components import profiles
from components.data import load_split
from components.gates import PromotionPolicy, RegisterConfig
from components.io import atomic_write_json
from flows import register as reg
from tests.components.test_evaluate import band_model, export
from tests.conftest import make_dataset, write_dataset

EDGE = "edge-1core"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    """One sqlite store for the module (creating its tables takes ~1.5 s); tests use own names."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.chdir(root)  # mlartifacts/ and mlruns/ land in the throwaway folder
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("test-register")
        prepared = write_dataset(make_dataset(n_per_class=30), root / "prepared")
        yield {"root": root, "prepared": prepared, "client": mlflow.MlflowClient()}
    mlflow.set_tracking_uri(None)


def make_bundles(folder: Path, prepared: Path, seen: dict[str, int]) -> tuple[Path, dict]:
    """Bundles `<variant>/model.onnx + metadata.json`, and evaluate metrics measured for real.

    ``seen``: variant -> how many classes its band model recognises (accuracy grows with it).
    """
    metrics: dict = {"selected": {}, "skipped": {"gpu": "no CUDA"}, "baseline_rss_mb": {}}
    for variant, k in seen.items():
        path = export(band_model(k), folder / variant / "model.onnx")
        atomic_write_json(folder / variant / "metadata.json", {
            "input": {"name": "image", "shape": ["batch", 1, 8, 8]},
            "output": {"name": "logits", "kind": "logits"}, "classes": ["0", "1", "2"],
            "kind": "student", "variant": variant,
            "lineage": {"data_hash": "blobs", "source_onnx_sha256": f"{k}" * 64}})
        m = profiles.measure(path, prepared / "test.npz", ["CPUExecutionProvider"], 1, 1, 0, 3,
                             val=prepared / "val.npz")
        m.update(size_bytes=path.stat().st_size, meets_budget=m["accuracy"] >= 0.5,
                 failed_budgets=[] if m["accuracy"] >= 0.5 else ["accuracy < 0.5"])
        metrics[variant] = {EDGE: m}
    accurate = {v: metrics[v][EDGE] for v in seen if metrics[v][EDGE]["meets_budget"]}
    metrics["selected"][EDGE] = (max(accurate, key=lambda v: accurate[v]["accuracy"])
                                 if accurate else None)
    return folder, metrics


def config(name: str, variants: list[str], **policy) -> RegisterConfig:
    return RegisterConfig(model_name=name, variants=variants, example_size=2,
                          policy=PromotionPolicy(gates={"min_val_accuracy": 0.5}, **policy))


def aliases(client, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def snapshot(client, name: str) -> dict:
    """Everything `promote` may write: aliases, and every version's tags and description."""
    versions = client.search_model_versions(f"name = '{name}'")
    return {"aliases": client.get_registered_model(name).aliases,
            "versions": {v.version: (dict(v.tags), v.description, v.last_updated_timestamp)
                         for v in versions}}


def test_register_promote_worse_candidate_and_idempotence(registry, tmp_path: Path):
    client, prepared = registry["client"], registry["prepared"]
    cfg = config("digits-a", ["fp32", "int8"])
    bundles, metrics = make_bundles(tmp_path / "b1", prepared, {"fp32": 3, "int8": 3})
    metrics["selected"][EDGE] = "int8"  # as evaluate breaks the accuracy tie on latency
    versions = reg.register_variants(cfg, bundles, metrics, {"data_hash": "blobs",
                                                             "params_hash": "p" * 8,
                                                             "teacher_run_ids": {"mlp": "r1"}},
                                     prepared)
    by_variant = {v.tags[reg.VARIANT]: v for v in versions}
    assert set(by_variant) == {"fp32", "int8"}
    int8 = by_variant["int8"]
    assert int8.tags["data_hash"] == "blobs" and int8.tags["params_hash"] == "p" * 8
    assert int8.tags["distillery.parent_version"] == str(by_variant["fp32"].version)
    assert json.loads(int8.tags["distillery.teacher_run_ids"]) == {"mlp": "r1"}
    assert json.loads(int8.tags[reg.METRICS])[EDGE]["accuracy"] == 1.0
    assert "## Metrics" in int8.description
    card = mlflow.artifacts.load_text(f"runs:/{int8.run_id}/model_card.md")
    assert "## Known limits" in card and "## Lineage" in card
    assert client.get_metric_history(int8.run_id, f"{EDGE}.accuracy")[0].value == 1.0

    first = reg.promote(cfg)  # no champion yet: the selected variant becomes champion
    champion = client.get_model_version_by_alias("digits-a", "champion")
    assert first.outcome == "champion" and champion.version == int8.version
    assert champion.tags[reg.DECISION] == "champion"
    assert "## Promotion decision" in champion.description
    before = snapshot(client, "digits-a")
    assert reg.promote(cfg).outcome == "champion"  # same version again: nothing changes
    assert snapshot(client, "digits-a") == before

    # A worse model (recognises 2 of 3 classes) passes the 0.5 gate: challenger, champion stays.
    worse_dir, worse_metrics = make_bundles(tmp_path / "b2", prepared, {"fp32": 2})
    worse_metrics["selected"][EDGE] = "fp32"
    (worse,) = reg.register_variants(config("digits-a", ["fp32"]), worse_dir, worse_metrics,
                                     {"data_hash": "blobs"}, prepared)
    decision = reg.promote(cfg)
    assert decision.outcome == "challenger", decision.reasons
    assert decision.compared["candidate_version"] == str(worse.version)
    assert aliases(client, "digits-a") == {"champion": str(int8.version),
                                           "challenger": str(worse.version)}
    before = snapshot(client, "digits-a")
    assert reg.promote(cfg).to_dict() == decision.to_dict()
    assert snapshot(client, "digits-a") == before

    # A stricter gate rejects it, removes its challenger alias, never touches the champion.
    rejected = reg.promote(config("digits-a", ["fp32"], max_regression=0.1))
    assert rejected.outcome == "rejected"
    assert aliases(client, "digits-a") == {"champion": str(int8.version)}


def test_manual_promote_and_rollback_restore_the_previous_champion(registry, tmp_path: Path):
    client, prepared = registry["client"], registry["prepared"]
    cfg = config("digits-b", ["fp32", "int8"])
    bundles, metrics = make_bundles(tmp_path / "b", prepared, {"fp32": 3, "int8": 2})
    versions = {v.tags[reg.VARIANT]: str(v.version)
                for v in reg.register_variants(cfg, bundles, metrics, {}, prepared)}
    assert reg.promote(cfg).outcome == "champion"
    assert aliases(client, "digits-b")["champion"] == versions["fp32"]

    d = reg.promote_version("digits-b", versions["int8"], who="alice", reason="A/B test")
    assert d.outcome == "champion"
    manual = client.get_model_version_by_alias("digits-b", "champion")
    assert str(manual.version) == versions["int8"]
    assert manual.tags["distillery.promoted_by"] == "alice"
    assert manual.tags[reg.PREVIOUS] == versions["fp32"]

    restored = reg.rollback("digits-b", who="bob", reason="int8 misreads 2s")
    assert str(restored.version) == versions["fp32"]
    assert aliases(client, "digits-b")["champion"] == versions["fp32"]
    demoted = client.get_model_version("digits-b", versions["int8"])
    assert "bob" in demoted.tags[reg.ROLLED_BACK]
    with pytest.raises(RuntimeError, match="no previous champion"):
        reg.rollback("digits-b")  # fp32 was the first champion


def test_champion_loads_through_pyfunc_and_reproduces_evaluated_accuracy(registry,
                                                                          tmp_path: Path):
    client, prepared = registry["client"], registry["prepared"]
    cfg = config("digits-c", ["fp32"])
    bundles, metrics = make_bundles(tmp_path / "b", prepared, {"fp32": 2})  # imperfect model
    metrics["selected"][EDGE] = "fp32"
    (v,) = reg.register_variants(cfg, bundles, metrics, {}, prepared)
    assert reg.promote(cfg).outcome == "champion"

    model = reg.load_champion("digits-c")
    test = load_split(prepared / "test.npz")
    logits = reg.predict_logits(model, test.x)
    assert logits.shape == (len(test), 3) and logits.dtype == np.float32
    accuracy = float((logits.argmax(1) == test.y).mean())
    assert accuracy == metrics["fp32"][EDGE]["accuracy"] < 1.0

    # The stage re-registering the same bytes reuses the version (and keeps its decision).
    atomic_write_json(tmp_path / "evaluate.json", metrics)
    out = reg.register_stage(cfg, bundles, tmp_path / "evaluate.json", prepared, {},
                             tmp_path / "register.json")
    assert out["versions"] == {"fp32": int(v.version)}
    assert out["champion_version"] == int(v.version)
    assert out["decision"]["outcome"] == "champion"
    assert len(client.search_model_versions("name = 'digits-c'")) == 1
    again = client.get_model_version("digits-c", str(v.version))
    assert "## Promotion decision" in again.description


def test_better_model_measured_on_other_data_is_not_auto_promoted(registry, tmp_path: Path):
    client, prepared = registry["client"], registry["prepared"]
    cfg = config("digits-d", ["fp32"])
    first_dir, first = make_bundles(tmp_path / "b1", prepared, {"fp32": 2})
    first["selected"][EDGE] = "fp32"
    (old,) = reg.register_variants(cfg, first_dir, first, {"data_hash": "old-data"}, prepared)
    assert reg.promote(cfg).outcome == "champion"
    better_dir, better = make_bundles(tmp_path / "b2", prepared, {"fp32": 3})
    better["selected"][EDGE] = "fp32"
    (new,) = reg.register_variants(cfg, better_dir, better, {"data_hash": "new-data"}, prepared)
    decision = reg.promote(cfg)
    assert decision.outcome == "challenger"
    assert any("evaluated on data" in r for r in decision.reasons)
    assert aliases(client, "digits-d") == {"champion": str(old.version),
                                           "challenger": str(new.version)}
