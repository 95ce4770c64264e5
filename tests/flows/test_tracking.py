"""`flows.tracking`: flattening for MLflow, and what `log_stage` puts on a run (sqlite store)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from flows import tracking
from flows.tracking import PARENT_ENV, flatten, log_stage, numeric_metrics


def test_flatten_joins_nested_keys_with_dots_and_keeps_lists_whole():
    nested = {"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2], "f": {}}
    assert flatten(nested) == {"a.b": 1, "a.c.d": "x", "e": [1, 2]}
    assert flatten({"k": 1}, prefix="stage.") == {"stage.k": 1}


def test_numeric_metrics_keeps_numbers_only_as_floats():
    metrics = {"student": {"test_accuracy": 0.9, "epochs": 3, "arch": "cnn", "ok": True},
               "kd_gain": -0.01, "int8_status": "ok", "passed": False, "seeds": [1, 2],
               "missing": None}
    got = numeric_metrics(metrics)
    assert got == {"student.test_accuracy": 0.9, "student.epochs": 3.0, "kd_gain": -0.01}
    assert all(type(v) is float for v in got.values())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One sqlite MLflow store for the module (creating its tables takes a second or two)."""
    root = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv(PARENT_ENV, raising=False)
        mp.chdir(root)  # artifacts land in the throwaway folder
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("test-tracking")
        yield root
    mlflow.set_tracking_uri(None)


def test_log_stage_puts_params_metrics_history_artifacts_and_tags_on_the_run(store: Path):
    (store / "metrics.json").write_text("{}")
    (store / "plots").mkdir()
    (store / "plots" / "a.png").write_bytes(b"png")
    params = {"training": {"lr": 0.01, "epochs": 2}, "teachers": ["mlp", "cnn"],
              "many": {f"k{i}": i for i in range(150)}}  # more than one batch of 100
    metrics = {"student": {"test_accuracy": 0.9}, "int8_status": "ok", "passed": True}
    history = {"train": [{"epoch": 1, "loss": 0.5, "best": True},
                         {"epoch": 2, "loss": 0.25, "best": False}]}
    with mlflow.start_run() as run:
        log_stage(params, metrics, history, [store / "metrics.json", store / "plots",
                                             store / "absent.json"], {"data_hash": "abc"})

    client = mlflow.MlflowClient()
    logged = client.get_run(run.info.run_id).data
    assert logged.params["training.lr"] == "0.01" and logged.params["training.epochs"] == "2"
    assert logged.params["teachers"] == "['mlp', 'cnn']"
    assert len([k for k in logged.params if k.startswith("many.")]) == 150
    assert logged.metrics == {"student.test_accuracy": 0.9, "train.loss": 0.25}
    steps = client.get_metric_history(run.info.run_id, "train.loss")
    assert sorted((m.step, m.value) for m in steps) == [(1, 0.5), (2, 0.25)]
    assert logged.tags["data_hash"] == "abc"
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"metrics.json", "plots"}  # a missing path is skipped, not an error
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/a.png"]


def test_stage_runs_nest_under_the_pipeline_run_which_restores_the_env(
        store: Path, monkeypatch: pytest.MonkeyPatch):
    with tracking.start_pipeline_run("test-tracking") as parent:
        # what each `dvc repro` child process inherits
        assert os.environ[PARENT_ENV] == parent.info.run_id
    assert PARENT_ENV not in os.environ

    monkeypatch.setenv(PARENT_ENV, parent.info.run_id)  # a stage process, started by the driver
    with tracking.start_stage_run("distill", "test-tracking", {"data_hash": "abc"}) as child:
        pass
    tags = mlflow.MlflowClient().get_run(child.info.run_id).data.tags
    assert tags["mlflow.parentRunId"] == parent.info.run_id
    assert tags["distillery.stage"] == "distill" and tags["data_hash"] == "abc"
    assert tags["git_commit"] == tracking.git_commit()  # of the working directory
    assert child.info.run_name == "distill"


@pytest.mark.parametrize(("error", "status"), [(KeyboardInterrupt, "KILLED"),
                                               (SystemExit, "KILLED"), (OSError, "FAILED")])
def test_a_stage_run_ends_killed_when_interrupted_and_failed_when_it_raises(
        store: Path, error: type[BaseException], status: str):
    with pytest.raises(error), tracking.start_stage_run("prune", "test-tracking", {}) as run:
        raise error()
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == status
    assert mlflow.active_run() is None
    with tracking.start_stage_run("prune", "test-tracking", {}) as run:
        pass
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == "FINISHED"


def test_stage_runs_mark_their_experiment_as_model_training_unless_told_otherwise(store: Path):
    with tracking.start_stage_run("ingest", "test-kind", {}):
        pass
    key, kind = tracking.EXPERIMENT_KIND
    assert mlflow.get_experiment_by_name("test-kind").tags[key] == kind
    mlflow.set_experiment_tag(key, "genai_development")  # the user's choice stays
    with tracking.start_stage_run("ingest", "test-kind", {}):
        pass
    assert mlflow.get_experiment_by_name("test-kind").tags[key] == "genai_development"


def test_the_prepared_dataset_is_logged_as_the_runs_input(store: Path):
    manifest = {"data_hash": "d" * 64, "source": {"kind": "digits"},
                "splits": {"train": {"count": 5, "sha256": "x"}, "test": {"count": 2}}}
    (store / "prepared").mkdir(exist_ok=True)
    with tracking.start_stage_run("distill", "test-tracking", {}) as run:
        tracking.log_prepared_input(store / "prepared", manifest, "distill")
    inputs = mlflow.MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset, tags = inputs[0].dataset, {t.key: t.value for t in inputs[0].tags}
    assert dataset.name == "digits" and dataset.digest == "d" * 36
    assert str((store / "prepared").resolve()) in dataset.source
    assert tags["mlflow.data.context"] == "distill"
    assert tags["count.train"] == "5" and tags["count.test"] == "2"
