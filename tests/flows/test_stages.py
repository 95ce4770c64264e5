"""The stage runner: agrees with dvc.yaml, and a failed stage publishes nothing."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from flows.stages import STAGES, run_stage
from tests.conftest import REPO, make_dataset, write_dataset


def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def declared_outs(stage: dict) -> list[Path]:
    body = stage.get("do", stage)
    outs = []
    for key in ("outs", "metrics", "plots"):
        for entry in body.get(key, []):
            outs.append(Path(next(iter(entry)) if isinstance(entry, dict) else entry))
    return outs


def test_every_dvc_stage_has_a_runner_and_back():
    assert set(dvc_stages()) == set(STAGES)


@pytest.mark.parametrize("name", sorted(dvc_stages()))
def test_runner_cleans_every_output_dvc_declares(name):
    stage = dvc_stages()[name]
    item = "mlp" if "foreach" in stage else None
    covered = STAGES[name].outs(item)
    for out in declared_outs(stage):
        out = Path(str(out).replace("${key}", "mlp"))
        assert any(out == c or c in out.parents for c in covered), f"{name}: {out} not covered"


def test_every_stage_command_calls_the_runner_with_its_own_name():
    for name, stage in dvc_stages().items():
        cmd = stage.get("do", stage)["cmd"]
        assert cmd.startswith(f"distillery stage {name}"), cmd


def test_failed_stage_moves_its_outputs_aside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    ds = make_dataset(n_per_class=10, classes=10)
    ds.train.x[0, 0, 0, 0] = np.nan  # bad data: validation must fail
    write_dataset(ds, tmp_path / "data/prepared")
    with pytest.raises(Exception, match="NaN|nan"):
        run_stage("validate")
    assert not (tmp_path / "metrics/validate.json").exists()
    assert not (tmp_path / "reports/validate").exists()
    assert (tmp_path / "reports/failed/validate/validate.json").exists()


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="unknown stage `distil`"):
        run_stage("distil")
