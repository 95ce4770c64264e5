"""A throwaway sqlite MLflow registry, real variant bundles and registry snapshots, for the tests
of `flows.registry`, `flows.promotion` and `flows.register`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

from components.config import PromotionPolicy, RegisterConfig
from components.core.io import atomic_write_json
from components.evaluation import profiles
from tests.helpers_data import make_dataset, write_dataset
from tests.helpers_models import band_model, export

EDGE = "edge-1core"


@contextlib.contextmanager
def throwaway_registry(root: Path, experiment: str = "test-register") -> Iterator[dict]:
    """One sqlite store in ``root`` (creating its tables takes ~1.5 s: open one per test module,
    and give each test its own model names); yields root, a prepared dataset and a client."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.chdir(root)  # mlartifacts/ and mlruns/ land in the throwaway folder
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment)
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


class FaultyClient:
    """A real `MlflowClient` that records the name of every method called on it and, at the
    call numbered ``fail_at``, raises what a locked sqlite store raises instead of calling it
    (fault injection: the registry underneath is the real one)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.real = mlflow.MlflowClient()
        self.calls: list[str] = []
        self.fail_at = fail_at

    def __getattr__(self, attr: str):
        real = getattr(self.real, attr)
        if attr.startswith("_") or not callable(real):
            return real

        def call(*args, **kwargs):
            self.calls.append(attr)
            if len(self.calls) - 1 == self.fail_at:
                raise MlflowException(f"(sqlite3.OperationalError) database is locked [{attr}]",
                                      error_code=INTERNAL_ERROR)
            return real(*args, **kwargs)

        return call


def snapshot(client, name: str) -> dict:
    """Everything `promote` may write: aliases, and every version's tags and description."""
    versions = client.search_model_versions(f"name = '{name}'")
    return {"aliases": client.get_registered_model(name).aliases,
            "versions": {v.version: (dict(v.tags), v.description, v.last_updated_timestamp)
                         for v in versions}}
