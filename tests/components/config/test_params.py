import pytest
import yaml

from components.config import ConfigError, load_params, parse_params
from tests.helpers_data import REPO


def base() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repository_params_file_is_valid():
    params = load_params(REPO / "params.yaml")
    assert params.ingest.source == "digits"
    assert len(params.train_teachers.teachers) >= 3


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda p: p["train_teachers"]["training"].update(lr=-0.1),
         "train_teachers.training.lr"),
        (lambda p: p["ingest"]["split"].update(train=0.8, val=0.2, test=0.2),
         "ingest.split: train + val + test must sum to 1"),
        (lambda p: p["ingest"].update(source="parquet"), "ingest.source"),
        (lambda p: p["train_teachers"]["teachers"]["mlp"].update(arch="transformer"),
         "train_teachers.teachers.mlp"),
        (lambda p: p["ingest"].update(colour="blue"), "ingest.colour: Extra inputs"),
        (lambda p: p.update(trian_teachers={}), "trian_teachers"),
        (lambda p: p["train_teachers"]["training"].update(epochs="many"),
         "train_teachers.training.epochs"),
        (lambda p: p["ingest"].update(source="idx", path=None), "source `idx` needs `path`"),
        (lambda p: p["train_teachers"]["teachers"]["wide_cnn"].update(channels=[64, -1]),
         "train_teachers.teachers.wide_cnn.cnn.channels.1"),
    ],
)
def test_config_rejects_bad_values_naming_the_key(edit, expected):
    raw = base()
    edit(raw)
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert expected in str(err.value)
    assert "params.yaml" in str(err.value)


def test_load_params_names_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_params(tmp_path / "nope.yaml")


def test_load_params_rejects_invalid_yaml(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("ingest: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda p: p["prune"].update(criterion="random"),
         "prune.criterion: Input should be 'bn_scale', 'l1', 'l2' or 'taylor'"),
        (lambda p: p["distill"].update(weighting="vote"), "distill.weighting"),
        (lambda p: p["register"].update(variants=["fp32", "int4"]),
         "register.variants: unknown variant(s) ['int4']"),
        (lambda p: p["register"]["policy"].update(primary_profile="phone"),
         "unknown profile `phone`"),
        (lambda p: p["distill"].update(teachers=["vit"]), "unknown teacher `vit`"),
    ],
)
def test_a_choice_no_registry_holds_is_refused_naming_key_and_choices(edit, expected):
    raw = base()
    edit(raw)
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert expected in str(err.value)


def test_missing_optional_section_is_refused_by_the_stage_that_needs_it():
    raw = base()
    raw.pop("prune")
    params = parse_params(raw)
    with pytest.raises(ConfigError, match="the `prune` section is required"):
        params.required("prune")
