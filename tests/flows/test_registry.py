"""Registry writes and reads on a throwaway sqlite MLflow: versions, tags, card, pyfunc load."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from components.core.data import load_split
from flows import registry
from flows.promotion import promote
from flows.registry import BATCH, METRICS, SELECTED, VARIANT
from tests.flows.helpers_registry import EDGE, config, make_bundles


def test_register_variants_tags_lineage_metrics_and_writes_the_card(store, tmp_path: Path):
    client, prepared = store["client"], store["prepared"]
    cfg = config("digits-a", ["fp32", "int8"])
    bundles, metrics = make_bundles(tmp_path / "b1", prepared, {"fp32": 3, "int8": 3})
    metrics["selected"][EDGE] = "int8"  # as evaluate breaks the accuracy tie on latency
    versions = registry.register_variants(cfg, bundles, metrics,
                                          {"data_hash": "blobs", "params_hash": "p" * 8,
                                           "teacher_run_ids": {"mlp": "r1"}}, prepared)
    by_variant = {v.tags[VARIANT]: v for v in versions}
    assert set(by_variant) == {"fp32", "int8"}
    int8 = by_variant["int8"]
    assert int8.tags["data_hash"] == "blobs" and int8.tags["params_hash"] == "p" * 8
    assert int8.tags["distillery.parent_version"] == str(by_variant["fp32"].version)
    assert json.loads(int8.tags["distillery.teacher_run_ids"]) == {"mlp": "r1"}
    assert json.loads(int8.tags[METRICS])[EDGE]["accuracy"] == 1.0
    assert "## Metrics" in int8.description
    card = mlflow.artifacts.load_text(f"runs:/{int8.run_id}/model_card.md")
    assert "## Known limits" in card and "## Lineage" in card
    lineage = card.split("## Lineage\n")[1]
    assert "- distillery.variant: `int8`" in lineage and "- data_hash: `blobs`" in lineage
    assert not any(f"- {tag}:" in lineage for tag in (METRICS, SELECTED, BATCH))
    assert client.get_metric_history(int8.run_id, f"{EDGE}.accuracy")[0].value == 1.0


def test_champion_loads_through_pyfunc_and_reproduces_evaluated_accuracy(store, tmp_path: Path):
    prepared = store["prepared"]
    cfg = config("digits-c", ["fp32"])
    bundles, metrics = make_bundles(tmp_path / "b", prepared, {"fp32": 2})  # imperfect model
    metrics["selected"][EDGE] = "fp32"
    (_,) = registry.register_variants(cfg, bundles, metrics, {}, prepared)  # one version
    assert promote(cfg).outcome == "champion"

    model = registry.load_champion("digits-c")
    test = load_split(prepared / "test.npz")
    logits = registry.predict_logits(model, test.x)
    assert logits.shape == (len(test), 3) and logits.dtype == np.float32
    accuracy = float((logits.argmax(1) == test.y).mean())
    assert accuracy == metrics["fp32"][EDGE]["accuracy"] < 1.0


def test_a_registry_error_is_not_read_as_no_champion():
    """A transient error (database locked) propagates instead of meaning "no champion"."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

    from flows.registry import _by_alias

    class Locked:
        def get_model_version_by_alias(self, name, alias):
            raise MlflowException("(sqlite3.OperationalError) database is locked",
                                  error_code=INTERNAL_ERROR)

    class Missing:
        def get_model_version_by_alias(self, name, alias):
            raise MlflowException(f"Registered model alias {alias} not found.",
                                  error_code=INVALID_PARAMETER_VALUE)

    with pytest.raises(MlflowException, match="database is locked"):
        _by_alias(Locked(), "m", "champion")
    assert _by_alias(Missing(), "m", "champion") is None


def test_load_champion_refuses_a_cloudpickled_pyfunc_naming_its_version_and_flavour(
        store, tmp_path: Path):
    class Planted(mlflow.pyfunc.PythonModel):
        """A cloudpickled pyfunc whose loading runs code: it leaves a file behind."""

        def __init__(self, marker: str) -> None:
            self.marker = marker

        def load_context(self, context) -> None:
            Path(self.marker).write_text("unpickled and run")

        def predict(self, context, model_input: list[list[float]]) -> list[list[float]]:
            return [[0.0, 0.0, 0.0] for _ in model_input]

    client = store["client"]
    marker = tmp_path / "ran"
    with mlflow.start_run(run_name="planted"):
        info = mlflow.pyfunc.log_model(name="model", python_model=Planted(str(marker)),
                                       registered_model_name="digits-p", pip_requirements=[])
    version = str(info.registered_model_version)
    client.set_registered_model_alias("digits-p", "champion", version)

    with pytest.raises(RuntimeError, match=rf"@champion \(version {version}\): flavours "
                                           r"\['python_function'\] with pyfunc loader "
                                           r"`mlflow.pyfunc.model`"):
        registry.load_champion("digits-p")
    assert not marker.exists()  # refused before anything was unpickled


def test_a_uint8_bundle_registers_and_its_champion_predicts_logits_from_prepared_floats(
        store, tmp_path: Path):
    """The shipped contract: uint8 (N, H, W, C) in, `logits`, `probabilities`, `label` out."""
    import onnxruntime as ort

    from components.core.io import atomic_write_json, read_json
    from components.export.preprocessing import add_preprocessing

    prepared = store["prepared"]
    test = load_split(prepared / "test.npz")
    cfg = config("digits-u", ["fp32"])
    bundles, metrics = make_bundles(tmp_path / "b", prepared, {"fp32": 2})
    metrics["selected"][EDGE] = "fp32"
    folder = bundles / "fp32"
    reference = ort.InferenceSession(str(folder / "model.onnx")).run(
        ["logits"], {"image": test.x.astype(np.float32)})[0]
    add_preprocessing(folder / "model.onnx", folder / "model.onnx", (1, 8, 8), 1 / 255)
    meta = read_json(folder / "metadata.json")
    meta["input"] = {"name": "image", "dtype": "uint8", "shape": ["batch", 8, 8, 1],
                     "scale": 1 / 255}
    atomic_write_json(folder / "metadata.json", meta)
    (version,) = registry.register_variants(cfg, bundles, metrics, {}, prepared)
    assert promote(cfg).outcome == "champion"

    model = registry.load_champion("digits-u")
    assert model.metadata.get_input_schema().inputs[0].type == np.uint8
    logits = registry.predict_logits(model, test.x)  # prepared floats, as pixels
    assert logits.shape == (len(test), 3)
    assert np.abs(logits - reference).max() <= 64 * 0.5 / 255  # 64 pixels, half a step each
    with pytest.raises(ValueError, match="sample 0 is outside the pixel range"):
        registry.predict_logits(model, test.x + 2.0)
