"""The generic stage runner: agrees with dvc.yaml, and a failed stage publishes nothing."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from flows.graph import stage_io
from flows.stages import quarantine, remove_stale_temps, run_stage, stage_module
from tests.helpers_data import REPO, make_dataset, write_dataset


def dvc_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(dvc_stages()))
def test_every_dvc_stage_has_a_module_with_run(name):
    module = stage_module(name)
    assert module.__name__.rpartition(".")[2] == name  # one name: stage = module
    assert callable(module.run)


def test_every_stage_command_calls_the_runner_with_its_own_name():
    for name, stage in dvc_stages().items():
        cmd = stage.get("do", stage)["cmd"]
        assert cmd.startswith((f"bin/stage {name}", f"distillery stage {name}")), cmd


def test_failed_stage_moves_its_outputs_aside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in ("params.yaml", "dvc.yaml"):
        (tmp_path / name).write_text((REPO / name).read_text())
    ds = make_dataset(n_per_class=10, classes=10)
    ds.train.x[0, 0, 0, 0] = np.nan  # bad data: validation must fail
    write_dataset(ds, tmp_path / "data/prepared")
    with pytest.raises(Exception, match="NaN|nan"):
        run_stage("validate")
    assert not (tmp_path / "metrics/validate.json").exists()
    assert not (tmp_path / "reports/validate").exists()
    assert (tmp_path / "reports/failed/validate/validate.json").exists()


def test_a_tracking_failure_after_the_stage_ran_quarantines_too(tmp_path, monkeypatch):
    """Logging sits inside the quarantine block: a dead tracking store leaves no outputs."""
    import flows.tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in ("params.yaml", "dvc.yaml"):
        (tmp_path / name).write_text((REPO / name).read_text())

    def broken(*args, **kwargs):
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(flows.tracking, "log_stage", broken)
    with pytest.raises(ConnectionError, match="went away"):
        run_stage("ingest")  # the digits default: the stage itself succeeds
    assert not (tmp_path / "data/prepared").exists()
    assert (tmp_path / "reports/failed/ingest/prepared/manifest.json").exists()


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="dvc.yaml: no stage `distil`"):
        run_stage("distil", dvc_file=REPO / "dvc.yaml", params_path=REPO / "params.yaml")
    with pytest.raises(ValueError, match="unknown stage `distil`"):
        stage_module("distil")


def test_quarantine_moves_only_what_exists(tmp_path):
    (tmp_path / "models/x").mkdir(parents=True)
    (tmp_path / "models/x/model.pt").write_text("half")
    quarantine("x", [Path("models/x"), Path("metrics/x.json")], root=tmp_path)
    assert not (tmp_path / "models/x").exists()
    assert (tmp_path / "reports/failed/x/x/model.pt").read_text() == "half"


def test_stage_io_names_paths_as_dvc_yaml_vars_do():
    io = stage_io("train_teachers", "mlp", REPO / "dvc.yaml")
    assert io.out("teachers") == Path("models/teachers/mlp")
    assert io.metrics == Path("metrics/teachers/mlp.json")
    assert io.dep("prepared") == Path("data/prepared")
    with pytest.raises(KeyError, match="declares no deps `student`"):
        io.dep("student")
    with pytest.raises(ValueError, match="foreach stage and needs an item"):
        stage_io("train_teachers", None, REPO / "dvc.yaml")


def test_stale_temps_of_a_stage_are_removed_and_no_other_stages(tmp_path):
    """#14 item 7: a kill -9 during `convert` leaves `models/.bundles.*.tmp/` behind."""
    convert = stage_io("convert", None, REPO / "dvc.yaml")
    mine = [tmp_path / "models/.bundles.k1l2m3n_.tmp", tmp_path / "models/.bundles.old-4242",
            tmp_path / "metrics/.convert.json.a1b2c3d4.tmp"]
    others = [tmp_path / "models/.quantized.a1b2c3d4.tmp",  # quantize's, maybe running now
              tmp_path / "models/.bundles.notes", tmp_path / "models/bundles-old.tmp",
              tmp_path / "metrics/.convert.json.toolong123.tmp"]
    for p in mine[:2] + others[:1]:
        (p / "edge").mkdir(parents=True)
        (p / "edge/model.onnx").write_bytes(b"complete-looking, never verified")
    for p in mine[2:] + others[1:]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("{}")
    removed = remove_stale_temps([tmp_path / p for p in convert.outs.values()])
    assert sorted(removed) == sorted(mine)
    assert not any(p.exists() for p in mine)
    assert all(p.exists() for p in others)


def test_a_stage_run_removes_the_temps_a_killed_run_of_it_left(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in ("params.yaml", "dvc.yaml"):
        (tmp_path / name).write_text((REPO / name).read_text())
    left = tmp_path / "data/.prepared.abcd1234.tmp"
    other = tmp_path / "models/.bundles.abcd1234.tmp"
    for p in (left, other):
        p.mkdir(parents=True)
        (p / "half.npz").write_bytes(b"half")
    run_stage("ingest")
    assert (tmp_path / "data/prepared/manifest.json").exists()
    assert not left.exists()
    assert (other / "half.npz").exists()  # convert's: only convert's next run removes it


def test_stale_temps_match_the_names_components_core_io_gives_its_temporaries(tmp_path):
    from components.core.io import atomic_dir
    from flows.stages import stale_temps

    out = tmp_path / "models/bundles"
    with atomic_dir(out) as tmp:
        assert stale_temps(out) == [tmp]  # what a kill -9 here would leave
        (tmp / "m.json").write_text("{}")
    with atomic_dir(out):  # a rebuild beside the published folder: only its temporary
        assert len(stale_temps(out)) == 1
    assert stale_temps(out) == []
