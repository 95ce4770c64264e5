"""`int8`: static int8 configured for the primary device profile, measured, not assumed.

Candidates are the profile's int8 formats (`resolved_int8_formats`: U8S8 and S8S8 on x86, S8S8
on arm64, or the profile's pin) x per-channel off/on x `quantize.quant_formats`, at the
configured calibration method, all from one calibration sample (at most `max_candidates`).
Each is scored on val against fp32 with the paired check (`stats.compare`, margin
`max_accuracy_drop`) and timed against fp32 in interleaved rounds at the primary profile's
threads and batch size. The fastest candidate that passes and is faster than fp32 is kept.

When none passes, the accuracy-aware fallback works on the fastest form (format and QDQ or
QOperator) that beats fp32: the other calibration methods, then nodes kept in float one at a
time. An int8 that is not faster than fp32 is not written (status ``dropped``), nor one that
never passes (``failed``); the reason and the whole candidate table go to the metrics.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from components.config import QuantizeConfig
from components.core.data import stratified_sample
from components.core.stats import compare
from components.core.timing import faster
from components.quantization import common
from components.quantization._int8_fallback import fall_back
from components.quantization._int8_static import (  # noqa: F401  (CALIBRATION: the config test)
    CALIBRATION,
    FORMATS,
    describe,
    quantize_candidate,
)
from components.quantization.common import VariantContext, VariantResult

METHODS = tuple(CALIBRATION)
TABLE_KEYS = ("phase", "format", "per_channel", "method", "quant_format", "excluded_nodes",
              "val_accuracy", "drop", "upper", "passes", "p50_ms", "spread_ms", "rejected",
              "chosen")


def candidate_grid(formats: list[str], cfg: QuantizeConfig) -> list[dict[str, Any]]:
    """The settings to try at the configured method, configured per-channel first; the order
    covers every format and quant format before repeating them with the other per-channel."""
    grid = [{"phase": "grid", "format": f, "per_channel": pc, "method": cfg.calibration_method,
             "quant_format": q, "excluded_nodes": []}
            for pc in (cfg.per_channel, not cfg.per_channel) for q in cfg.quant_formats
            for f in formats]
    return grid[: cfg.max_candidates]


def accuracy_fields(reference: np.ndarray, correct: np.ndarray, margin: float) -> dict[str, Any]:
    """A candidate's val accuracy and its paired comparison with fp32 (same samples)."""
    cmp = compare(reference, correct, margin)
    return {"val_accuracy": float(np.mean(correct)), "drop": cmp.drop["drop"],
            "upper": cmp.drop["upper"], "passes": cmp.passes, "accuracy_reason": cmp.reason}


def rejection(cand: dict[str, Any], fp32: dict[str, Any],
              formats: list[str] | None = None) -> str | None:
    """Why ``cand`` may not be int8 (None: it may): a format the profile does not allow, the
    paired accuracy check, or no measured speed-up over fp32 (``fp32``: its timing)."""
    if formats is not None and cand["format"] not in formats:
        return f"format {cand['format']} is not among the profile's int8 formats {formats}"
    if not cand["passes"]:
        return f"accuracy: {cand['accuracy_reason']}"
    if cand.get("p50_ms") is None:
        return "not timed"
    if not faster(cand, fp32):
        return f"speed: not faster than fp32, {common.timing_note(cand, fp32)}"
    return None


def choose_int8(candidates: list[dict[str, Any]], fp32: dict[str, Any],
                formats: list[str] | None = None) -> dict[str, Any] | None:
    """The fastest candidate that passes the paired accuracy check and is faster than fp32
    (first listed wins ties); None when there is none. Each candidate needs ``format``,
    ``passes`` (and ``accuracy_reason``), ``p50_ms`` and ``spread_ms``."""
    ok = [c for c in candidates if rejection(c, fp32, formats) is None]
    return min(ok, key=lambda c: c["p50_ms"], default=None)


