"""`components.pruning.latency`: every step is timed on ONNX Runtime against the unpruned model."""

from __future__ import annotations

import numpy as np
import pytest

from components.config import DeviceProfile
from components.pruning.latency import LatencyProbe
from components.pruning.macs import count_macs
from components.pruning.search import prune
from tests.helpers_pruning import CONFIGS, SHAPE, K, make


def test_every_step_records_its_p50_and_the_unpruned_models_on_the_profile():
    cfg = CONFIGS["cnn_gap"]
    model = make(cfg)
    probe = LatencyProbe(model, SHAPE, DeviceProfile(threads=1, batch_size=4), "edge", runs=10)
    result = prune(model, cfg, SHAPE, K, evaluate=lambda m: np.ones(8, bool), target="params",
                   target_ratio=0.5, steps=2, max_accuracy_drop=1.0, latency=probe)
    assert probe.x.shape == (4, *SHAPE) and model.training is False
    for rec in result.steps:
        assert rec.p50_ms > 0 and rec.unpruned_p50_ms > 0
        assert rec.spread_ms >= 0 and rec.unpruned_spread_ms >= 0
        assert isinstance(rec.faster, bool) and isinstance(rec.slower, bool)
        assert not (rec.faster and rec.slower) and "ms vs unpruned" in rec.note
    assert probe.describe() | {"note": ""} == {
        "profile": "edge", "threads": 1, "batch_size": 4, "rounds": 3, "runs": 10,
        "provider": "CPUExecutionProvider", "note": ""}


class MacsClock:
    """A noiseless stand-in probe: latency proportional to MACs."""

    def __init__(self, reference):
        self.ref = count_macs(reference, SHAPE) / 1000

    def __call__(self, model):
        p50 = count_macs(model, SHAPE) / 1000
        return {"p50_ms": p50, "spread_ms": 0.0, "unpruned_p50_ms": self.ref,
                "unpruned_spread_ms": 0.0, "faster": p50 < self.ref, "slower": p50 > self.ref}


def test_latency_target_reaches_the_requested_share_of_measured_time():
    cfg = CONFIGS["dscnn"]
    model = make(cfg)
    result = prune(model, cfg, SHAPE, K, evaluate=lambda m: np.ones(8, bool), target="latency",
                   target_ratio=0.4, steps=2, max_accuracy_drop=1.0, latency=MacsClock(model))
    by_macs = prune(model, cfg, SHAPE, K, evaluate=lambda m: np.ones(8, bool), target="macs",
                    target_ratio=0.4, steps=2, max_accuracy_drop=1.0)
    assert result.chosen_step == 2 and result.chosen.achieved_reduction >= 0.4
    assert [r.macs for r in result.steps] == [r.macs for r in by_macs.steps]
    assert "measurably faster" in result.chosen_reason
    with pytest.raises(ValueError, match="latency probe"):
        prune(model, cfg, SHAPE, K, evaluate=lambda m: np.ones(8, bool), target="latency")
