"""End to end through real DVC: a fresh workspace reproduces, a second run does nothing."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.workspace import BIN, env_for, make_workspace, run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("dvc") / "ws")
    run(["dvc", "repro"], ws)
    return ws


def test_fresh_repro_builds_every_stage_output(built):
    for path in ["data/prepared/manifest.json", "metrics/validate.json", "metrics/teachers.json",
                 "models/teachers/mlp/model.pt", "reports/validate/data_docs/index.html"]:
        assert (built / path).exists(), path
    teachers = json.loads((built / "metrics/teachers.json").read_text())
    assert {"wide_cnn", "resnet", "mlp", "ensemble"} <= set(teachers)
    assert json.loads((built / "metrics/validate.json").read_text())["success"] is True


def test_every_stage_of_the_chain_publishes_its_metrics(built):
    for name in ["distill", "prune", "quantize", "convert", "evaluate", "register"]:
        assert (built / "metrics" / f"{name}.json").exists(), name
    distill = json.loads((built / "metrics/distill.json").read_text())
    assert {"student.test_accuracy", "baseline.test_accuracy", "kd_gain"} <= set(distill)
    evaluate = json.loads((built / "metrics/evaluate.json").read_text())
    assert evaluate["selected"]["edge-1core"] is not None
    assert "gpu" in evaluate["skipped"] or evaluate["selected"]["gpu"] is not None


def test_champion_loads_from_the_registry_with_the_evaluated_accuracy(built):
    import mlflow
    import numpy as np

    from components.core.data import load_split
    from flows.register import load_champion, predict_logits

    mlflow.set_tracking_uri(f"sqlite:///{built / 'mlflow.db'}")
    register = json.loads((built / "metrics/register.json").read_text())
    client = mlflow.MlflowClient()
    name = register["model_name"]
    champion = client.get_model_version_by_alias(name, "champion")
    for key in ("git_commit", "data_hash", "params_hash", "distillery.variant",
                "lineage.source_checkpoint_sha256", "distillery.teacher_run_ids"):
        assert champion.tags.get(key), key
    evaluated = json.loads((built / "metrics/evaluate.json").read_text())
    expected = evaluated[champion.tags["distillery.variant"]]["edge-1core"]["accuracy"]
    test = load_split(built / "data/prepared/test.npz")
    logits = predict_logits(load_champion(name), test.x)
    assert np.mean(logits.argmax(1) == test.y) == pytest.approx(expected)


def test_reproduce_rebuilds_the_champion_with_identical_hashes_and_metrics(built, tmp_path):
    out = run(["distillery", "reproduce", "champion", "--workdir", str(tmp_path / "re")],
              built).stdout
    assert "data_hash" in out and "accuracy on edge-1core" in out
    assert "**NO**" not in out


def test_second_repro_runs_nothing_and_status_is_clean(built):
    out = run(["dvc", "repro"], built).stdout
    assert "Running stage" not in out
    status = run(["dvc", "status", "--json"], built).stdout
    assert json.loads(status or "{}") == {}


def test_status_lists_every_stage_up_to_date_and_the_champion(built):
    out = run(["distillery", "status"], built).stdout
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for stage in ["ingest", "validate", "train_teachers@mlp", "distill", "register"]:
        assert "up to date" in lines[stage], lines.get(stage)
    assert "student.test_accuracy=" in lines["distill"]
    assert "champion of" in out and "none" not in lines["champion"]


def test_predict_cli_gives_the_labels_evaluation_scored(built):
    from components.core.data import load_split

    test = load_split(built / "data/prepared/test.npz")
    classes = json.loads((built / "data/prepared/manifest.json").read_text())["classes"]
    out = run(["distillery", "predict", "models/bundles/student", "data/prepared/test.npz"],
              built).stdout
    labels = [line.split("\t")[1] for line in out.splitlines() if "\t" in line]
    assert len(labels) == len(test)
    accuracy = sum(lab == classes[y] for lab, y in zip(labels, test.y, strict=True)) / len(test)
    evaluated = json.loads((built / "metrics/evaluate.json").read_text())
    assert accuracy == pytest.approx(evaluated["student"]["edge-1core"]["accuracy"])


def test_changing_one_teacher_reruns_only_what_depends_on_it(built):
    params = yaml.safe_load((built / "params.yaml").read_text())
    params["train_teachers"]["teachers"]["mlp"]["hidden"] = [24]
    (built / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stale = set(json.loads(run(["dvc", "status", "--json"], built).stdout))
    assert "train_teachers@mlp" in stale
    assert not stale & {"ingest", "validate", "train_teachers@resnet", "train_teachers@wide_cnn"}
    out = run(["dvc", "repro"], built).stdout
    assert "Running stage 'train_teachers@mlp'" in out
    assert "Running stage 'train_teachers@resnet'" not in out
    assert "Running stage 'ingest'" not in out


def test_register_is_never_restored_from_the_run_cache(built):
    params_path = built / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["register"]["example_size"] = 2
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    assert "Running stage 'register'" in run(["dvc", "repro", "register"], built).stdout
    params_path.write_text(original)  # back to a state DVC has seen: other stages could restore
    out = run(["dvc", "repro", "register"], built).stdout
    assert "Running stage 'register'" in out and "is cached" not in out


def test_stage_runs_are_tracked_in_mlflow(built):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{built / 'mlflow.db'}")
    exp = client.get_experiment_by_name("distillery")
    runs = client.search_runs([exp.experiment_id])
    names = {r.info.run_name for r in runs}
    assert {"ingest", "validate", "train_teachers@mlp", "ensemble"} <= names
    teacher = next(r for r in runs if r.info.run_name == "train_teachers@resnet")
    assert teacher.data.tags["data_hash"]
    assert teacher.data.tags["git_commit"] != "unknown"
    assert "test_accuracy" in teacher.data.metrics
    history = client.get_metric_history(teacher.info.run_id, "train.val_accuracy")
    assert len(history) >= 1


# --- Stage commands, the `check` stage and the data dep, through a real `dvc repro` ----------
# DVC runs `bin/stage` with the venv neither activated nor on PATH: only the project's `.venv`
# folder (a link to this venv) tells it where the interpreter is, as in a fresh clone.


def venvless(workspace: Path) -> dict[str, str]:
    env = env_for(workspace)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                  if p and Path(p).resolve() != BIN.resolve())
    env.pop("VIRTUAL_ENV", None)
    return env


def dvc(args: list[str], workspace: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=workspace, env=venvless(workspace),
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def unactivated_workspace(dest: Path) -> Path:
    ws = make_workspace(dest)
    (ws / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    return ws


def edit_params(ws: Path, change) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    change(params)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def one_teacher(tmp_path_factory):
    ws = unactivated_workspace(tmp_path_factory.mktemp("check") / "ws")
    out = dvc(["repro", "train_teachers@mlp"], ws).stdout
    return ws, out


def test_stages_run_with_the_venv_neither_activated_nor_on_path(one_teacher):
    ws, out = one_teacher
    assert not shutil.which("distillery", path=venvless(ws)["PATH"])
    for stage in ("check", "ingest", "validate", "train_teachers@mlp"):
        assert f"Running stage '{stage}'" in out, out
    assert (ws / "models/teachers/mlp").is_dir()


KEPT = ["metrics/check.json", "data/prepared/manifest.json", "metrics/validate.json",
        "reports/validate", "models/teachers/mlp", "metrics/teachers/mlp.json"]


def test_an_invalid_param_fails_at_check_before_any_output_is_removed(one_teacher):
    ws, _ = one_teacher
    before = {p: (ws / p).read_bytes() for p in KEPT if (ws / p).is_file()}
    original = (ws / "params.yaml").read_text()
    edit_params(ws, lambda p: p["train_teachers"]["training"].update(lr=-0.005))
    try:
        proc = dvc(["repro"], ws, check=False)
    finally:
        (ws / "params.yaml").write_text(original)
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    assert "train_teachers.training.lr" in log
    assert "failed to reproduce 'check'" in log, log[-3000:]
    assert "Running stage 'train_teachers@mlp'" not in log
    assert all((ws / p).exists() for p in KEPT), [p for p in KEPT if not (ws / p).exists()]
    assert {p: (ws / p).read_bytes() for p in before} == before


def test_new_content_in_the_ingest_source_reruns_ingest(tmp_path):
    ws = unactivated_workspace(tmp_path / "ws")
    source = ws / "raw" / "blobs.npz"
    source.parent.mkdir()

    def write_source(seed: int) -> None:
        rng = np.random.default_rng(seed)
        np.savez(source, x=rng.integers(0, 255, (60, 8, 8), dtype=np.uint8),
                 y=np.repeat(np.arange(3), 20))

    write_source(0)
    edit_params(ws, lambda p: p["ingest"].update(source="npz", path="raw/blobs.npz"))
    assert "Running stage 'ingest'" in dvc(["repro", "ingest"], ws).stdout
    assert json.loads(dvc(["status", "--json", "ingest"], ws).stdout or "{}") == {}
    write_source(1)  # same file name, same params: only the content changed
    stale = json.loads(dvc(["status", "--json", "ingest"], ws).stdout or "{}")
    assert "raw/blobs.npz" in json.dumps(stale.get("ingest")), stale
    assert "Running stage 'ingest'" in dvc(["repro", "ingest"], ws).stdout
