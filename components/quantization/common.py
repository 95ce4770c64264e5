"""What every variant maker gets and gives back, and the measurements its decisions rest on.

A variant is kept only for what it measurably buys: its accuracy is compared with fp32 on the
same val samples (`components.core.stats.compare`), its latency with fp32's in interleaved rounds
(`components.core.timing`) at a device profile's threads and batch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.config import QuantizeConfig
from components.config.deployment import DeviceProfile
from components.core.data import Dataset, Split

CPU = "CPUExecutionProvider"


@dataclass
class VariantContext:
    """The exported fp32 graph and what a variant may need to make and check itself."""

    cfg: QuantizeConfig
    fp32: Path
    prepared: Dataset
    fp32_val_accuracy: float
    work: Path  # scratch folder, removed after the stage
    fp32_val_correct: np.ndarray | None = None  # (N_val,) bool, fp32's per-sample correctness
    profiles: dict[str, DeviceProfile] = field(default_factory=lambda: {"host": DeviceProfile()})
    primary: str = "host"  # the profile whose latency decides int8

    def preprocessed(self) -> Path:
        """fp32 with constants folded and shapes inferred, for the quantizers (made once)."""
        from onnxruntime.quantization import quant_pre_process

        pre = self.work / "fp32-pre.onnx"
        if not pre.exists():
            quant_pre_process(str(self.fp32), str(pre))
        return pre

    def reference_correct(self) -> np.ndarray:
        """fp32's val correctness, computed here when the stage did not pass it in."""
        if self.fp32_val_correct is None:
            self.fp32_val_correct = val_correct(self.fp32, self.prepared.val)
        return self.fp32_val_correct

    def cpu_profiles(self) -> dict[str, DeviceProfile]:
        """The profiles measured on the CPU provider (this stage times on the CPU only)."""
        cpu = {n: p for n, p in self.profiles.items() if p.providers[0] == CPU}
        return cpu or {self.primary: self.profiles[self.primary]}


@dataclass
class VariantResult:
    """``path`` is None when the variant was not written, ``dropped`` then says why;
    ``report`` joins the stage metrics."""

    path: Path | None
    report: dict[str, Any] = field(default_factory=dict)
    dropped: str | None = None


def val_correct(path: Path, split: Split) -> np.ndarray:
    """Per-sample correctness (N,) bool of the graph at ``path`` on ``split``."""
    from components.export.onnx_utils import make_session, run_session

    return run_session(make_session(path), split.x).argmax(1) == split.y


def timing_batch(split: Split, batch_size: int) -> np.ndarray:
    """``batch_size`` val images (repeated when the split is smaller), float32 (B, C, H, W)."""
    return np.ascontiguousarray(np.resize(split.x, (batch_size, *split.x.shape[1:])),
                                dtype=np.float32)


def measure(paths: dict[str, Path], profile: DeviceProfile, x: np.ndarray, rounds: int = 3,
            runs: int = 50) -> dict[str, dict[str, Any]]:
    """Interleaved latency of each graph on batch ``x`` at the profile's intra-op threads.

    Returns `timing.interleaved`'s ``{name: {p50_ms, p95_ms, spread_ms, rounds_p50_ms}}``.
    Tests replace this function to decide on a constructed timing table.
    """
    from components.core.timing import interleaved
    from components.export.onnx_utils import INPUT_NAME, make_session

    sessions = {n: make_session(p, threads=profile.threads) for n, p in paths.items()}
    calls = {n: (lambda s=s: s.run(None, {INPUT_NAME: x})) for n, s in sessions.items()}
    return interleaved(calls, rounds=rounds, runs=runs)


def timing_note(timing: dict[str, Any], fp32: dict[str, Any]) -> str:
    """``p50 x vs y ms (spreads a, b)``: a candidate's median latency beside fp32's."""
    return (f"p50 {timing['p50_ms']:.4f} vs {fp32['p50_ms']:.4f} ms "
            f"(spreads {timing['spread_ms']:.4f}, {fp32['spread_ms']:.4f})")


def speed_note(name: str, timing: dict[str, Any], fp32: dict[str, Any], profile: str) -> str:
    """Why ``name`` is no faster than fp32 on ``profile``, with both medians and spreads."""
    verdict = ("slower than" if timing["p50_ms"] >= fp32["p50_ms"]
               else "not faster (beyond the timing spread) than")
    return f"{name} {verdict} fp32 on {profile}: {timing_note(timing, fp32)}"
