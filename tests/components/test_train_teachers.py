"""`train_teachers`: one teacher per foreach item, through the stage contract."""

from __future__ import annotations

import pytest
import yaml

from components.config import parse_params
from components.core.io import read_json
from components.core.stage import StageIO
from components.modeling.checkpoint import load_checkpoint
from components.train_teachers import run
from tests.helpers_data import REPO, make_dataset, write_dataset


def tiny_params(**teachers):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train_teachers"]["training"].update(epochs=2, patience=2)
    raw["train_teachers"]["teachers"] = teachers
    raw["distill"]["teachers"] = None
    return parse_params(raw)


def stage_io(tmp_path, item):
    return StageIO("train_teachers", item, deps={"prepared": tmp_path / "prepared"},
                   outs={"teachers": tmp_path / "teachers" / item,
                         "teacher_metrics": tmp_path / f"{item}.json"},
                   metrics=tmp_path / f"{item}.json")


def test_run_trains_the_item_and_keeps_durations_out_of_its_metrics(tmp_path):
    write_dataset(make_dataset(n_per_class=20), tmp_path / "prepared")
    cfg = tiny_params(tiny={"arch": "mlp", "hidden": [8]})
    result = run(cfg, stage_io(tmp_path, "tiny"))
    written = read_json(tmp_path / "tiny.json")
    assert written == result.metrics and "seconds" not in written
    assert result.timings["train_seconds"] > 0
    assert 0.0 <= written["test_accuracy"] <= 1.0
    assert load_checkpoint(tmp_path / "teachers" / "tiny").metadata["name"] == "tiny"


def test_run_refuses_an_item_params_yaml_does_not_name(tmp_path):
    cfg = tiny_params(tiny={"arch": "mlp", "hidden": [8]})
    with pytest.raises(ValueError, match="unknown teacher `ghost`"):
        run(cfg, stage_io(tmp_path, "ghost"))
    assert not (tmp_path / "teachers").exists()
