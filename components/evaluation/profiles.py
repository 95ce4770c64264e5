"""Profile one ONNX model on one device profile, in a process of its own.

`evaluate` runs ``python -m components.evaluation.profiles --model M --test test.npz ...`` once per
(candidate, profile), so the peak resident set size of each process belongs to that one
measurement. The same command without ``--model`` is the baseline: an identical process that
imports onnxruntime and loads the data but builds no session, so ``peak - baseline`` is the
model's own memory (how the peak is read: `peak_rss_mb`). This module imports only numpy,
onnxruntime and the standard library: importing `components.config` would pull in torch
(~230 MB, ~3 s), which would swamp both the RSS and the start-up time being measured.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB.

    On Linux ``VmHWM`` of /proc/self/status: ``ru_maxrss`` survives ``execve`` and so starts
    at the parent's RSS when it forked (the stage process, with torch loaded: ~280 MiB), which
    would hide the model's own cost. Elsewhere ``ru_maxrss`` (bytes on macOS, KiB otherwise).
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def load_test(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return z["x"].astype(np.float32, copy=False), z["y"].astype(np.int64)


def make_session(model: Path, providers: list[str], threads: int) -> Any:
    """A session on exactly ``providers`` (no silent fallback to another provider)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads  # 0: onnxruntime's default, one per physical core
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    session = ort.InferenceSession(str(model), sess_options=so, providers=providers)
    if session.get_providers()[0] != providers[0]:
        raise RuntimeError(f"onnxruntime placed the model on {session.get_providers()}, "
                           f"not on {providers[0]}")
    return session


def fixed_batch(session: Any) -> int | None:
    """The input's batch size when the graph fixes it (e.g. 1), else None."""
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None


def batches(x: np.ndarray, size: int, pad: bool) -> list[np.ndarray]:
    """``x`` in chunks of ``size``; with ``pad`` the last chunk repeats rows to be full."""
    out = []
    for i in range(0, len(x), size):
        chunk = x[i : i + size]
        if pad and len(chunk) < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
        out.append(np.ascontiguousarray(chunk))
    return out


def predict_labels(session: Any, x: np.ndarray) -> np.ndarray:
    """Top-1 labels of ``x`` through ``session`` (padded batches when its batch is fixed)."""
    name = session.get_inputs()[0].name
    fixed = fixed_batch(session)
    logits = np.concatenate([session.run(None, {name: b})[0]
                             for b in batches(x, fixed or 256, pad=bool(fixed))])
    return logits[: len(x)].argmax(1)


def measure(model: Path | None, test: Path, providers: list[str], threads: int,
            batch_size: int, warmup: int, runs: int, val: Path | None = None) -> dict[str, Any]:
    """Accuracy on ``test`` (and ``val``), latency percentiles and throughput at ``batch_size``,
    peak RSS. Decisions use the val accuracy; the test accuracy is the figure reported.

    Latency is the wall time of one ``session.run`` on a batch of ``batch_size`` test images,
    over ``runs`` calls after ``warmup`` untimed ones. Without ``model``: the baseline (RSS only).
    """
    import onnxruntime  # noqa: F401 - the baseline pays for the import like a measurement does

    x, y = load_test(test)
    reps = -(-batch_size // len(x))  # the timed batch: the first `batch_size` test images
    timed = np.ascontiguousarray(np.concatenate([x] * reps)[:batch_size])
    if model is None:
        return {"peak_rss_mb": peak_rss_mb()}
    session = make_session(model, providers, threads)
    name = session.get_inputs()[0].name
    fixed = fixed_batch(session)
    accuracy = float((predict_labels(session, x) == y).mean())
    val_accuracy = None
    if val is not None:
        xv, yv = load_test(val)
        val_accuracy = float((predict_labels(session, xv) == yv).mean())
    if fixed:
        timed = batches(timed, fixed, pad=True)[0]
    feed = {name: timed}
    for _ in range(warmup):
        session.run(None, feed)
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter_ns()
        session.run(None, feed)
        times[i] = (time.perf_counter_ns() - start) / 1e6  # ms
    p50, p95, p99 = np.percentile(times, [50, 95, 99])
    return {
        "accuracy": accuracy,
        "val_accuracy": val_accuracy,
        "latency_ms_p50": float(p50),
        "latency_ms_p95": float(p95),
        "latency_ms_p99": float(p99),
        "throughput_per_s": float(len(timed) * runs / (times.sum() / 1e3)),
        "batch_size": int(len(timed)),
        "provider": session.get_providers()[0],
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="ONNX file; omit for the baseline.")
    p.add_argument("--test", type=Path, required=True, help="Prepared test.npz (x, y).")
    p.add_argument("--val", type=Path, default=None, help="Prepared val.npz (x, y), optional.")
    p.add_argument("--providers", default="CPUExecutionProvider", help="Comma-separated.")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--runs", type=int, default=200)
    a = p.parse_args(argv)
    result = measure(a.model, a.test, a.providers.split(","), a.threads, a.batch_size,
                     a.warmup, a.runs, a.val)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
