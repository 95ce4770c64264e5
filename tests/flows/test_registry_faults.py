"""Registry errors injected at every client call of `promote`, `rollback` and `register_variants`.

Each call is first recorded on a real sqlite registry (`FaultyClient` wraps the real client);
then, one at a time, that call raises a locked-database `MlflowException` instead of running.
The error must propagate, `@champion` and its rollback pointer must stay, no alias may point at
a version whose decision says otherwise, no READY version may lack its variant and lineage tags,
and a plain re-run must finish the job.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from components.config import PromotionPolicy, RegisterConfig
from flows import promotion
from flows.registry import (
    BATCH,
    CHALLENGER,
    CHAMPION,
    DECISION,
    PREVIOUS,
    RECORD,
    ROLLED_BACK,
    SHA,
    VARIANT,
    register_variants,
)
from tests.flows.helpers_registry import EDGE, FaultyClient, aliases, config, make_bundles

LINEAGE = {"data_hash": "blobs", "params_hash": "p" * 8}
IDENTITY = (VARIANT, SHA, BATCH, "git_commit", "data_hash", "params_hash")


@pytest.fixture(scope="module")
def chain(store, tmp_path_factory) -> str:
    """`chain`: v1 (1 class) the first champion, v2 (2 classes) the champion that replaced it
    (previous champion 1), v3 (3 classes) the latest registration, not yet judged."""
    client, prepared = store["client"], store["prepared"]
    root = tmp_path_factory.mktemp("chain")
    cfg = config("chain", ["fp32"])
    for k in (1, 2, 3):
        folder, metrics = make_bundles(root / f"b{k}", prepared, {"fp32": k})
        metrics["selected"][EDGE] = "fp32"
        (mv,) = register_variants(cfg, folder, metrics, LINEAGE, prepared)
        if k == 1:
            promotion.promote_version("chain", mv.version, who="t", reason="first")
        if k == 2:
            assert promotion.promote(cfg).outcome == CHAMPION
    assert aliases(client, "chain") == {CHAMPION: "2"}
    assert client.get_model_version("chain", "2").tags[PREVIOUS] == "1"
    return "chain"


def copy_model(client, source: str, name: str, tags: dict[int, dict[str, str]] | None = None,
               moved: dict[str, str] | None = None) -> None:
    """A new registered model holding ``source``'s versions (same artifacts, tags, description)
    and aliases; ``tags`` overrides some of a version's tags, ``moved`` sets more aliases."""
    held = client.get_registered_model(source)
    client.create_registered_model(name, tags=held.tags)
    for mv in sorted(client.search_model_versions(f"name = '{source}'"),
                     key=lambda v: int(v.version)):
        client.create_model_version(name, mv.source, mv.run_id,
                                    tags={**mv.tags, **(tags or {}).get(int(mv.version), {})},
                                    description=mv.description)
    for alias, version in {**held.aliases, **(moved or {})}.items():
        client.set_registered_model_alias(name, alias, str(version))


def assert_aliases_hold(client, name: str, champion: dict[str, str], where: str) -> None:
    """`@champion` is the version it was, with the same tags (its rollback pointer among them);
    a `@challenger` points at a version whose recorded decision passed the gates."""
    now = client.get_model_version_by_alias(name, CHAMPION)
    assert (str(now.version), dict(now.tags)) == (champion["version"], champion["tags"]), where
    held = client.get_registered_model(name).aliases
    if CHALLENGER in held:
        mv = client.get_model_version(name, str(held[CHALLENGER]))
        assert mv.tags.get(DECISION) in (CHALLENGER, CHAMPION) and mv.tags.get(RECORD), where


def champion_state(client, name: str) -> dict[str, str]:
    mv = client.get_model_version_by_alias(name, CHAMPION)
    return {"version": str(mv.version), "tags": dict(mv.tags)}


