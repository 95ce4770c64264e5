"""Behaviour of `components.prune`: channel surgery, MACs, criteria, step selection, the stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from components.config import CNNConfig, DSCNNConfig, MLPConfig, ResNetConfig, TrainingConfig
from components.core.data import Dataset, Split
from components.core.io import read_json, sha256_file
from components.modeling.architectures import ARCHITECTURES, build_model, count_params
from components.modeling.checkpoint import load_checkpoint, save_checkpoint
from components.prune import (
    DENSE_NOTE,
    IMPORTANCE,
    PruneConfig,
    StepRecord,
    count_macs,
    layer_report,
    make_finetune,
    measure_sparsity,
    prune,
    prune_stage,
    prune_structured,
    prune_unstructured,
    select_step,
)
from components.pruning.surgery import GROUPS, prunable_groups

SHAPE = (1, 8, 8)
K = 3
CONFIGS = {
    "mlp": MLPConfig(hidden=[16, 12]),
    "cnn_gap": CNNConfig(channels=[8, 12], pools=2, head="gap", hidden=8),
    "cnn_flatten": CNNConfig(channels=[8, 12], pools=1, head="flatten"),
    "resnet": ResNetConfig(width=12, blocks=[8, 8], pool_after=[0]),
    "dscnn": DSCNNConfig(stem=8, channels=[12, 16], pools=1),
}
# every group of size 4: a 0.25 ratio removes exactly one channel from each
FOURS = {
    "mlp": MLPConfig(hidden=[4, 4]),
    "cnn_gap": CNNConfig(channels=[4, 4], pools=2, head="gap", hidden=4),
    "cnn_flatten": CNNConfig(channels=[4, 4], pools=1, head="flatten"),
    "resnet": ResNetConfig(width=4, blocks=[4, 4], pool_after=[0]),
    "dscnn": DSCNNConfig(stem=4, channels=[4, 4], pools=1),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny tensors on a shared 2-core box: thread hand-offs cost more than the maths
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(cfg, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(cfg, SHAPE, K, mean=0.5, std=0.25)
    for m in model.modules():  # non-trivial BatchNorm statistics, so slicing them matters
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def batch(n: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g), torch.randint(0, K, (n,), generator=g)


def test_surgery_covers_every_registry_architecture():
    assert set(GROUPS) == set(ARCHITECTURES)
    assert {c.arch for c in CONFIGS.values()} == set(ARCHITECTURES)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("criterion", sorted(IMPORTANCE))
def test_structured_pruning_keeps_a_valid_smaller_model_of_the_same_architecture(name, criterion):
    cfg, x = CONFIGS[name], batch()
    model = make(cfg)
    pruned, new_cfg = prune_structured(model, cfg, SHAPE, K, 0.5, criterion, calibration=[x])
    assert type(pruned.body) is type(model.body) and new_cfg.arch == cfg.arch
    assert pruned(x[0]).shape == (6, K)
    assert count_params(pruned) < count_params(model)
    assert count_macs(pruned, SHAPE) < count_macs(model, SHAPE)
    for g_old, g_new in zip(prunable_groups(model, cfg), prunable_groups(pruned, new_cfg),
                            strict=True):
        assert g_new.size == g_old.size - int(0.5 * g_old.size + 0.5)
    # the result is a plain model: rebuilt from its config alone, it accepts the same weights
    build_model(new_cfg, SHAPE, K).load_state_dict(pruned.state_dict())


@pytest.mark.parametrize("name", CONFIGS)
def test_ratio_zero_gives_identical_outputs(name):
    model, x = make(CONFIGS[name]), batch()[0]
    pruned, new_cfg = prune_structured(model, CONFIGS[name], SHAPE, K, 0.0, "l1")
    assert new_cfg == CONFIGS[name]
    assert torch.equal(pruned(x), model(x))


def _kill_one_channel(model, group, c: int) -> None:
    """Make channel ``c`` of ``group`` output exactly zero everywhere it is produced."""
    for name in group.norms + group.followers:
        m = model.get_submodule(name)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.weight.data[c] = 0.0
            m.bias.data[c] = 0.0
    if not group.norms:  # a Linear with no BatchNorm: zero its row and bias
        m = model.get_submodule(group.producers[0])
        m.weight.data[c] = 0.0
        m.bias.data[c] = 0.0


@pytest.mark.parametrize("name", FOURS)
def test_removing_dead_channels_leaves_outputs_unchanged(name):
    # checks every dependency: BN slices, next-layer inputs, flatten h*w blocks, depthwise,
    # and ResNet's shared residual stream
    cfg, x = FOURS[name], batch()[0]
    model = make(cfg)
    for i, group in enumerate(prunable_groups(model, cfg)):
        _kill_one_channel(model, group, i % 4)
    pruned, new_cfg = prune_structured(model, cfg, SHAPE, K, 0.25, "bn_scale")
    assert all(g.size == 3 for g in prunable_groups(pruned, new_cfg))
    torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("target", ["params", "macs"])
def test_target_search_reduces_params_or_macs_by_the_requested_share(name, target):
    cfg = CONFIGS[name]
    model = make(cfg)
    before = count_params(model) if target == "params" else count_macs(model, SHAPE)
    result = prune(model, cfg, SHAPE, K, evaluate=lambda m: 1.0, target=target,
                   target_ratio=0.4, steps=2)
    after = count_params(result.model) if target == "params" else count_macs(result.model, SHAPE)
    # channel granularity in these tiny models: at least the target, at most ~12 points over
    assert 0.4 <= 1 - after / before <= 0.52
    assert result.chosen_step == 2
    assert result.chosen.achieved_reduction == pytest.approx(1 - after / before)


def test_pruned_checkpoint_reloads_weights_only_with_identical_outputs(tmp_path):
    cfg, x = CONFIGS["resnet"], batch()[0]
    pruned, new_cfg = prune_structured(make(cfg), cfg, SHAPE, K, 0.5, "l2")
    save_checkpoint(tmp_path, pruned, new_cfg, SHAPE, K, {"parent": {"sha256": "x"}})
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["arch"] == new_cfg.model_dump()
    reloaded = load_checkpoint(tmp_path)
    assert reloaded.arch == new_cfg
    assert torch.equal(reloaded.model(x), pruned(x))


def test_ratio_that_would_empty_a_layer_is_refused_naming_it():
    cfg = MLPConfig(hidden=[16, 8])
    with pytest.raises(ValueError, match=r"all 8 channels of `hidden\[1\]`"):
        prune_structured(make(cfg), cfg, SHAPE, K, 0.95, "l1")


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1])
def test_ratio_outside_unit_interval_is_refused(ratio):
    cfg = CONFIGS["cnn_gap"]
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_structured(make(cfg), cfg, SHAPE, K, ratio, "l1")
    with pytest.raises(ValueError, match=r"target_ratio must be in \[0, 1\)"):
        prune(make(cfg), cfg, SHAPE, K, evaluate=lambda m: 1.0, target_ratio=ratio)
    with pytest.raises(ValidationError, match=r"target_ratio must be in \[0, 1\)"):
        PruneConfig(target_ratio=ratio)
    with pytest.raises(ValidationError, match=r"sparsity must be in \[0, 1\)"):
        PruneConfig(sparsity=ratio)


def _kept_channels(model, pruned, conv: str) -> list[int]:
    """Which original output channels of ``conv`` survive in ``pruned`` (matched by weights)."""
    old, new = model.get_submodule(conv).weight, pruned.get_submodule(conv).weight
    return [next(i for i in range(len(old)) if torch.equal(old[i], w)) for w in new]


CONV0 = "body.features.0.0"


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_magnitude_criteria_remove_a_zeroed_filter_first(criterion):
    cfg = CNNConfig(channels=[4, 4], pools=2)
    model = make(cfg)
    model.get_submodule(CONV0).weight.data[2] = 0.0
    model.get_submodule(CONV0).weight.data[1] *= 0.01
    pruned, _ = prune_structured(model, cfg, SHAPE, K, 0.25, criterion)
    assert _kept_channels(model, pruned, CONV0) == [0, 1, 3]
    pruned, _ = prune_structured(model, cfg, SHAPE, K, 0.5, criterion)
    assert _kept_channels(model, pruned, CONV0) == [0, 3]


def test_bn_scale_removes_the_channel_with_the_smallest_gamma():
    cfg = CNNConfig(channels=[4, 4], pools=2)
    model = make(cfg)
    model.get_submodule(CONV0).weight.data[1] *= 100  # l1 would keep it; bn_scale must not
    model.get_submodule("body.features.0.1").weight.data[1] = 1e-4
    pruned, _ = prune_structured(model, cfg, SHAPE, K, 0.25, "bn_scale")
    assert _kept_channels(model, pruned, CONV0) == [0, 2, 3]


def test_taylor_removes_a_channel_with_no_effect_on_the_loss():
    cfg = CNNConfig(channels=[4, 4], pools=2)
    model = make(cfg)
    model.get_submodule(CONV0).weight.data[3] *= 100  # large filter, but its output is zeroed
    model.get_submodule("body.features.0.1").weight.data[3] = 0.0
    model.get_submodule("body.features.0.1").bias.data[3] = 0.0
    pruned, _ = prune_structured(model, cfg, SHAPE, K, 0.25, "taylor", calibration=[batch()])
    assert _kept_channels(model, pruned, CONV0) == [0, 1, 2]
    with pytest.raises(ValueError, match="taylor.*calibration"):
        prune_structured(model, cfg, SHAPE, K, 0.25, "taylor")


def test_resnet_residual_stream_is_pruned_as_one_group_by_summed_importance():
    cfg = ResNetConfig(width=4, blocks=[4, 4], pool_after=[])
    model = make(cfg)
    for conv in ("body.stem.0", "body.blocks.0.conv2", "body.blocks.1.conv2"):
        model.get_submodule(conv).weight.data[1] *= 0.01  # small in every writer of channel 1
    model.get_submodule("body.stem.0").weight.data[2] *= 0.5  # small in one writer only
    pruned, new_cfg = prune_structured(model, cfg, SHAPE, K, 0.25, "l1")
    assert new_cfg.width == 3 and new_cfg.blocks == [3, 3]
    assert _kept_channels(model, pruned, "body.stem.0") == [0, 2, 3]
    kept_in = pruned.get_submodule("body.classifier").weight
    assert torch.equal(kept_in, model.get_submodule("body.classifier").weight[:, [0, 2, 3]])


def test_mac_report_counts_conv_and_linear_per_sample():
    model = build_model(CNNConfig(channels=[4], pools=0, head="gap"), SHAPE, K)
    report = {r.name: r for r in layer_report(model, SHAPE)}
    conv, fc = report["body.features.0.0"], report["body.classifier"]
    assert (conv.type, conv.in_channels, conv.out_channels) == ("Conv2d", 1, 4)
    assert conv.macs == 8 * 8 * 4 * 1 * 9 and conv.params == 4 * 9
    assert fc.macs == 4 * K and fc.params == 4 * K + K
    assert count_macs(model, SHAPE) == conv.macs + fc.macs
    dw = layer_report(build_model(DSCNNConfig(stem=4, channels=[6], pools=0), SHAPE, K), SHAPE)[1]
    assert dw.macs == 8 * 8 * 4 * 9  # depthwise: one 3x3 input channel per output channel


def _records(accs: list[float]) -> list[StepRecord]:
    return [StepRecord(k, 0.1, 0.1 * k, 0.1 * k, 0, 0, a, True, "")
            for k, a in enumerate(accs, start=1)]


def test_selection_picks_the_largest_reduction_within_tolerance():
    assert select_step(0.99, _records([0.985, 0.97, 0.981, 0.95]), 0.01)[0] == 3
    assert select_step(0.985, _records([0.98]), 0.005)[0] == 1  # boundary: exactly at the budget
    step, reason = select_step(0.99, _records([0.97, 0.96]), 0.01)
    assert step == 0 and "unpruned" in reason


def test_target_search_returns_the_step_chosen_by_constructed_accuracies():
    cfg = CONFIGS["cnn_gap"]
    model = make(cfg)
    accs = iter([0.99, 0.985, 0.982, 0.96, 0.95])  # unpruned, then steps 1..4
    tuned: list[int] = []
    result = prune(model, cfg, SHAPE, K, evaluate=lambda m: next(accs), target="macs",
                   target_ratio=0.6, steps=4, finetune=lambda m: tuned.append(count_params(m)),
                   max_accuracy_drop=0.01)
    assert len(tuned) == 4 and tuned == sorted(tuned, reverse=True)
    assert result.chosen_step == 2 and result.base_accuracy == 0.99
    assert count_params(result.model) == result.steps[1].params == tuned[1]
    assert result.arch.channels == [c.size for c in prunable_groups(result.model, result.arch)][:2]
    assert "step 2: ratio" in result.reason and "(within tolerance)" in result.reason
    assert "step 3" in result.reason and "(outside tolerance)" in result.reason
    assert result.reason.endswith("chosen: step 2: largest reduction within tolerance")

    accs = iter([0.99, 0.5])
    result = prune(model, cfg, SHAPE, K, evaluate=lambda m: next(accs), target_ratio=0.5)
    assert result.chosen_step == 0 and result.model is model


def test_unstructured_pruning_reports_measured_sparsity_and_keeps_masks_during_finetune():
    cfg, x = CONFIGS["cnn_gap"], batch()[0]
    model = make(cfg)

    def finetune(m):  # moves every weight; masked ones must stay zero
        with torch.no_grad():
            for p in m.parameters():
                p.add_(1.0)

    sparse, measured = prune_unstructured(model, 0.6, finetune)
    assert measured == pytest.approx(0.6, abs=0.005) and measured == measure_sparsity(sparse)
    assert measure_sparsity(model) == 0.0  # the input model is untouched
    assert sparse(x).shape == (6, K) and count_params(sparse) == count_params(model)
    assert all(not n.endswith(("_orig", "_mask")) for n in sparse.state_dict())


def _dataset(n: int = 48, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)

    def split(m: int) -> Split:
        y = rng.integers(0, K, m)
        x = rng.random((m, *SHAPE), dtype=np.float32) * 0.3
        x[np.arange(m), 0, y, :] += 0.7  # a learnable signal: class k brightens row k
        return Split(x=x, y=y.astype(np.int64), ids=np.array([f"s{i}" for i in range(m)]))

    manifest = {"num_classes": K, "shape": list(SHAPE), "data_hash": "d",
                "normalization": {"mean": 0.3, "std": 0.3}}
    return Dataset(train=split(n), val=split(24), test=split(24), manifest=manifest)


@pytest.fixture
def student(tmp_path):
    cfg = CONFIGS["dscnn"]
    save_checkpoint(tmp_path / "student", make(cfg), cfg, SHAPE, K, {"stage": "distill"})
    return tmp_path / "student"


def test_prune_stage_writes_a_reloadable_smaller_model_with_its_parent(student, tmp_path):
    data = _dataset()
    cfg = PruneConfig(criterion="taylor", target="macs", target_ratio=0.5, steps=2,
                      max_accuracy_drop=1.0, finetune_epochs=1, calibration_samples=32)
    finetune = make_finetune(data, cfg.finetune_epochs,
                             TrainingConfig(batch_size=16, device="cpu", shift=0))
    out, metrics_path = tmp_path / "pruned", tmp_path / "metrics" / "prune.json"
    metrics = prune_stage(cfg, student, data, finetune, out, metrics_path)

    assert read_json(metrics_path) == metrics
    assert metrics["macs_after"] <= 0.5 * metrics["macs_before"]
    assert metrics["params_after"] < metrics["params_before"]
    assert metrics["chosen_step"] == 2 and metrics["chosen_ratio"] == 0.5
    assert {"test_accuracy_before", "test_accuracy_after", "steps", "method"} <= set(metrics)
    meta = read_json(out / "metadata.json")
    assert meta["parent"]["sha256"] == sha256_file(student / "model.pt")
    assert meta["parent"]["path"].endswith("student/model.pt")
    assert [r["name"] for r in read_json(out / "layers.json")][0] == "body.features.0.0"
    reloaded = load_checkpoint(out)
    assert count_params(reloaded.model) == metrics["params_after"]


def test_prune_stage_unstructured_says_dense_runtimes_gain_nothing(student, tmp_path):
    cfg = PruneConfig(method="unstructured", sparsity=0.5, steps=1, max_accuracy_drop=1.0)
    metrics = prune_stage(cfg, student, _dataset(), None, tmp_path / "p", tmp_path / "m.json")
    assert metrics["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert metrics["sparsity_note"] == DENSE_NOTE and "no speed" in DENSE_NOTE
    assert metrics["params_after"] == metrics["params_before"]
    assert metrics["macs_after"] == metrics["macs_before"]


def test_parent_whose_weights_do_not_match_its_spec_is_refused(student, tmp_path):
    payload = torch.load(student / "model.pt", weights_only=True)
    payload["arch"]["channels"] = [12, 20]  # spec no longer matches the stored tensors
    torch.save(payload, student / "model.pt")
    with pytest.raises(ValueError, match="do not match the architecture spec"):
        load_checkpoint(student)
    with pytest.raises(ValueError, match="do not match the architecture spec"):
        prune_stage(PruneConfig(), student, _dataset(), None, tmp_path / "p", tmp_path / "m.json")
    assert not (tmp_path / "p").exists()
