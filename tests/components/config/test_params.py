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


def _refusal(edit) -> str:
    raw = base()
    edit(raw)
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    return str(err.value)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda p: p["train_teachers"]["training"].update(lr=float("nan")),
         "train_teachers.training.lr"),
        (lambda p: p["distill"].update(temperature=float("inf")), "distill.temperature"),
        (lambda p: p["evaluate"]["profiles"]["gpu"]["budgets"].update(
            max_latency_ms_p95=float("-inf")), "evaluate.profiles.gpu.budgets.max_latency_ms_p95"),
        (lambda p: p["register"]["policy"]["gates"].update(min_val_accuracy=float("nan")),
         "register.policy.gates.min_val_accuracy"),
        (lambda p: p["validate"].update(value_max=float("inf")), "validate.value_max"),
    ],
)
def test_a_non_finite_number_is_refused_naming_the_key(edit, key):
    message = _refusal(edit)
    assert f"params.yaml: {key}: Input should be a finite number" in message


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda p: p["train_teachers"]["training"].update(epochs=True),
         "train_teachers.training.epochs"),
        (lambda p: p["distill"].update(alpha=False), "distill.alpha"),
        (lambda p: p["train_teachers"]["teachers"]["wide_cnn"].update(channels=[64, True]),
         "train_teachers.teachers.wide_cnn.cnn.channels.1"),
        (lambda p: p["train_teachers"]["teachers"]["wide_cnn"].update(pools=True),
         "train_teachers.teachers.wide_cnn.cnn.pools"),
        (lambda p: p["register"]["policy"]["gates"].update(min_val_accuracy=True),
         "register.policy.gates.min_val_accuracy"),
        (lambda p: p["ingest"].update(resize=[8, True]), "ingest.resize.1"),
        (lambda p: p["evaluate"]["profiles"]["edge-1core"].update(threads=True),
         "evaluate.profiles.edge-1core.threads"),
    ],
)
def test_a_boolean_where_a_number_belongs_is_refused_naming_the_key(edit, key):
    assert f"params.yaml: {key}: a number is required, got a boolean" in _refusal(edit)


def test_booleans_stay_accepted_where_a_boolean_belongs():
    raw = base()
    raw["quantize"]["per_channel"] = True
    raw["register"]["promote"] = False
    assert parse_params(raw).quantize.per_channel is True


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda p: p["train_teachers"]["training"].update(lr=0), "train_teachers.training.lr"),
        (lambda p: p["train_teachers"]["training"].update(lr=50.0),
         "train_teachers.training.lr"),
        (lambda p: p["distill"]["training"].update(lr=11), "distill.training.lr"),
        (lambda p: p["prune"].update(finetune_lr=100), "prune.finetune_lr"),
        (lambda p: p["prune"].update(finetune_lr=-1e-3), "prune.finetune_lr"),
    ],
)
def test_a_learning_rate_outside_0_to_10_is_refused_naming_the_key(edit, key):
    assert f"params.yaml: {key}: Input should be" in _refusal(edit)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda p: p["distill"].update(hint_teacher="vit"),
         "distill.hint_teacher: unknown teacher `vit`"),
        (lambda p: p["distill"].update(teachers=[]), "distill.teachers: an empty list"),
        (lambda p: p["distill"].update(teachers=["mlp", "mlp"]),
         "distill.teachers: teacher(s) ['mlp'] listed more than once"),
        (lambda p: p["distill"].update(hint_weight=0.5, hint_teacher=None),
         "distill.hint_weight: 0.5 weighs a hint loss, but `hint_teacher` is null"),
        (lambda p: p["register"].update(variants=["fp32", "fp32"]),
         "register.variants: variant(s) ['fp32'] listed more than once"),
        (lambda p: p["train_teachers"]["teachers"].update({"big/cnn": {"arch": "mlp"}}),
         "train_teachers.teachers: teacher name(s) ['big/cnn']"),
        (lambda p: p["train_teachers"]["teachers"].update({"cnn@2": {"arch": "mlp"}}),
         "train_teachers.teachers: teacher name(s) ['cnn@2']"),
    ],
)
def test_a_name_that_references_nothing_is_refused_naming_the_key(edit, expected):
    assert expected in _refusal(edit)


@pytest.mark.parametrize("name", ["", "  ", "team/model", "db:model", "../model", "model/",
                                  ".", "a//b"])
def test_a_model_name_mlflow_rejects_is_refused_before_any_stage(name):
    message = _refusal(lambda p: p["register"].update(model_name=name))
    assert "params.yaml: register.model_name:" in message


def test_model_names_mlflow_accepts_pass():
    raw = base()
    raw["register"]["model_name"] = "distillery-digits_v2.1 (edge)"
    assert parse_params(raw).register_.model_name == "distillery-digits_v2.1 (edge)"


def test_the_config_rule_for_model_names_agrees_with_mlflow():
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    from components.config.registry import check_model_name

    for name in ["", "a/b", "a:b", "./a", "a/..", "..a", "/a", "ok-name", "ok name", "a.b", "%x"]:
        try:
            _validate_model_name(name)
            mlflow_ok = True
        except MlflowException:
            mlflow_ok = False
        try:
            check_model_name(name)
            ours_ok = True
        except ValueError:
            ours_ok = False
        assert ours_ok == mlflow_ok, name


def test_an_empty_experiment_name_is_refused_naming_the_key():
    assert "params.yaml: tracking.experiment:" in _refusal(
        lambda p: p["tracking"].update(experiment=" "))
