"""Profile one ONNX model on one device profile, in a process of its own.

`evaluate` starts ``python -m components.evaluation.profiles --serve --model M --test test.npz
...`` once per (candidate, profile): the process loads the model, measures accuracy, prints a
``ready`` line and then times one round per ``round`` line it reads on stdin, so the parent can
interleave the rounds of all candidates (`components.evaluation.rounds`); ``stop`` ends it with
its peak resident set size, which belongs to that one measurement. Without ``--serve`` it times
its rounds back to back and prints one result (tests, the registry helpers). The same command
without ``--model`` is the baseline: an identical process that imports onnxruntime and loads the
data but builds no session, so ``peak - baseline`` is the model's own memory (`peak_rss_mb`).
A bundle's graph takes 8-bit pixels (uint8 (N, H, W, C), `components.export.preprocessing`):
the prepared floats are then rounded to the pixels the bundle's ``metadata.json`` scale gives
(`bundle_predict.nchw_to_pixels`), so the artefact is measured as shipped, preprocessing nodes
included, on what a camera or PNG would hand it.
This module imports only numpy, onnxruntime and the standard library (`timing` is stdlib only,
`bundle_predict` numpy only):
importing `components.config` would pull in pydantic, and torch would swamp both the RSS and
the start-up time being measured. Every reply is one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import resource
import sys
from pathlib import Path
from typing import Any

import numpy as np

from components.core.timing import time_calls
from components.export.bundle_predict import nchw_to_pixels

# the bundle's `runtime.<profile>.graph_optimization_level` -> onnxruntime's enum member
OPT_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
              "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
APPLIED = ("intra_op_num_threads", "inter_op_num_threads", "graph_optimization_level",
           "allow_spinning", "session_config")


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
    x, y, _ = load_samples(path)
    return x, y


def load_samples(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``x`` (N, C, H, W) float32, ``y`` (N,) int64 and the sample ``ids`` when stored."""
    with np.load(path, allow_pickle=False) as z:
        ids = z["ids"].astype(str) if "ids" in z.files else None
        return z["x"].astype(np.float32, copy=False), z["y"].astype(np.int64), ids


def samples_digest(y: np.ndarray, ids: np.ndarray | None) -> str:
    """Which samples, in which order, with which labels: equal digests make a paired test."""
    h = hashlib.sha256(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    if ids is not None:
        h.update("\n".join(ids.tolist()).encode())
    return h.hexdigest()[:16]


def pack_correct(correct: np.ndarray, digest: str) -> dict[str, Any]:
    """Per-sample correctness, compact: ``{samples, n, bits}`` (base64 of packed bits)."""
    bits = np.packbits(np.asarray(correct, dtype=bool))
    return {"samples": digest, "n": int(len(correct)),
            "bits": base64.b64encode(bits.tobytes()).decode("ascii")}


def make_session(model: Path, providers: list[str], threads: int,
                 options: dict[str, Any] | None = None) -> Any:
    """A session on exactly ``providers`` (no silent fallback to another provider).

    ``options``: the bundle's runtime entry for the profile (`APPLIED` keys); absent keys keep
    today's defaults (``threads``, one inter-op thread, every graph optimisation).
    """
    import onnxruntime as ort

    options = options or {}
    so = ort.SessionOptions()
    # 0: onnxruntime's default, one per physical core
    so.intra_op_num_threads = int(options.get("intra_op_num_threads", threads))
    so.inter_op_num_threads = int(options.get("inter_op_num_threads", 1))
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = options.get("graph_optimization_level", "all")
    if level not in OPT_LEVELS:
        raise ValueError(f"graph_optimization_level {level!r} is not one of {sorted(OPT_LEVELS)}")
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[level])
    if "allow_spinning" in options:
        so.add_session_config_entry("session.intra_op.allow_spinning",
                                    "1" if options["allow_spinning"] else "0")
    for key, value in (options.get("session_config") or {}).items():
        so.add_session_config_entry(str(key), str(value))
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


