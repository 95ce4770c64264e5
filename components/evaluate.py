"""`evaluate`: measure every candidate ONNX model on every device profile, pick one per profile.

A device profile (execution providers, threads, batch size, budgets) stands for a deployment
target, and each bundle's `metadata.json` may say how it runs there (``runtime.<profile>``:
the model file, e.g. an ORT-format file optimised for it, and the session options); without
that entry the bundle's `model.onnx` runs with today's options. A bundle is measured as
shipped: its graph takes uint8 pixels (N, H, W, C) and does cast, scaling and layout itself, so
the prepared splits are fed as the 8-bit pixels they stand for (`profiles.shipped_input`), and
latency includes that preprocessing. Each (candidate, profile)
measurement runs in a process of its own (`components.evaluation.profiles`), so its peak RSS
is its own; a profile's processes time in interleaved rounds, one process at a time
(`components.evaluation.rounds`): ``latency_ms_p50`` is the median of the rounds' p50s and
``latency_spread_ms`` their range. A baseline process per profile (onnxruntime + data, no
model) tells the model's share of memory apart. A profile whose providers this onnxruntime
lacks is reported under ``skipped`` with the reason.

Per profile the selection (`components.evaluation.selection`) keeps the candidates meeting
every budget, takes the most accurate as the reference, finds the accuracy-equivalent ones by
paired comparisons on the same val samples (``evaluate.selection_margin``) and picks the
fastest of those, then the smallest; the reason is recorded in words. Decisions use the val
split, the test accuracy is only reported (choosing on test would make it optimistic). Writes
the metrics JSON (per-sample correctness packed, with Wilson intervals), ``<out_dir>/
evaluate.md``, ``<out_dir>/predictions.json`` (every predicted label, per split) and per
profile ``<out_dir>/plots/<profile>-latency.png`` and ``<profile>-size.png``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from components.config import DeviceProfile, EvaluateConfig, Params
from components.core.io import atomic_dir, atomic_write_json, atomic_write_text, read_json
from components.core.stage import StageIO, StageResult
from components.evaluation.report import render_report, write_plots
from components.evaluation.rounds import run_rounds
from components.evaluation.selection import (
    accuracy_interval,
    judge_budgets,
    select_profile,
)

REPO = Path(__file__).resolve().parents[1]
# metrics keys that are not candidates
RESERVED = ("selected", "selection", "skipped", "baseline_rss_mb", "profiles", "floor")
BASELINE = "baseline"  # the model-less process of a profile (not a candidate name: in RESERVED)
FLOOR = "floor"  # ONNX Runtime's per-call cost on the bundles' input: an identity graph
MEASURED = ("accuracy", "val_accuracy", "accuracy_ci", "val_accuracy_ci", "latency_ms_p50",
            "latency_spread_ms", "latency_ms_p95", "latency_p95_spread_ms", "latency_ms_p99",
            "throughput_per_s", "size_bytes", "peak_rss_mb")


def skip_reason(profile: DeviceProfile, available: list[str]) -> str | None:
    missing = [p for p in profile.providers if p not in available]
    if missing:
        return (f"{', '.join(missing)} not in onnxruntime.get_available_providers() "
                f"({', '.join(available)})")
    return None


def runtime_entry(model: Path, profile_name: str) -> tuple[Path, dict[str, Any]]:
    """The file a profile runs and its session options, from the bundle's
    ``metadata.json`` ``runtime.<profile>``; ``(model, {})`` when the bundle has none."""
    meta = Path(model).parent / "metadata.json"
    entry = ((read_json(meta).get("runtime") or {}).get(profile_name) if meta.is_file()
             else None) or {}
    options = {k: v for k, v in entry.items() if k != "model_file"}
    # the name only: a bundle's metadata never points outside its own folder
    file = Path(model).parent / Path(entry["model_file"]).name if entry.get("model_file") else model
    return file, options


def measure_command(model: Path | None, test_npz: Path, profile: DeviceProfile,
                    cfg: EvaluateConfig, val_npz: Path | None = None,
                    options: dict[str, Any] | None = None) -> list[str]:
    """The `components.evaluation.profiles --serve` command of one measurement."""
    cmd = [sys.executable, "-m", "components.evaluation.profiles", "--serve",
           "--test", str(test_npz), "--providers", ",".join(profile.providers),
           "--threads", str(profile.threads), "--batch-size", str(profile.batch_size),
           "--warmup", str(cfg.warmup if profile.warmup is None else profile.warmup),
           "--runs", str(profile.runs or cfg.runs),
           "--rounds", str(cfg.rounds)]
    if model is not None:
        cmd += ["--model", str(model)]
    if val_npz is not None:
        cmd += ["--val", str(val_npz)]
    if options:
        cmd += ["--options", json.dumps(options)]
    return cmd


def write_floor_model(bundle_model: Path, folder: Path) -> Path:
    """An identity graph that takes exactly what ``bundle_model`` takes (its input, dtype and
    shape) and flattens it: what one ONNX Runtime call costs with no model in it. Its
    ``metadata.json`` carries the bundle's input contract, so it is fed the same pixels."""
    import onnx
    from onnx import helper

    source = onnx.load(str(bundle_model), load_external_data=False)
    image = source.graph.input[0]
    graph = helper.make_graph(
        [helper.make_node("Identity", [image.name], ["same"]),
         helper.make_node("Flatten", ["same"], ["logits"], axis=1)],
        "floor", [image],
        [helper.make_tensor_value_info("logits", image.type.tensor_type.elem_type,
                                       ["batch", "features"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    meta = Path(bundle_model).parent / "metadata.json"
    contract = read_json(meta).get("input") if meta.is_file() else None
    atomic_write_json(folder / "metadata.json", {"input": contract} if contract else {})
    return folder / "model.onnx"


def _floor_model(candidates: dict[str, Path], folder: Path) -> Path | None:
    """The floor graph for the first candidate that loads (a broken one is measured, and
    reported, as a candidate); None when none loads."""
    for path in candidates.values():
        try:
            return write_floor_model(Path(path), folder)
        except Exception:  # noqa: BLE001, S112 - not a graph: the candidate's own error says so
            continue
    return None


def find_candidates(bundles_dir: Path) -> dict[str, Path]:
    """Bundle name -> its ``model.onnx``, for every bundle folder under ``bundles_dir``."""
    return {p.parent.name: p for p in sorted(Path(bundles_dir).glob("*/model.onnx"))}


def measure_profile(pname: str, profile: DeviceProfile, cfg: EvaluateConfig,
                    candidates: dict[str, Path], test_npz: Path, val_npz: Path | None,
                    floor_model: Path | None = None,
                    ) -> tuple[dict[str, dict[str, Any]], float | None, dict[str, Any] | None]:
    """Every candidate's measurement on one profile (budgets judged), the baseline RSS, and
    the per-call floor (``floor_model`` timed in the same interleaved rounds)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    files = {name: runtime_entry(Path(path), pname) for name, path in candidates.items()}
    cmds = {BASELINE: measure_command(None, test_npz, profile, cfg)}
    cmds |= {name: measure_command(file, test_npz, profile, cfg, val_npz, options)
             for name, (file, options) in files.items() if file.is_file()}
    if floor_model is not None:
        cmds[FLOOR] = measure_command(floor_model, test_npz, profile, cfg)
    results = run_rounds(cmds, env, cfg.rounds, cfg.timeout_s,
                         untimed=frozenset({BASELINE}))
    baseline = results.pop(BASELINE).get("peak_rss_mb")
    timed = results.pop(FLOOR, None)
    floor = ({k: timed.get(k) for k in ("latency_ms_p50", "latency_spread_ms")}
             if timed and timed.get("latency_ms_p50") is not None else None)
    out = {}
    for name, (file, _) in files.items():
        m = results.get(name) or {"error": f"{file.name} not found in the bundle"}
        m["model_file"] = file.name
        m["size_bytes"] = file.stat().st_size if file.is_file() else None
        m["val_accuracy_ci"] = accuracy_interval(m, "val")
        m["accuracy_ci"] = accuracy_interval(m, "test")
        for key in MEASURED:
            m.setdefault(key, None)
        m["model_rss_mb"] = (m["peak_rss_mb"] - baseline
                             if m["peak_rss_mb"] is not None and baseline else None)
        m["failed_budgets"], m["budget_margin"] = judge_budgets(m, profile.budgets)
        m["meets_budget"] = not m["failed_budgets"]
        out[name] = m
    return out, baseline, floor


def evaluate_stage(cfg: EvaluateConfig, candidates: dict[str, Path], prepared_dir: Path,
                   out_dir: Path, metrics_path: Path) -> dict[str, Any]:
    """Measure every candidate on every profile; write metrics, report and plots; return metrics.

    Metrics: ``{candidate: {profile: {accuracy, val_accuracy, accuracy_ci, val_accuracy_ci,
    val_correct, test_correct, latency_ms_p50/p95/p99, latency_spread_ms, latency_p95_spread_ms,
    throughput_per_s, size_bytes, model_file, peak_rss_mb, model_rss_mb, meets_budget,
    failed_budgets, budget_margin}}, "selected": {profile: name | None}, "selection": {profile:
    {reference, equivalent, chosen, reason}}, "skipped": {profile: reason}, "baseline_rss_mb":
    {profile: MiB}, "floor": {profile: {latency_ms_p50, latency_spread_ms}}}``: the floor is an
    identity graph on the bundles' own input, timed in the same rounds.
    """
    import onnxruntime as ort

    if not candidates:
        raise ValueError("evaluate: no candidate models")
    clash = sorted(set(candidates) & {*RESERVED, BASELINE})
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
    margin = cfg.selection_margin
    metrics: dict[str, Any] = {name: {} for name in candidates}
    metrics.update(selected={}, selection={}, skipped={}, baseline_rss_mb={}, floor={})
    predictions: dict[str, dict[str, Any]] = {name: {} for name in candidates}
    scratch = tempfile.TemporaryDirectory(prefix="floor-")
    floor_model = _floor_model(candidates, Path(scratch.name))
    for pname, profile in cfg.profiles.items():
        reason = skip_reason(profile, available)
        if reason:
            metrics["skipped"][pname] = reason
            metrics["selected"][pname] = None
            continue
        measured, metrics["baseline_rss_mb"][pname], floor = measure_profile(
            pname, profile, cfg, candidates, test_npz, val_npz, floor_model)
        if floor:
            metrics["floor"][pname] = floor
        for name, m in measured.items():
            predictions[name][pname] = {split: m.pop(f"{split}_predictions", None)
                                        for split in ("val", "test")}
            metrics[name][pname] = m
        pick = select_profile(measured, margin)
        metrics["selection"][pname] = pick
        metrics["selected"][pname] = pick["chosen"]
    scratch.cleanup()
    with atomic_dir(out_dir) as tmp:
        atomic_write_text(tmp / "evaluate.md", render_report(metrics, cfg, list(candidates)))
        # compact: one list of labels per candidate, profile and split (~25 kB on the default)
        atomic_write_text(tmp / "predictions.json", json.dumps(predictions, sort_keys=True))
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
