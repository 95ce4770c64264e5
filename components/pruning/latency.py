"""Latency of a pruned model against the unpruned one, measured on the target runtime.

Both are exported to ONNX (`export_onnx`) and timed in ONNX Runtime sessions at the profile's
thread count and batch size, in interleaved rounds (`timing.interleaved`), so a load spike on
a shared machine hits both alike. Measurement is kept cheap (3 rounds of 30 calls): pruning
measures every step and, for the `latency` target, every size its search tries.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from components.config import DeviceProfile
from components.core.timing import faster, interleaved

ROUNDS, RUNS, WARMUP = 3, 30, 3
CPU = "CPUExecutionProvider"


def _session(model: nn.Module, in_shape: tuple[int, int, int], threads: int) -> Any:
    from components.export.onnx_utils import export_onnx, make_session

    with tempfile.TemporaryDirectory(prefix="prune-latency-") as tmp:
        path = export_onnx(model, in_shape, Path(tmp) / "model.onnx")
        return make_session(path.read_bytes(), threads=threads)


class LatencyProbe:
    """Times models against ``reference`` (the unpruned model) on one device profile.

    ``probe(model)`` -> ``p50_ms``, ``spread_ms``, ``unpruned_p50_ms``, ``unpruned_spread_ms``,
    ``faster`` (than the unpruned, by more than both spreads) and ``slower``.
    """

    def __init__(self, reference: nn.Module, in_shape: tuple[int, int, int],
                 profile: DeviceProfile | None = None, profile_name: str = "default",
                 rounds: int = ROUNDS, runs: int = RUNS, warmup: int = WARMUP):
        self.profile = profile or DeviceProfile()
        self.name, self.in_shape = profile_name, tuple(in_shape)
        self.rounds, self.runs, self.warmup = rounds, runs, warmup
        rng = np.random.default_rng(0)
        self.x = rng.random((self.profile.batch_size, *self.in_shape), dtype=np.float32)
        self._reference = self._call(reference)

    def _call(self, model: nn.Module):
        was_training = model.training
        session = _session(model, self.in_shape, self.profile.threads)
        model.train(was_training)
        feed = {session.get_inputs()[0].name: self.x}
        return lambda: session.run(None, feed)

    def __call__(self, model: nn.Module) -> dict[str, Any]:
        t = interleaved({"unpruned": self._reference, "candidate": self._call(model)},
                        rounds=self.rounds, runs=self.runs, warmup=self.warmup)
        cand, ref = t["candidate"], t["unpruned"]
        return {"p50_ms": cand["p50_ms"], "spread_ms": cand["spread_ms"],
                "unpruned_p50_ms": ref["p50_ms"], "unpruned_spread_ms": ref["spread_ms"],
                "faster": faster(cand, ref), "slower": faster(ref, cand)}

    def describe(self) -> dict[str, Any]:
        """Where and how latency was measured, for the metrics."""
        measured_on = self.profile.providers[0]
        return {"profile": self.name, "threads": self.profile.threads,
                "batch_size": self.profile.batch_size, "rounds": self.rounds, "runs": self.runs,
                "provider": CPU,
                "note": "" if measured_on == CPU else
                f"the profile's provider {measured_on} is not measured here: CPU stands in"}
