"""The compression table: every model of the chain measured the same way, in the same run.

Rows: each teacher, their ensemble, the student trained alone (cross-entropy, distill's data,
seed and schedule), the distilled student, the pruned student, each quantized bundle, and an
identity graph (ONNX Runtime's own per-call floor). Every ONNX file is measured as `evaluate`
measures (`components.evaluate.measure_profile`: one `components.evaluation.profiles` process per
model and setting, so peak memory is that process's, timed in interleaved rounds, the median
round's p50 reported) on 1 thread at batch 1 and on all cores at batch 64.
Models without an ONNX file yet are exported with `components.export.onnx_utils.export_onnx`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.config import DeviceProfile, EvaluateConfig
from components.evaluate import measure_profile

SETTINGS = {
    "1t-b1": DeviceProfile(threads=1, batch_size=1),
    "all-b64": DeviceProfile(threads=0, batch_size=64),
}
TIMED = ("latency_ms_p50", "latency_ms_p95", "throughput_per_s", "peak_rss_mb", "model_rss_mb")
COLUMNS = ("kind", "accuracy", "params", "macs", "size_bytes",
           *(f"{s}.{k}" for s in SETTINGS for k in TIMED))
IDENTITY = "identity"


@dataclass
class Candidate:
    kind: str  # teacher | ensemble | student | quantized | floor
    onnx: Path
    params: int | None
    macs: int | None


def export_identity(in_shape: tuple[int, int, int], path: Path) -> Path:
    """``image`` -> Identity -> Flatten -> ``logits``: the per-call cost of ORT itself.

    The Flatten (a 4-D to 2-D view of the same buffer) lets the harness score its output like
    any classifier's; its accuracy is meaningless and is not reported.
    """
    import onnx
    from onnx import TensorProto, helper

    from components.export.onnx_utils import INPUT_NAME, OUTPUT_NAME, save_onnx

    c, h, w = in_shape
    graph = helper.make_graph(
        [helper.make_node("Identity", [INPUT_NAME], ["same"]),
         helper.make_node("Flatten", ["same"], [OUTPUT_NAME], axis=1)],
        "identity",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", c, h, w])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", c * h * w])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto, full_check=True)
    return save_onnx(proto, path)


def train_student_alone(params: Any, data: Any) -> Any:
    """The student architecture trained on labels alone: distill's data, seed and schedule."""
    from components.modeling.architectures import build_model
    from components.modeling.training import fit, seed_everything

    cfg = params.distill
    seed_everything(cfg.training.seed)  # the same initial weights as distill's seed-0 baseline
    model = build_model(cfg.student, data.in_shape, data.num_classes, data.mean, data.std)
    fit(model, data.train, data.val, cfg.training, seed=cfg.training.seed, desc="student alone")
    return model


def collect_candidates(clone: Path, work: Path) -> dict[str, Candidate]:
    """Every model to measure, exporting to ONNX under ``work`` what has no ONNX file yet."""
    from components.config import load_params
    from components.convert import AveragedSoftmax
    from components.core.data import load_prepared
    from components.core.io import read_json
    from components.evaluate import find_candidates
    from components.export.onnx_utils import export_onnx
    from components.modeling.architectures import count_params
    from components.modeling.checkpoint import load_checkpoint
    from components.pruning.macs import count_macs

    work.mkdir(parents=True, exist_ok=True)
    params = load_params(clone / "params.yaml")
    data = load_prepared(clone / "data/prepared")
    shape = data.in_shape
    bundles = find_candidates(clone / "models/bundles")

    def cost(model) -> tuple[int, int]:
        return count_params(model), count_macs(model, shape)

    out: dict[str, Candidate] = {}
    teachers = {n: load_checkpoint(clone / "models/teachers" / n)
                for n in params.train_teachers.teachers}
    for name, ckpt in teachers.items():
        key = f"teacher-{name}"
        path = bundles.get(key) or export_onnx(ckpt.model, shape, work / f"{key}.onnx")
        out[key] = Candidate("teacher", path, *cost(ckpt.model))
    members = [c.model for c in teachers.values()]
    path = bundles.get("ensemble") or export_onnx(AveragedSoftmax(members), shape,
                                                  work / "ensemble.onnx")
    costs = [cost(m) for m in members]
    out["ensemble"] = Candidate("ensemble", path, sum(p for p, _ in costs),
                                sum(m for _, m in costs))
    alone = train_student_alone(params, data)
    out["student-alone"] = Candidate("student", export_onnx(alone, shape,
                                                            work / "student-alone.onnx"),
                                     *cost(alone))
    for key, folder in (("student", "models/student"), ("pruned", "models/pruned")):
        model = load_checkpoint(clone / folder).model
        path = bundles.get(key) or export_onnx(model, shape, work / f"{key}.onnx")
        out[key] = Candidate("student", path, *cost(model))
    pruned = out["pruned"]
    for variant in read_json(clone / "models/quantized/report.json")["variants"]:
        if variant in bundles:  # same graph as the pruned student, stored in lower precision
            out[variant] = Candidate("quantized", bundles[variant], pruned.params, pruned.macs)
    out[IDENTITY] = Candidate("floor", export_identity(shape, work / "identity.onnx"), 0, 0)
    return out


