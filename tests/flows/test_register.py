"""The `register` stage on a throwaway sqlite MLflow: the lineage it collects, what it writes."""

from __future__ import annotations

import json
from pathlib import Path

from components.config import load_params
from components.core.io import atomic_write_json, sha256_file
from components.core.stage import StageIO
from flows import register as reg
from flows.promotion import promote
from flows.registry import register_variants
from tests.flows.helpers_registry import EDGE, config, make_bundles
from tests.helpers_data import REPO


def test_register_stage_reuses_a_registered_version_and_keeps_its_decision(store,
                                                                          tmp_path: Path):
    client, prepared = store["client"], store["prepared"]
    cfg = config("digits-c", ["fp32"])
    bundles, metrics = make_bundles(tmp_path / "b", prepared, {"fp32": 2})
    metrics["selected"][EDGE] = "fp32"
    (v,) = register_variants(cfg, bundles, metrics, {}, prepared)
    assert promote(cfg).outcome == "champion"

    # The stage re-registering the same bytes reuses the version (and keeps its decision).
    atomic_write_json(tmp_path / "evaluate.json", metrics)
    out = reg.register_stage(cfg, bundles, tmp_path / "evaluate.json", prepared, {},
                             tmp_path / "register.json", tmp_path / "report.json")
    assert out["versions"] == {"fp32": int(v.version)}
    assert out["champion_version"] == int(v.version)
    assert out["decision"]["outcome"] == "champion"
    assert len(client.search_model_versions("name = 'digits-c'")) == 1
    again = client.get_model_version("digits-c", str(v.version))
    assert "## Promotion decision" in again.description
    assert json.loads((tmp_path / "report.json").read_text()) == out
    # metrics/ holds nothing one registry's ids would carry into another clone
    assert json.loads((tmp_path / "register.json").read_text()) == {
        "model_name": "digits-c", "registered": ["fp32"],
        "onnx_sha256": {"fp32": sha256_file(bundles / "fp32" / "model.onnx")}, "missing": [],
        "outcome": "champion", "candidate": "fp32"}

    # The runner's entry: the same stage on the paths dvc.yaml names, its decision as a tag.
    Path("params.yaml").write_text("register: {}\n")  # hashed for lineage; cwd: the store
    params = load_params(REPO / "params.yaml").model_copy(update={"register_": cfg})
    io = StageIO("register", deps={"prepared": prepared, "bundles": bundles,
                                   "evaluate_metrics": tmp_path / "evaluate.json",
                                   "validate_metrics": tmp_path / "validate.json"},
                 outs={"register_metrics": tmp_path / "run.json"}, metrics=tmp_path / "run.json")
    result = reg.run(params, io)
    assert result.metrics == json.loads((tmp_path / "run.json").read_text())
    assert result.metrics["outcome"] == "champion" and "versions" not in result.metrics
    assert json.loads(reg.REPORT.read_text()) == out  # the ids: reports/, relative to cwd
    assert result.params == cfg.model_dump()
    assert result.tags == {"distillery.decision": "champion"}


def test_collect_lineage_takes_hashes_validation_and_each_teachers_last_finished_run(
        store, tmp_path: Path):
    client, prepared = store["client"], store["prepared"]
    params = tmp_path / "params.yaml"
    params.write_text("register: {}\n")
    validate = tmp_path / "validate.json"
    atomic_write_json(validate, {"passed": True})
    experiment = client.create_experiment("test-lineage")
    tags = {"distillery.stage": "train_teachers@mlp"}
    runs = {}
    for start, status in ((1000, "FINISHED"), (2000, "FINISHED"), (3000, "FAILED")):
        runs[start] = client.create_run(experiment, start_time=start, tags=tags).info.run_id
        client.set_terminated(runs[start], status)

    lineage = reg.collect_lineage(params, prepared, validate, ["mlp", "cnn"], "test-lineage")
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert lineage == {"data_hash": manifest["data_hash"], "params_hash": sha256_file(params),
                       "validation": {"passed": True}, "teacher_run_ids": {"mlp": runs[2000]}}
    assert reg.collect_lineage(params, prepared, tmp_path / "missing.json", ["mlp"],
                               "no-such-experiment") == {"data_hash": manifest["data_hash"],
                                                         "params_hash": sha256_file(params)}
