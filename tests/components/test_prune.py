"""The `prune` stage: a reloadable smaller model beside its parent's hash, and its refusals.

The pruning steps themselves are tested in `tests/components/pruning/`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from components.config import DeviceProfile, PruneConfig, TrainingConfig, load_params, parse_params
from components.core.data import Dataset, Split
from components.core.io import atomic_write_json, read_json, sha256_file
from components.modeling.architectures import count_params
from components.modeling.checkpoint import load_checkpoint, save_checkpoint
from components.prune import DENSE_NOTE, channel_block, make_finetune, prune_stage
from tests.helpers_pruning import (
    CONFIGS,
    SHAPE,
    K,
    make,
    one_thread,  # noqa: F401 - an autouse fixture
)

REPO = Path(__file__).resolve().parents[2]


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
                      max_accuracy_drop=1.0, finetune_epochs=1, calibration_samples=32, seeds=2)
    finetune = make_finetune(data, cfg.finetune_epochs,
                             TrainingConfig(batch_size=16, device="cpu", shift=0))
    out, metrics_path = tmp_path / "pruned", tmp_path / "metrics" / "prune.json"
    profile = DeviceProfile(threads=1, batch_size=2)
    metrics = prune_stage(cfg, student, data, finetune, out, metrics_path, profile=profile,
                          profile_name="edge", round_to=4)

    assert read_json(metrics_path) == metrics
    steps = metrics["steps"]
    assert steps[1]["macs"] <= 0.5 * metrics["macs_before"]
    assert metrics["params_after"] < metrics["params_before"]
    # every step passes a 100-point margin: the kept one is not slower than the unpruned
    # model, and no larger reduction was measurably faster
    chosen = steps[metrics["chosen_step"] - 1]
    assert metrics["chosen_step"] >= 1 and chosen["qualifies"] and not chosen["slower"]
    assert not any(s["faster"] for s in steps
                   if s["achieved_reduction"] > chosen["achieved_reduction"])
    assert metrics["macs_after"] == chosen["macs"] and metrics["val_drop"] == chosen["val_drop"]
    assert metrics["chosen_ratio"] == chosen["target_reduction"]
    assert metrics["chosen_reason"] and metrics["reason"].endswith(metrics["chosen_reason"])
    for step in steps:
        assert step["passes"] and step["decidable"] and step["val_drop"]["upper"] <= 1.0
        assert step["test"]["n"] == 24 and step["test"]["ci_low"] <= step["test"]["accuracy"]
        assert step["seeds"]["val_accuracy"]["n"] == 2 == step["seeds"]["test_accuracy"]["n"]
        assert step["p50_ms"] > 0 and step["unpruned_p50_ms"] > 0 and step["spread_ms"] >= 0
    assert metrics["latency"]["profile"] == "edge" and metrics["latency"]["batch_size"] == 2
    assert metrics["test_after"]["n"] == 24 and metrics["val_before"]["n"] == 24
    assert metrics["round_to"] == 4
    assert {"test_accuracy_before", "test_accuracy_after", "steps", "method"} <= set(metrics)
    meta = read_json(out / "metadata.json")
    assert meta["parent"]["sha256"] == sha256_file(student / "model.pt")
    assert meta["parent"]["path"].endswith("student/model.pt")
    layers = read_json(out / "layers.json")
    assert [r["name"] for r in layers][0] == "body.features.0.0"
    reloaded = load_checkpoint(out)
    assert count_params(reloaded.model) == metrics["params_after"]
    widths = [reloaded.arch.stem, *reloaded.arch.channels]
    assert all(w % 4 == 0 for w in widths), widths


def test_channel_block_is_the_primary_profiles_unless_round_to_is_set():
    raw = {**load_params(REPO / "params.yaml").model_dump(by_alias=True)}
    raw["evaluate"]["profiles"][raw["register"]["policy"]["primary_profile"]][
        "channel_multiple"] = 8
    assert channel_block(parse_params(raw)) == 8
    raw["prune"]["round_to"] = 4
    assert channel_block(parse_params(raw)) == 4


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
    meta = read_json(student / "metadata.json")  # a consistent hash: this test is about the spec
    meta["sha256"] = sha256_file(student / "model.pt")
    atomic_write_json(student / "metadata.json", meta)
    with pytest.raises(ValueError, match="do not match the architecture spec"):
        load_checkpoint(student)
    with pytest.raises(ValueError, match="do not match the architecture spec"):
        prune_stage(PruneConfig(), student, _dataset(), None, tmp_path / "p", tmp_path / "m.json")
    assert not (tmp_path / "p").exists()
