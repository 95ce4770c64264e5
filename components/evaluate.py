"""`evaluate`: measure every candidate ONNX model on every device profile, pick one per profile.

A device profile (execution providers, threads, batch size, budgets) stands for a deployment
target. Each (candidate, profile) measurement runs in a fresh process (`components.profiles`),
one after the other so they never compete for cores, and its peak RSS is that process's own;
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

from pydantic import Field, model_validator

from components.base_config import Section
from components.io import atomic_dir, atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
RESERVED = ("selected", "skipped", "baseline_rss_mb", "profiles")  # top-level keys, not candidates
MEASURED = ("accuracy", "val_accuracy", "latency_ms_p50", "latency_ms_p95", "latency_ms_p99",
            "throughput_per_s", "size_bytes", "peak_rss_mb")


class Budgets(Section):
    """Limits a candidate must meet on a profile; a budget left out is not checked."""

    max_latency_ms_p95: float | None = Field(default=None, gt=0, description="p95 latency, ms.")
    max_size_bytes: int | None = Field(default=None, gt=0, description="ONNX file size.")
    max_peak_rss_mb: float | None = Field(
        default=None, gt=0, description="Peak RSS of the whole measuring process, MiB."
    )
    min_accuracy: float | None = Field(
        default=None, ge=0, le=1,
        description="Validation accuracy (test accuracy when no val split was measured).")


class DeviceProfile(Section):
    providers: list[str] = Field(
        default=["CPUExecutionProvider"], min_length=1,
        description="onnxruntime execution providers, first = the one measured.",
    )
    threads: int = Field(default=1, ge=0, description="intra-op threads; 0 = all cores.")
    batch_size: int = Field(default=1, gt=0, description="Batch of every timed call.")
    warmup: int | None = Field(default=None, ge=0, description="Untimed calls; default: global.")
    runs: int | None = Field(default=None, gt=0, description="Timed calls; default: global.")
    budgets: Budgets = Budgets()


def _default_profiles() -> dict[str, DeviceProfile]:
    return {
        # One core, one image at a time: a small ARM board or a phone's little core. 200 kB
        # fits MCU-class flash and is ~4x below the smallest fp32 teacher; 1 ms p95 leaves room
        # for jitter on a shared CPU; 256 MiB is half of a 512 MiB board (python + numpy +
        # onnxruntime alone take ~50 MiB); 0.97 is the digits accuracy the product needs.
        "edge-1core": DeviceProfile(
            threads=1, batch_size=1,
            budgets=Budgets(max_latency_ms_p95=1.0, max_size_bytes=200_000,
                            max_peak_rss_mb=256, min_accuracy=0.97)),
        # Batch scoring on every core: 20 ms per batch of 64 is >= 3200 images/s.
        "server-cpu": DeviceProfile(
            threads=0, batch_size=64,
            budgets=Budgets(max_latency_ms_p95=20.0, min_accuracy=0.97)),
        "gpu": DeviceProfile(
            providers=["CUDAExecutionProvider"], threads=0, batch_size=256,
            budgets=Budgets(max_latency_ms_p95=5.0, min_accuracy=0.97)),
    }


class EvaluateConfig(Section):
    profiles: dict[str, DeviceProfile] = Field(
        default_factory=_default_profiles, description="Profile name -> device profile."
    )
    warmup: int = Field(default=20, ge=0, description="Default untimed calls per measurement.")
    runs: int = Field(default=200, gt=0, description="Default timed calls per measurement.")
    timeout_s: float = Field(default=300, gt=0, description="Limit of one measuring process.")

    @model_validator(mode="after")
    def _some_profile(self) -> EvaluateConfig:
        if not self.profiles:
            raise ValueError("at least one profile is required under `profiles`")
        return self


def check_budgets(measurement: dict[str, Any], budgets: Budgets) -> list[str]:
    """The budgets ``measurement`` breaks, as readable strings (empty: meets them all)."""
    if measurement.get("error"):
        return [f"measurement failed: {measurement['error']}"]
    limits = [("latency_ms_p95", budgets.max_latency_ms_p95, "max"),
              ("size_bytes", budgets.max_size_bytes, "max"),
              ("peak_rss_mb", budgets.max_peak_rss_mb, "max"),
              (decision_accuracy_key(measurement), budgets.min_accuracy, "min")]
    failed = []
    for key, limit, kind in limits:
        if limit is None:
            continue
        value = measurement.get(key)
        if value is None or (value > limit if kind == "max" else value < limit):
            failed.append(f"{key} {value:.4g} {'>' if kind == 'max' else '<'} {limit:g}"
                          if value is not None else f"{key} missing")
    return failed


def decision_accuracy_key(measurement: dict[str, Any]) -> str:
    """`val_accuracy` when it was measured, else `accuracy` (test)."""
    return "val_accuracy" if measurement.get("val_accuracy") is not None else "accuracy"


def select_candidate(measurements: dict[str, dict[str, Any]]) -> str | None:
    """Among candidates that meet their budgets: best val accuracy, then lower p50, then name."""
    ok = [(n, m) for n, m in measurements.items() if m.get("meets_budget")]
    if not ok:
        return None
    return min(ok, key=lambda nm: (-nm[1][decision_accuracy_key(nm[1])],
                                   nm[1]["latency_ms_p50"], nm[0]))[0]


def skip_reason(profile: DeviceProfile, available: list[str]) -> str | None:
    missing = [p for p in profile.providers if p not in available]
    if missing:
        return (f"{', '.join(missing)} not in onnxruntime.get_available_providers() "
                f"({', '.join(available)})")
    return None


def run_measurement(model: Path | None, test_npz: Path, profile: DeviceProfile,
                    cfg: EvaluateConfig, val_npz: Path | None = None) -> dict[str, Any]:
    """One `components.profiles` process; its JSON result, or ``{"error": ...}``."""
    cmd = [sys.executable, "-m", "components.profiles", "--test", str(test_npz),
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


def render_report(metrics: dict[str, Any], cfg: EvaluateConfig, names: list[str]) -> str:
    """Markdown: per profile its budgets and one table row per candidate (selected in bold)."""
    lines = ["# Evaluation", ""]
    for pname, profile in cfg.profiles.items():
        lines += [f"## {pname}", "",
                  f"providers {', '.join(profile.providers)}; threads {profile.threads or 'all'};"
                  f" batch {profile.batch_size}; budgets: "
                  + (", ".join(f"{k} {v:g}" for k, v in profile.budgets.model_dump().items()
                               if v is not None) or "none"), ""]
        if pname in metrics["skipped"]:
            lines += [f"Skipped: {metrics['skipped'][pname]}", ""]
            continue
        lines += [f"Baseline RSS (onnxruntime + data, no model): "
                  f"{_fmt(metrics['baseline_rss_mb'].get(pname), '.1f')} MiB", "",
                  "| candidate | val accuracy | test accuracy | p50 ms | p95 ms | p99 ms "
                  "| samples/s | size kB | peak RSS MiB | model RSS MiB | budgets |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        chosen = metrics["selected"].get(pname)
        for name in names:
            m = metrics[name][pname]
            label = f"**{name}** (selected)" if name == chosen else name
            verdict = "ok" if m["meets_budget"] else "; ".join(m["failed_budgets"])
            size = m["size_bytes"] / 1000 if m["size_bytes"] is not None else None
            lines.append(
                f"| {label} | {_fmt(m.get('val_accuracy'), '.4f')} "
                f"| {_fmt(m['accuracy'], '.4f')} | {_fmt(m['latency_ms_p50'], '.3f')} "
                f"| {_fmt(m['latency_ms_p95'], '.3f')} | {_fmt(m['latency_ms_p99'], '.3f')} "
                f"| {_fmt(m['throughput_per_s'], '.0f')} | {_fmt(size, '.1f')} "
                f"| {_fmt(m['peak_rss_mb'], '.1f')} | {_fmt(m['model_rss_mb'], '.1f')} "
                f"| {verdict} |")
        lines += ["", f"Selected: {chosen or 'none (no candidate meets every budget)'} "
                  "(best val accuracy within budgets, then lowest p50)", ""]
    return "\n".join(lines)


def write_plots(metrics: dict[str, Any], cfg: EvaluateConfig, names: list[str],
                folder: Path) -> list[Path]:
    """Accuracy vs p50 latency and vs size per profile; a skipped profile's plot says why."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for pname in cfg.profiles:
        for kind, key, xlabel, scale in (("latency", "latency_ms_p50", "p50 latency (ms)", 1.0),
                                         ("size", "size_bytes", "ONNX size (kB)", 1e-3)):
            fig, ax = plt.subplots(figsize=(6, 4))
            if pname in metrics["skipped"]:
                ax.text(0.5, 0.5, f"{pname} skipped:\n{metrics['skipped'][pname]}",
                        ha="center", va="center", wrap=True, fontsize=8)
                ax.set_axis_off()
            else:
                for name in names:
                    m = metrics[name][pname]
                    if m.get(key) is None or m.get("accuracy") is None:
                        continue
                    ax.scatter(m[key] * scale, m["accuracy"],
                               marker="o" if m["meets_budget"] else "x",
                               color="tab:green" if m["meets_budget"] else "tab:red")
                    ax.annotate(name, (m[key] * scale, m["accuracy"]), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
                xs = [metrics[n][pname][key] * scale for n in names
                      if metrics[n][pname].get(key)]
                if xs and max(xs) > 20 * min(xs):  # teachers vs students: orders of magnitude
                    ax.set_xscale("log")
                budgets = cfg.profiles[pname].budgets
                if budgets.min_accuracy is not None:
                    ax.axhline(budgets.min_accuracy, color="grey", ls="--", lw=0.8)
                if kind == "size" and budgets.max_size_bytes is not None:
                    ax.axvline(budgets.max_size_bytes * scale, color="grey", ls="--", lw=0.8)
                ax.set_xlabel(xlabel)
                ax.set_ylabel("test accuracy")
                ax.set_title(f"{pname}: accuracy vs {kind} "
                             "(o meets budgets, x fails; -- budget)", fontsize=9)
                ax.grid(alpha=0.3)
            path = folder / f"{pname}-{kind}.png"
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
    return written


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
