"""`missing_versions` against two real sqlite stores: the registry follows the tracking URI.

What one `register` recorded (metrics/register.json, reports/register.json) is checked against
whichever registry `MLFLOW_TRACKING_URI` names; the stage run again there registers the same
bundles anew, with no retraining.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow

from components.core.io import atomic_write_json
from flows import register as reg
from flows.registry import missing_versions
from tests.flows.helpers_registry import EDGE, config, make_bundles, throwaway_registry


def test_missing_versions_follows_the_tracking_uri_and_the_stage_re_registers_there(
        store, tmp_path: Path):
    prepared = store["prepared"]
    cfg = config("digits-m", ["fp32", "int8"])
    bundles, metrics = make_bundles(tmp_path / "b", prepared, {"fp32": 3, "int8": 2})
    metrics["selected"][EDGE] = "fp32"
    atomic_write_json(tmp_path / "evaluate.json", metrics)
    recorded, report = tmp_path / "metrics" / "register.json", tmp_path / "reports" / "r.json"
    assert missing_versions(recorded, report) == []  # register never ran: nothing to miss

    def stage() -> dict:
        return reg.register_stage(cfg, bundles, tmp_path / "evaluate.json", prepared,
                                  {"data_hash": "blobs"}, recorded, report)

    first = stage()
    assert first["champion_version"] and missing_versions(recorded, report) == []

    (tmp_path / "other").mkdir()
    with throwaway_registry(tmp_path / "other") as other:  # a new, empty tracking server
        missing = missing_versions(recorded, report)
        assert [m.split(":")[0] for m in missing] == ["fp32", "int8", "@champion"]
        assert f"version {first['versions']['fp32']} of `digits-m`" in missing[0]
        assert str(report) in missing[0]
        # a fresh clone has metrics/ (git) but no reports/: the bytes' hashes still tell
        assert [m.split(":")[0] for m in missing_versions(recorded, tmp_path / "none.json")] \
            == ["fp32", "int8", "@champion"]

        again = stage()  # the same bundles, registered in the new store
        assert missing_versions(recorded, report) == []
        held = other["client"].search_model_versions("name = 'digits-m'")
        assert sorted(v.tags["distillery.variant"] for v in held) == ["fp32", "int8"]
        assert again["champion_version"] is not None
        assert json.loads(report.read_text()) == again

    # back on the first store: it still holds what the record names
    assert mlflow.MlflowClient().get_registered_model("digits-m").aliases
    assert missing_versions(recorded, report) == []