class Search:
    """Quantizes, scores and times candidates for one stage run; keeps the table."""

    def __init__(self, ctx: VariantContext):
        self.ctx, self.cfg = ctx, ctx.cfg
        self.profile_name = ctx.primary
        self.profile = ctx.profiles[ctx.primary]
        self.formats = self.profile.resolved_int8_formats()
        self.pre = ctx.preprocessed()
        self.calib = stratified_sample(ctx.prepared.train, self.cfg.calibration_size,
                                       self.cfg.seed)
        self.reference = ctx.reference_correct()
        self.x = common.timing_batch(ctx.prepared.val, self.profile.batch_size)
        self.table: list[dict[str, Any]] = []

    def score(self, cand: dict[str, Any]) -> dict[str, Any]:
        """Quantize ``cand`` (a settings dict), score it on val and add it to the table."""
        path = self.ctx.work / f"int8-{len(self.table)}.onnx"
        quantize_candidate(cand, self.pre, path, self.calib, self.ctx.work)
        correct = common.val_correct(path, self.ctx.prepared.val)
        cand = {**cand, **accuracy_fields(self.reference, correct, self.cfg.max_accuracy_drop),
                "p50_ms": None, "spread_ms": None, "rejected": None, "chosen": False,
                "path": path}
        self.table.append(cand)
        return cand

    def time(self, cands: list[dict[str, Any]]) -> dict[str, Any]:
        """Time ``cands`` against fp32 in one interleaved measurement; fp32's timing."""
        paths = {"fp32": self.ctx.fp32} | {f"c{i}": c["path"] for i, c in enumerate(cands)}
        t = common.measure(paths, self.profile, self.x, self.cfg.timing_rounds,
                           self.cfg.timing_runs)
        for i, c in enumerate(cands):
            c["p50_ms"], c["spread_ms"] = t[f"c{i}"]["p50_ms"], t[f"c{i}"]["spread_ms"]
        return t["fp32"]

    def pick(self, cands: list[dict[str, Any]], fp32: dict[str, Any]) -> dict[str, Any] | None:
        """`choose_int8` over ``cands``, writing each one's rejection into the table."""
        chosen = choose_int8(cands, fp32, self.formats)
        for c in cands:
            c["rejected"] = rejection(c, fp32, self.formats)
            if c["rejected"] is None and c is not chosen:
                c["rejected"] = "slower than the chosen candidate"
        if chosen is not None:
            chosen["chosen"] = True
        return chosen

    def too_slow(self, cands: list[dict[str, Any]], fp32: dict[str, Any]) -> str:
        """The speed reason for dropping int8: its fastest (passing, if any) candidate."""
        pool = [c for c in cands if c["passes"]] or cands
        best = min(pool, key=lambda c: c["p50_ms"])
        what = "fastest passing candidate" if best["passes"] else (
            "fastest candidate (none passes the accuracy check)")
        return (common.speed_note("int8", best, fp32, self.profile_name)
                + f"; {what}: {describe(best)}")


def search_int8(ctx: VariantContext) -> dict[str, Any]:
    """Candidate grid, choice, and the fallback when needed; returns ``{status, reason, path,
    candidates, settings, float_nodes}`` (status ``ok`` | ``dropped`` | ``failed``)."""
    s = Search(ctx)
    grid = [s.score(c) for c in candidate_grid(s.formats, s.cfg)]
    fp32 = s.time(grid)
    chosen = s.pick(grid, fp32)
    status, reason = "ok", None
    if chosen is None and (any(c["passes"] for c in grid)
                           or not any(faster(c, fp32) for c in grid)):
        status, reason = "dropped", s.too_slow(grid, fp32)  # the fallback cannot make it faster
    elif chosen is None:
        status, reason, chosen, fp32 = fall_back(s, grid, fp32)
    return {"status": status, "reason": reason,
            "path": chosen["path"] if chosen is not None else None,
            "candidates": [{k: c[k] for k in TABLE_KEYS} for c in s.table],
            "float_nodes": list(chosen["excluded_nodes"]) if chosen is not None else [],
            "settings": settings(chosen, fp32, s) if chosen is not None else None}


def settings(chosen: dict[str, Any], fp32: dict[str, Any], s: Search) -> dict[str, Any]:
    """The chosen candidate's settings and where it was measured faster."""
    activation, weight = FORMATS[chosen["format"]]
    return {"format": chosen["format"], "activation_type": activation, "weight_type": weight,
            "per_channel": chosen["per_channel"], "calibration_method": chosen["method"],
            "quant_format": chosen["quant_format"], "float_nodes": chosen["excluded_nodes"],
            "profile": s.profile_name, "threads": s.profile.threads,
            "batch_size": s.profile.batch_size, "p50_ms": chosen["p50_ms"],
            "fp32_p50_ms": fp32["p50_ms"], "speedup": fp32["p50_ms"] / chosen["p50_ms"]}


def make(ctx: VariantContext, out: Path) -> VariantResult:
    search = search_int8(ctx)
    if search["path"] is not None:
        shutil.copyfile(search["path"], out)
    report = {"int8_status": search["status"], "int8_reason": search["reason"],
              "int8_candidates": search["candidates"], "int8_settings": search["settings"],
              "float_nodes": search["float_nodes"]}
    return VariantResult(out if search["path"] is not None else None, report,
                         dropped=search["reason"])
