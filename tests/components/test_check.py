"""`check`: the first stage validates the whole params file and writes the same bytes for any
valid one (so a param change re-runs nothing through it)."""

from __future__ import annotations

import pytest
import yaml

from components.check import params_sections
from components.config import ConfigError
from flows.stages import run_stage
from tests.helpers_data import REPO


@pytest.fixture
def repo_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in ("params.yaml", "dvc.yaml"):
        (tmp_path / name).write_text((REPO / name).read_text())
    return tmp_path


def _edit(path, change) -> None:
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def test_check_output_is_identical_for_different_valid_params(repo_copy):
    run_stage("check")
    first = (repo_copy / "metrics/check.json").read_bytes()
    _edit(repo_copy / "params.yaml",
          lambda p: (p["train_teachers"]["training"].update(lr=0.01), p.pop("prune")))
    run_stage("check")
    assert (repo_copy / "metrics/check.json").read_bytes() == first
    assert b'"params_valid": true' in first


def test_check_refuses_a_negative_lr_naming_the_key_and_keeps_its_output(repo_copy):
    run_stage("check")
    before = (repo_copy / "metrics/check.json").read_bytes()
    _edit(repo_copy / "params.yaml", lambda p: p["train_teachers"]["training"].update(lr=-0.1))
    with pytest.raises(ConfigError, match=r"params.yaml: train_teachers\.training\.lr"):
        run_stage("check")
    assert (repo_copy / "metrics/check.json").read_bytes() == before
    assert not (repo_copy / "reports/failed").exists()


def test_sections_list_every_params_section_by_its_yaml_name():
    sections = params_sections()
    assert {"ingest", "validate", "train_teachers", "register", "tracking"} <= set(sections)
    assert "validate_" not in sections and "register_" not in sections