def shipped_input(session: Any, model: Path, x: np.ndarray, where: Path) -> np.ndarray:
    """``x`` (prepared floats, N, C, H, W) as the graph takes it: unchanged for a float input,
    uint8 (N, H, W, C) pixels at the scale of ``model``'s ``metadata.json`` for a bundle."""
    if session.get_inputs()[0].type != "tensor(uint8)":
        return x
    meta = Path(model).parent / "metadata.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{model}: takes uint8 pixels but {meta} (the input scale) "
                                "is missing")
    scale = json.loads(meta.read_text(encoding="utf-8"))["input"]["scale"]
    return nchw_to_pixels(x, float(scale), str(where))


def predict_labels(session: Any, x: np.ndarray) -> np.ndarray:
    """Top-1 labels of ``x`` through ``session`` (padded batches when its batch is fixed)."""
    name = session.get_inputs()[0].name
    fixed = fixed_batch(session)
    logits = np.concatenate([session.run(None, {name: b})[0]
                             for b in batches(x, fixed or 256, pad=bool(fixed))])
    return logits[: len(x)].argmax(1)


def prepare(model: Path, test: Path, providers: list[str], threads: int, batch_size: int,
            val: Path | None = None, options: dict[str, Any] | None = None,
            ) -> tuple[Any, dict[str, Any]]:
    """The session, its timed call and the accuracy part of a measurement.

    Per split: the accuracy, the per-sample correctness packed (`pack_correct`) and the
    predicted labels (``*_predictions``, which `evaluate` keeps out of the metrics file).
    """
    x, y, ids = load_samples(test)
    reps = -(-batch_size // len(x))  # the timed batch: the first `batch_size` test images
    timed = np.ascontiguousarray(np.concatenate([x] * reps)[:batch_size])
    session = make_session(model, providers, threads, options)
    x = shipped_input(session, model, x, test)
    timed = shipped_input(session, model, timed, test)
    fixed = fixed_batch(session)
    if fixed:
        timed = batches(timed, fixed, pad=True)[0]
    feed = {session.get_inputs()[0].name: timed}
    pred = predict_labels(session, x)
    out: dict[str, Any] = {"accuracy": float((pred == y).mean()), "val_accuracy": None,
                           "test_correct": pack_correct(pred == y, samples_digest(y, ids)),
                           "test_predictions": pred.tolist()}
    if val is not None:
        xv, yv, idv = load_samples(val)
        pv = predict_labels(session, shipped_input(session, model, xv, val))
        out.update(val_accuracy=float((pv == yv).mean()),
                   val_correct=pack_correct(pv == yv, samples_digest(yv, idv)),
                   val_predictions=pv.tolist())
    out.update(batch_size=int(len(timed)), provider=session.get_providers()[0],
               input_dtype=str(timed.dtype),
               session_options={"intra_op_num_threads": int((options or {}).get(
                   "intra_op_num_threads", threads)), **{k: v for k, v in (options or {}).items()
                                                         if k in APPLIED}},
               ignored_options=sorted(set(options or {}) - set(APPLIED)))
    return (lambda: session.run(None, feed)), out


def summarize_rounds(rounds: list[list[float]], batch: int) -> dict[str, Any]:
    """Latency figures of one candidate from its rounds (each a list of call times, ms).

    ``latency_ms_p50``: the median of the rounds' p50s; ``latency_spread_ms``: their range
    (as `timing.interleaved`); p95/p99 over every timed call, ``latency_p95_spread_ms`` the
    range of the rounds' p95s (what a p95 budget is judged with).
    """
    p50s = [float(np.median(r)) for r in rounds]
    p95s = [float(np.percentile(r, 95)) for r in rounds]
    pooled = np.concatenate([np.asarray(r, dtype=np.float64) for r in rounds])
    p95, p99 = np.percentile(pooled, [95, 99])
    return {"latency_ms_p50": float(np.median(p50s)), "latency_ms_p95": float(p95),
            "latency_ms_p99": float(p99), "latency_spread_ms": max(p50s) - min(p50s),
            "latency_p95_spread_ms": max(p95s) - min(p95s), "latency_rounds_p50_ms": p50s,
            "rounds": len(rounds),
            "throughput_per_s": float(batch * len(pooled) / (pooled.sum() / 1e3))}


def runs_per_round(runs: int, rounds: int) -> int:
    """The ``runs`` timed calls of a measurement, split over its rounds."""
    return max(1, math.ceil(runs / rounds))


def warmup_of_round(warmup: int, r: int, rounds: int) -> int:
    """Untimed calls before round ``r``: all of ``warmup`` before the first (a new session
    allocates on its first runs); a share of it later, only to bring the caches back."""
    return warmup if r == 0 else min(warmup, max(3, warmup // rounds))


def measure(model: Path | None, test: Path, providers: list[str], threads: int,
            batch_size: int, warmup: int, runs: int, val: Path | None = None,
            rounds: int = 3, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Accuracy on ``test`` (and ``val``), latency percentiles and throughput at ``batch_size``,
    peak RSS, in this process; the rounds run back to back (one candidate: nothing to
    interleave). Decisions use the val accuracy; the test accuracy is the figure reported.

    Latency is the wall time of one ``session.run`` on a batch of ``batch_size`` test images,
    ``runs`` calls in all over ``rounds`` rounds, each after ``warmup`` untimed ones. Without
    ``model``: the baseline (RSS only).
    """
    import onnxruntime  # noqa: F401 - the baseline pays for the import like a measurement does

    if model is None:
        load_samples(test)
        return {"peak_rss_mb": peak_rss_mb()}
    call, out = prepare(model, test, providers, threads, batch_size, val, options)
    per_round = runs_per_round(runs, rounds)
    times = [time_calls(call, per_round, warmup_of_round(warmup, r, rounds))
             for r in range(rounds)]
    return {**out, **summarize_rounds(times, out["batch_size"]), "peak_rss_mb": peak_rss_mb()}


def serve(a: argparse.Namespace) -> None:
    """Answer ``round`` (time one round) and ``stop`` lines on stdin, one JSON line each."""
    import onnxruntime  # noqa: F401

    if a.model is None:
        load_samples(a.test)
        _reply({"ready": True, "peak_rss_mb": peak_rss_mb()})
        return
    call, out = prepare(a.model, a.test, a.providers.split(","), a.threads, a.batch_size,
                        a.val, json.loads(a.options) if a.options else None)
    _reply({"ready": True, **out})
    per_round, done = runs_per_round(a.runs, a.rounds), 0
    for line in sys.stdin:
        command = line.strip()
        if command == "round":
            warmup = warmup_of_round(a.warmup, done, a.rounds)
            _reply({"times": time_calls(call, per_round, warmup)})
            done += 1
        elif command == "stop":
            _reply({"peak_rss_mb": peak_rss_mb()})
            return


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="ONNX file; omit for the baseline.")
    p.add_argument("--test", type=Path, required=True, help="Prepared test.npz (x, y).")
    p.add_argument("--val", type=Path, default=None, help="Prepared val.npz (x, y), optional.")
    p.add_argument("--providers", default="CPUExecutionProvider", help="Comma-separated.")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--warmup", type=int, default=20,
                   help="Untimed calls before the first round (`warmup_of_round`).")
    p.add_argument("--runs", type=int, default=200, help="Timed calls in all, over the rounds.")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--options", default=None, help="Session options (JSON), the bundle's "
                   "runtime entry for the profile.")
    p.add_argument("--serve", action="store_true", help="Time a round per `round` on stdin.")
    a = p.parse_args(argv)
    if a.serve:
        serve(a)
        return
    result = measure(a.model, a.test, a.providers.split(","), a.threads, a.batch_size,
                     a.warmup, a.runs, a.val, a.rounds,
                     json.loads(a.options) if a.options else None)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