# Each scenario: (version tags overridden, aliases moved, outcome of a clean promote)
JUDGED = {DECISION: CHALLENGER, RECORD: "{}"}  # as a promote that made v3 the challenger left it
SCENARIOS = {
    "champion": ({3: JUDGED}, {CHALLENGER: "3"}, CHAMPION),  # beats v2; was the challenger
    "challenger": ({3: {"data_hash": "other"}}, {}, CHALLENGER),  # other data: never auto
    "rejected": ({3: {**JUDGED, ROLLED_BACK: "by t: bad"}}, {CHALLENGER: "3"}, "rejected"),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_registry_error_at_any_promote_call_aborts_and_keeps_the_champion(
        store, chain: str, scenario: str):
    client = store["client"]
    tags, moved, outcome = SCENARIOS[scenario]
    cfg = config(f"{scenario}-clean", ["fp32"])
    copy_model(client, chain, cfg.model_name, tags, moved)
    recorder = FaultyClient()
    assert promotion.promote(cfg, client=recorder).outcome == outcome
    calls = recorder.calls
    writes = {"set_model_version_tag", "update_model_version"} | (
        {"set_registered_model_alias"} if outcome != "rejected" else set())
    assert writes <= set(calls), calls  # the recording saw the writes it is to break

    for at, method in enumerate(calls):
        name, where = f"{scenario}-{at}", f"{scenario}: error at call {at} ({method})"
        copy_model(client, chain, name, tags, moved)
        before = champion_state(client, name)
        with pytest.raises(MlflowException, match="database is locked"):
            promotion.promote(config(name, ["fp32"]), client=FaultyClient(fail_at=at))
        assert_aliases_hold(client, name, before, where)
        # a plain re-run finishes what the failed one started
        assert promotion.promote(config(name, ["fp32"])).outcome == outcome, where
        if outcome == CHAMPION:
            now = client.get_model_version_by_alias(name, CHAMPION)
            assert (str(now.version), now.tags[PREVIOUS]) == ("3", "2"), where
        else:
            assert_aliases_hold(client, name, before, where)


def test_a_registry_error_at_any_rollback_call_aborts_and_keeps_the_champion(store, chain: str):
    client = store["client"]
    copy_model(client, chain, "rollback-clean")
    recorder = FaultyClient()
    assert str(promotion.rollback("rollback-clean", who="t", client=recorder).version) == "1"
    assert "set_registered_model_alias" in recorder.calls

    for at, method in enumerate(recorder.calls):
        name, where = f"rollback-{at}", f"rollback: error at call {at} ({method})"
        copy_model(client, chain, name)
        before = champion_state(client, name)
        with pytest.raises(MlflowException, match="database is locked"):
            promotion.rollback(name, who="t", client=FaultyClient(fail_at=at))
        assert_aliases_hold(client, name, before, where)  # not tagged rolled back either
        assert str(promotion.rollback(name, who="t").version) == "1", where
        assert ROLLED_BACK in client.get_model_version(name, "2").tags, where


def test_a_registry_error_at_any_promote_version_call_aborts_and_keeps_the_champion(
        store, chain: str):
    client = store["client"]
    copy_model(client, chain, "by-hand-clean")
    recorder = FaultyClient()
    assert promotion.promote_version("by-hand-clean", 3, who="t", client=recorder).outcome \
        == CHAMPION
    assert "set_registered_model_alias" in recorder.calls

    for at, method in enumerate(recorder.calls):
        name, where = f"by-hand-{at}", f"promote_version: error at call {at} ({method})"
        copy_model(client, chain, name)
        before = champion_state(client, name)
        with pytest.raises(MlflowException, match="database is locked"):
            promotion.promote_version(name, 3, who="t", client=FaultyClient(fail_at=at))
        assert_aliases_hold(client, name, before, where)
        promotion.promote_version(name, 3, who="t")
        now = client.get_model_version_by_alias(name, CHAMPION)
        assert (str(now.version), now.tags[PREVIOUS]) == ("3", "2"), where


def two_variants(name: str) -> RegisterConfig:
    return RegisterConfig(model_name=name, variants=["fp32", "int8"], example_size=2,
                          policy=PromotionPolicy(gates={"min_val_accuracy": 0.5}))


def versions_of(client, name: str) -> list:
    return list(client.search_model_versions(f"name = '{name}'"))


def test_a_registry_error_at_any_register_call_leaves_no_untagged_version_and_a_rerun_completes(
        store, tmp_path: Path):
    client, prepared = store["client"], store["prepared"]
    bundles, metrics = make_bundles(tmp_path / "b", prepared, {"fp32": 3, "int8": 2})
    recorder = FaultyClient()
    register_variants(two_variants("reg-clean"), bundles, metrics, LINEAGE, prepared,
                      client=recorder)
    calls = recorder.calls
    first = calls.index("create_model_version")
    assert {"create_model_version", "set_model_version_tag", "log_text", "update_model_version",
            "set_registered_model_tag"} <= set(calls[first + 1:]), calls

    for at in range(len(calls)):
        name, where = f"reg-{at}", f"error at call {at} ({calls[at]})"
        with pytest.raises(MlflowException, match="database is locked"):
            register_variants(two_variants(name), bundles, metrics, LINEAGE, prepared,
                              client=FaultyClient(fail_at=at))
        half = versions_of(client, name)
        assert bool(half) == (at > first), where  # created: those after the first version
        for mv in half:
            assert all(mv.tags.get(k) for k in IDENTITY), (where, mv.version, mv.tags)

        done = {v.tags[VARIANT]: v for v in register_variants(two_variants(name), bundles,
                                                              metrics, LINEAGE, prepared)}
        held = versions_of(client, name)
        assert sorted(v.tags[VARIANT] for v in held) == ["fp32", "int8"], where
        assert {str(v.version) for v in held} == {str(v.version) for v in done.values()}, where
        assert done["int8"].tags["distillery.parent_version"] == str(done["fp32"].version)
        assert all("## Metrics" in v.description for v in done.values()), where
        assert client.get_registered_model(name).tags[BATCH] == done["fp32"].tags[BATCH]


def test_a_rerun_replaces_the_untagged_versions_an_outage_left_for_its_lineage(
        store, tmp_path: Path):
    """What an older release left after an outage: READY versions logged by `register@<variant>`
    runs of this commit and data, with no tags. A re-run deletes them and registers anew."""
    import mlflow
    import onnx

    from flows.tracking import git_commit

    client, prepared = store["client"], store["prepared"]
    bundles, metrics = make_bundles(tmp_path / "b", prepared, {"fp32": 3, "int8": 2})
    lineage = {**LINEAGE, "git_commit": git_commit()}
    for variant in ("fp32", "int8"):
        with mlflow.start_run(run_name=f"register@{variant}", tags={
                "distillery.stage": f"register@{variant}", "git_commit": lineage["git_commit"],
                "data_hash": "blobs"}):
            mlflow.onnx.log_model(onnx.load(str(bundles / variant / "model.onnx")), name="model",
                                  registered_model_name="orphans", pip_requirements=[])
    with mlflow.start_run(run_name="by hand"):  # someone else's: not ours to delete
        mlflow.onnx.log_model(onnx.load(str(bundles / "fp32" / "model.onnx")), name="model",
                              registered_model_name="orphans", pip_requirements=[])
    assert len(versions_of(client, "orphans")) == 3

    done = register_variants(two_variants("orphans"), bundles, metrics, lineage, prepared)
    held = {str(v.version): v for v in versions_of(client, "orphans")}
    assert sorted(held) == ["3", *sorted(str(v.version) for v in done)]
    assert not held["3"].tags.get(VARIANT)  # the hand-made one stays as it was
    assert sorted(v.tags[VARIANT] for v in done) == ["fp32", "int8"]
