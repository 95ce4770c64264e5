"""`evaluate`: measure every candidate ONNX model on every device profile, pick one per profile.

A device profile (execution providers, threads, batch size, budgets) stands for a deployment
target. Each (candidate, profile) measurement runs in a fresh process
(`components.evaluation.profiles`), one after the other so they never compete for cores, and
its peak RSS is that process's own;
a baseline process per profile (onnxruntime + data, no model) tells the model's share apart.
A profile whose providers this onnxruntime lacks is reported under ``skipped`` with the reason.
Per profile the selected candidate meets every budget with the best validation accuracy, ties
going to the lower p50 latency: decisions use the val split, the test accuracy is only reported
(choosing on test would make the reported figure optimistic). Writes the metrics JSON,
``<out_dir>/evaluate.md`` and per profile ``<out_dir>/plots/<profile>-latency.png`` and
``<profile>-size.png``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from components.config import DeviceProfile, EvaluateConfig, Params
from components.core.io import atomic_dir, atomic_write_json, atomic_write_text
from components.core.stage import StageIO, StageResult
from components.evaluation.report import render_report, write_plots
from components.evaluation.selection import check_budgets, select_candidate

REPO = Path(__file__).resolve().parents[1]
RESERVED = ("selected", "skipped", "baseline_rss_mb", "profiles")  # top-level keys, not candidates
MEASURED = ("accuracy", "val_accuracy", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99",
            "throughput_per_s", "size_bytes", "peak_rss_mb")


def skip_reason(profile: DeviceProfile, available: list[str]) -> str | None:
    missing = [p for p in profile.providers if p not in available]
    if missing:
        return (f"{', '.join(missing)} not in onnxruntime.get_available_providers() "
                f"({', '.join(available)})")
    return None


def run_measurement(model: Path | None, test_npz: Path, profile: DeviceProfile,
                    cfg: EvaluateConfig, val_npz: Path | None = None) -> dict[str, Any]:
    """One `components.evaluation.profiles` process; its JSON result, or ``{"error": ...}``."""
    cmd = [sys.executable, "-m", "components.evaluation.profiles", "--test", str(test_npz),
           "--providers", ",".join(profile.providers), "--threads", str(profile.threads),
           "--batch-size", str(profile.batch_size),
           "--warmup", str(cfg.warmup if profile.warmup is None else profile.warmup),
           "--runs", str(profile.runs or cfg.runs)]
    if model is not None:
        cmd += ["--model", str(model)]
    if val_npz is not None:
        cmd += ["--val", str(val_npz)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=cfg.timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {cfg.timeout_s:g} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"error": tail[0][:500]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def find_candidates(bundles_dir: Path) -> dict[str, Path]:
    """Bundle name -> its ``model.onnx``, for every bundle folder under ``bundles_dir``."""
    return {p.parent.name: p for p in sorted(Path(bundles_dir).glob("*/model.onnx"))}


def evaluate_stage(cfg: EvaluateConfig, candidates: dict[str, Path], prepared_dir: Path,
                   out_dir: Path, metrics_path: Path) -> dict[str, Any]:
    """Measure every candidate on every profile; write metrics, report and plots; return metrics.

    Metrics: ``{candidate: {profile: {accuracy, latency_ms_p50/p95/p99, throughput_per_s,
    size_bytes, peak_rss_mb, model_rss_mb, meets_budget, failed_budgets}}, "selected":
    {profile: name | None}, "skipped": {profile: reason}, "baseline_rss_mb": {profile: MiB}}``.
    """
    import onnxruntime as ort

    if not candidates:
        raise ValueError("evaluate: no candidate models")
    clash = sorted(set(candidates) & set(RESERVED))
    if clash:
        raise ValueError(f"evaluate: candidate names {clash} are reserved metrics keys")
    missing = [str(p) for p in candidates.values() if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"evaluate: candidate models not found: {missing}")
    test_npz = Path(prepared_dir) / "test.npz"
    if not test_npz.is_file():
        raise FileNotFoundError(f"{test_npz}: prepared test split not found (run `ingest`)")
    val_npz = Path(prepared_dir) / "val.npz"
    val_npz = val_npz if val_npz.is_file() else None
    available = list(ort.get_available_providers())
    metrics: dict[str, Any] = {name: {} for name in candidates}
    metrics.update(selected={}, skipped={}, baseline_rss_mb={})
    for pname, profile in cfg.profiles.items():
        reason = skip_reason(profile, available)
        if reason:
            metrics["skipped"][pname] = reason
            metrics["selected"][pname] = None
            continue
        base = run_measurement(None, test_npz, profile, cfg)
        baseline = base.get("peak_rss_mb")
        metrics["baseline_rss_mb"][pname] = baseline
        for name, path in candidates.items():
            m = run_measurement(Path(path), test_npz, profile, cfg, val_npz)
            m["size_bytes"] = Path(path).stat().st_size
            for key in MEASURED:
                m.setdefault(key, None)
            m["model_rss_mb"] = (m["peak_rss_mb"] - baseline
                                 if m["peak_rss_mb"] is not None and baseline else None)
            m["failed_budgets"] = check_budgets(m, profile.budgets)
            m["meets_budget"] = not m["failed_budgets"]
            metrics[name][pname] = m
        metrics["selected"][pname] = select_candidate(
            {n: metrics[n][pname] for n in candidates})
    with atomic_dir(out_dir) as tmp:
        atomic_write_text(tmp / "evaluate.md", render_report(metrics, cfg, list(candidates)))
        write_plots(metrics, cfg, list(candidates), tmp / "plots")
    atomic_write_json(metrics_path, metrics)
    return metrics


def run(cfg: Params, io: StageIO) -> StageResult:
    """The `evaluate` stage: every bundle on every device profile, one pick per profile."""
    report = io.out("evaluate_report")
    metrics = evaluate_stage(cfg.evaluate, find_candidates(io.dep("bundles")), io.dep("prepared"),
                             report.parent, io.metrics)
    return StageResult(metrics=metrics, params=cfg.evaluate.model_dump(), artifacts=[report.parent],
                       tags={f"selected.{p}": str(n) for p, n in metrics["selected"].items()})
