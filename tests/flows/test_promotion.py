"""Promotion on a throwaway sqlite MLflow: gates, aliases, idempotence, by hand, rollback."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows import promotion
from flows.registry import DECISION, PREVIOUS, ROLLED_BACK, VARIANT, register_variants
from tests.flows.helpers_registry import (
    EDGE,
    aliases,
    config,
    make_bundles,
    snapshot,
)


def test_promote_worse_candidate_and_idempotence(store, tmp_path: Path):
    client, prepared = store["client"], store["prepared"]
    cfg = config("digits-a", ["fp32", "int8"])
    bundles, metrics = make_bundles(tmp_path / "b1", prepared, {"fp32": 3, "int8": 3})
    metrics["selected"][EDGE] = "int8"  # as evaluate breaks the accuracy tie on latency
    versions = register_variants(cfg, bundles, metrics, {"data_hash": "blobs",
                                                         "params_hash": "p" * 8,
                                                         "teacher_run_ids": {"mlp": "r1"}},
                                 prepared)
    int8 = {v.tags[VARIANT]: v for v in versions}["int8"]

    first = promotion.promote(cfg)  # no champion yet: the selected variant becomes champion
    champion = client.get_model_version_by_alias("digits-a", "champion")
    assert first.outcome == "champion" and champion.version == int8.version
    assert champion.tags[DECISION] == "champion"
    assert "## Promotion decision" in champion.description
    before = snapshot(client, "digits-a")
    assert promotion.promote(cfg).outcome == "champion"  # same version again: nothing changes
    assert snapshot(client, "digits-a") == before

    # A worse model (recognises 2 of 3 classes) passes the 0.5 gate: challenger, champion stays.
    worse_dir, worse_metrics = make_bundles(tmp_path / "b2", prepared, {"fp32": 2})
    worse_metrics["selected"][EDGE] = "fp32"
    (worse,) = register_variants(config("digits-a", ["fp32"]), worse_dir, worse_metrics,
                                 {"data_hash": "blobs"}, prepared)
    decision = promotion.promote(cfg)
    assert decision.outcome == "challenger", decision.reasons
    assert decision.compared["candidate_version"] == str(worse.version)
    assert aliases(client, "digits-a") == {"champion": str(int8.version),
                                           "challenger": str(worse.version)}
    before = snapshot(client, "digits-a")
    assert promotion.promote(cfg).to_dict() == decision.to_dict()
    assert snapshot(client, "digits-a") == before

    # A stricter gate rejects it, removes its challenger alias, never touches the champion.
    rejected = promotion.promote(config("digits-a", ["fp32"], max_regression=0.1))
    assert rejected.outcome == "rejected"
    assert aliases(client, "digits-a") == {"champion": str(int8.version)}


def test_manual_promote_and_rollback_restore_the_previous_champion(store, tmp_path: Path):
    client, prepared = store["client"], store["prepared"]
    cfg = config("digits-b", ["fp32", "int8"])
    bundles, metrics = make_bundles(tmp_path / "b", prepared, {"fp32": 3, "int8": 2})
    versions = {v.tags[VARIANT]: str(v.version)
                for v in register_variants(cfg, bundles, metrics, {}, prepared)}
    assert promotion.promote(cfg).outcome == "champion"
    assert aliases(client, "digits-b")["champion"] == versions["fp32"]

    d = promotion.promote_version("digits-b", versions["int8"], who="alice", reason="A/B test")
    assert d.outcome == "champion"
    manual = client.get_model_version_by_alias("digits-b", "champion")
    assert str(manual.version) == versions["int8"]
    assert manual.tags["distillery.promoted_by"] == "alice"
    assert manual.tags[PREVIOUS] == versions["fp32"]

    restored = promotion.rollback("digits-b", who="bob", reason="int8 misreads 2s")
    assert str(restored.version) == versions["fp32"]
    assert aliases(client, "digits-b")["champion"] == versions["fp32"]
    demoted = client.get_model_version("digits-b", versions["int8"])
    assert "bob" in demoted.tags[ROLLED_BACK]
    with pytest.raises(RuntimeError, match="no previous champion"):
        promotion.rollback("digits-b")  # fp32 was the first champion
    assert promotion.champion_summary("digits-b") == (
        f"champion of digits-b: version {versions['fp32']} (fp32), champion")


def test_better_model_measured_on_other_data_is_not_auto_promoted(store, tmp_path: Path):
    client, prepared = store["client"], store["prepared"]
    cfg = config("digits-d", ["fp32"])
    first_dir, first = make_bundles(tmp_path / "b1", prepared, {"fp32": 2})
    first["selected"][EDGE] = "fp32"
    (old,) = register_variants(cfg, first_dir, first, {"data_hash": "old-data"}, prepared)
    assert promotion.promote(cfg).outcome == "champion"
    better_dir, better = make_bundles(tmp_path / "b2", prepared, {"fp32": 3})
    better["selected"][EDGE] = "fp32"
    (new,) = register_variants(cfg, better_dir, better, {"data_hash": "new-data"}, prepared)
    decision = promotion.promote(cfg)
    assert decision.outcome == "challenger"
    assert any("evaluated on data" in r for r in decision.reasons)
    assert aliases(client, "digits-d") == {"champion": str(old.version),
                                           "challenger": str(new.version)}


def test_promotion_is_paired_when_the_registry_keeps_val_correctness(
        store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from flows import registry

    monkeypatch.setattr(registry, "KEPT_METRICS", (*registry.KEPT_METRICS, "val_correct"))
    client, prepared = store["client"], store["prepared"]
    cfg = config("digits-e", ["fp32"])
    first_dir, first = make_bundles(tmp_path / "b1", prepared, {"fp32": 2})
    register_variants(cfg, first_dir, first, {"data_hash": "blobs"}, prepared)
    assert promotion.promote(cfg).outcome == "champion"
    better_dir, better = make_bundles(tmp_path / "b2", prepared, {"fp32": 3})
    (new,) = register_variants(cfg, better_dir, better, {"data_hash": "blobs"}, prepared)
    decision = promotion.promote(cfg)
    n = better["fp32"][EDGE]["val_correct"]["n"]
    assert decision.compared["paired"] is True and decision.compared["n"] == n
    assert decision.outcome == "champion", decision.reasons  # right on every sample it missed
    assert f"paired on {n} samples" in decision.reasons[0]
    assert f"paired on {n} samples" in client.get_model_version("digits-e", new.version).description


def test_promotion_compares_paired_on_the_registered_val_predictions(store, tmp_path: Path):
    cfg = config("digits-f", ["fp32"])
    prepared = store["prepared"]
    for i, seen in enumerate((2, 3)):
        folder, metrics = make_bundles(tmp_path / f"b{i}", prepared, {"fp32": seen})
        register_variants(cfg, folder, metrics, {"data_hash": "blobs"}, prepared)
        decision = promotion.promote(cfg)
    # the registry keeps each version's packed val correctness (KEPT_METRICS): paired
    assert decision.compared["paired"] is True, decision.reasons
    assert any("paired on" in r for r in decision.reasons)
