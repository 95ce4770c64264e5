"""The tracking server stopped mid-`register` (#14): a real `mlflow server` killed by its PID.

The kill lands inside the stage, between registry calls of the real code: a watcher reads the
server's sqlite store (read-only) and kills the server's process group as soon as the second
registration's first version row is committed. A new server on the same store then shows what
the failed run left: the champion and its tags as they were, no READY version without its
identity tags, the metrics file untouched; and a plain re-run finishes the job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from components.core.io import atomic_write_json, sha256_file
from flows.register import register_stage
from flows.registry import CHAMPION, SHA, VARIANT
from tests.flows.helpers_faults import FAST_FAIL, group_alive, mlflow_server, wait_for
from tests.flows.helpers_registry import aliases, config, make_bundles
from tests.flows.test_registry_faults import IDENTITY, LINEAGE
from tests.helpers_data import make_dataset, write_dataset

NAME, VARIANTS = "served", ["fp32", "int8"]  # fp32 is registered first, int8 after it


def version_rows(db: Path) -> int:
    """How many model versions the server's store holds, read without writing to it."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
        return con.execute("SELECT count(*) FROM model_versions").fetchone()[0]


def kill_on_new_version(db: Path, server, rows_before: int) -> tuple[threading.Thread, dict]:
    """A watcher that SIGKILLs ``server``'s process group once ``db`` holds more than
    ``rows_before`` versions; ``state["killed"]`` tells whether it did."""
    state = {"killed": False, "stop": threading.Event()}

    def watch() -> None:
        while not state["stop"].is_set():
            with contextlib.suppress(sqlite3.OperationalError):  # a write under way: poll again
                if version_rows(db) > rows_before:
                    os.killpg(server.pid, signal.SIGKILL)
                    state["killed"] = True
                    return
            state["stop"].wait(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, state


def ready_versions(client) -> list:
    return [v for v in client.search_model_versions(f"name = '{NAME}'") if v.status == "READY"]


@pytest.fixture
def fast_fail(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A client that gives up at once on a dead server; MLflow's process-wide state (active
    experiment, tracking URI) put back afterwards."""
    for key, value in {**FAST_FAIL, "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
                       "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    yield monkeypatch
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_tracking_server_killed_mid_register_keeps_the_champion_and_a_rerun_completes(
        tmp_path: Path, fast_fail: pytest.MonkeyPatch):
    monkeypatch = fast_fail
    root, work = tmp_path / "server", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    monkeypatch.chdir(work)
    prepared = write_dataset(make_dataset(n_per_class=30), work / "prepared")
    cfg = config(NAME, VARIANTS)
    weak, weak_metrics = make_bundles(work / "weak", prepared, {"fp32": 2, "int8": 1})
    strong, strong_metrics = make_bundles(work / "strong", prepared, {"fp32": 3, "int8": 2})
    atomic_write_json(work / "weak.json", weak_metrics)
    atomic_write_json(work / "strong.json", strong_metrics)
    metrics_path, report_path = work / "metrics" / "register.json", work / "reports.json"
    db = root / "server.db"

    def register(bundles: Path, evaluate: str) -> dict:
        return register_stage(cfg, bundles, work / evaluate, prepared, LINEAGE, metrics_path,
                              report_path)

    with mlflow_server(root) as (url, server):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        mlflow.set_experiment("test-register-server")
        first = register(weak, "weak.json")
        assert first["decision"]["outcome"] == CHAMPION  # no champion yet: the gates decide
        client = mlflow.MlflowClient()
        champion = client.get_model_version_by_alias(NAME, CHAMPION)
        before = {"version": str(champion.version), "tags": dict(champion.tags)}
        written = (metrics_path.read_bytes(), report_path.read_bytes())

        watcher, state = kill_on_new_version(db, server, version_rows(db))
        try:
            with pytest.raises(Exception) as failed:  # noqa: PT011 - whatever the client raises
                register(strong, "strong.json")
        finally:
            state["stop"].set()
            watcher.join(timeout=30)
        assert state["killed"], ("the second register finished before its first new version "
                                 "was seen: the kill did not land mid-register")
        server.wait(timeout=60)
        wait_for(lambda: not group_alive(server.pid), deadline_s=60)  # its workers too
    assert url.removeprefix("http://") in str(failed.value), failed.value  # names the server

    with mlflow_server(root) as (url, _):  # the same store and artifacts, another port
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        client = mlflow.MlflowClient()
        now = client.get_model_version_by_alias(NAME, CHAMPION)
        assert {"version": str(now.version), "tags": dict(now.tags)} == before
        assert aliases(client, NAME) == {CHAMPION: before["version"]}
        for mv in ready_versions(client):
            assert all(mv.tags.get(k) for k in IDENTITY), (mv.version, mv.tags)
        assert (metrics_path.read_bytes(), report_path.read_bytes()) == written, (
            f"{metrics_path} or {report_path} was rewritten by the failed register")

        again = register(strong, "strong.json")  # a plain re-run completes
        held = ready_versions(client)
        for variant in VARIANTS:
            sha = sha256_file(strong / variant / "model.onnx")
            ours = [v for v in held if v.tags.get(VARIANT) == variant and v.tags.get(SHA) == sha]
            assert [str(v.version) for v in ours] == [str(again["versions"][variant])], (
                variant, [(v.version, v.tags.get(VARIANT)) for v in held])
        for mv in held:
            assert all(mv.tags.get(k) for k in IDENTITY), (mv.version, mv.tags)
        assert sorted(again["versions"]) == VARIANTS
        assert again["decision"]["outcome"] == CHAMPION  # 3 classes beat 2 on the same data
        assert again["champion_version"] == again["versions"]["fp32"]
        assert metrics_path.read_bytes() != written[0]