def measure_candidates(candidates: dict[str, Candidate], test_npz: Path, runs: int,
                       warmup: int, rounds: int = 3) -> dict[str, dict[str, Any]]:
    """One row per candidate: size, params, MACs, accuracy and, per setting, TIMED figures.

    Per setting every candidate runs in its own process, all timed in ``rounds`` interleaved
    rounds (one process times at a time, the order rotated), so a passing load spike moves
    one round of every model alike, not one model's figure.
    """
    cfg = EvaluateConfig(runs=runs, warmup=warmup, timeout_s=600, profiles=SETTINGS,
                         rounds=rounds)
    measured = {setting: measure_profile(setting, profile, cfg,
                                         {n: c.onnx for n, c in candidates.items()}, test_npz,
                                         None)[0]
                for setting, profile in SETTINGS.items()}
    rows: dict[str, dict[str, Any]] = {}
    for name, cand in candidates.items():
        row: dict[str, Any] = {"kind": cand.kind, "accuracy": None, "params": cand.params,
                               "macs": cand.macs, "size_bytes": cand.onnx.stat().st_size,
                               "onnx": str(cand.onnx)}
        for setting in SETTINGS:
            m = measured[setting][name]
            row[f"{setting}.p50_rounds_ms"] = m.get("latency_rounds_p50_ms")
            row[f"{setting}.spread_ms"] = m.get("latency_spread_ms")
            if m.get("error"):
                row[f"{setting}.error"] = m["error"]
            if setting == "1t-b1" and cand.kind != "floor":
                row["accuracy"] = m.get("accuracy")
            for key in TIMED:
                row[f"{setting}.{key}"] = m.get(key)
        rows[name] = row
    return rows


def references(rows: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Names of the rows the others are compared with."""
    teachers = {n: r for n, r in rows.items() if r["kind"] == "teacher"}
    return {
        "largest teacher": max(teachers, key=lambda n: teachers[n]["size_bytes"]),
        "fastest teacher": min(teachers, key=lambda n: teachers[n]["1t-b1.latency_ms_p50"]
                               or float("inf")),
        "ensemble": "ensemble",
    }


def ratios(row: dict[str, Any], ref: dict[str, Any]) -> dict[str, float | None]:
    """How ``row`` compares with ``ref``: x smaller / fewer / faster, accuracy in points."""
    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    acc = (None if row["accuracy"] is None or ref["accuracy"] is None
           else round(100 * (row["accuracy"] - ref["accuracy"]), 2))
    return {
        "size_x_smaller": div(ref["size_bytes"], row["size_bytes"]),
        "params_x_fewer": div(ref["params"], row["params"]),
        "macs_x_fewer": div(ref["macs"], row["macs"]),
        "p50_1t_x_faster": div(ref["1t-b1.latency_ms_p50"], row["1t-b1.latency_ms_p50"]),
        "throughput_b64_x": div(row["all-b64.throughput_per_s"], ref["all-b64.throughput_per_s"]),
        "accuracy_delta_points": acc,
    }


def measure_compression(clone: Path, work: Path, runs: int, warmup: int,
                        rounds: int = 3) -> dict[str, Any]:
    """The whole table: rows, the reference rows and every row's ratios against them."""
    candidates = collect_candidates(clone, work)
    rows = measure_candidates(candidates, clone / "data/prepared/test.npz", runs, warmup,
                              rounds)
    refs = references(rows)
    for row in rows.values():
        row["ratios"] = {label: ratios(row, rows[name]) for label, name in refs.items()}
    teachers_size = sum(r["size_bytes"] for r in rows.values() if r["kind"] == "teacher")
    return {"settings": {s: p.model_dump(include={"threads", "batch_size"})
                         for s, p in SETTINGS.items()},
            "runs": runs, "warmup": warmup, "rounds": rounds, "columns": list(COLUMNS),
            "references": refs,
            "teachers_size_bytes": teachers_size, "rows": rows}
