"""int8's accuracy-aware fallback, run when no grid candidate passes the paired check.

It keeps the fastest form that beats fp32 (format and QDQ/QOperator) and tries, in order: the
other calibration methods (both per-channel settings), then the nodes that add the most
quantization error kept in float, one at a time (re-ranked on the latest graph). Whatever it
finds is timed against fp32 again: the speed rule holds for a fallback too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from components.core.stats import compare
from components.core.timing import faster
from components.export.onnx_utils import rank_sensitive_nodes
from components.quantization._int8_static import CALIBRATION, describe, quantize_candidate

if TYPE_CHECKING:
    from components.quantization.int8 import Search

Outcome = tuple[str, str | None, dict[str, Any] | None, dict[str, Any]]
SETTINGS = ("format", "per_channel", "method", "quant_format")


def fall_back(s: Search, grid: list[dict[str, Any]], fp32: dict[str, Any]) -> Outcome:
    """``(status, reason, chosen or None, fp32 timing of the decisive measurement)``.

    ``grid``: the scored and timed grid, none passing, at least one faster than fp32.
    """
    cfg = s.cfg
    base = min((c for c in grid if faster(c, fp32)), key=lambda c: c["p50_ms"])
    form = {k: base[k] for k in ("format", "quant_format")}
    floor = compare(s.reference, s.reference, cfg.max_accuracy_drop)
    if not floor.passes:
        # identical predictions fail: no int8 can pass, so do not spend quantizations on it
        return "failed", (
            f"no int8 candidate passes the paired accuracy check vs fp32 after {len(s.table)} "
            f"quantizations, and none can: max_accuracy_drop {cfg.max_accuracy_drop:g} is below "
            f"what {len(s.reference)} val samples can show (predictions identical to fp32 give "
            f"a 95% upper bound of {floor.drop['upper']:.4f}); raise quantize.max_accuracy_drop "
            f"or enlarge the val split"), None, fp32
    tried = {(c["method"], c["per_channel"]) for c in grid
             if all(c[k] == v for k, v in form.items())}
    others = [s.score({"phase": "calibration", **form, "method": m, "per_channel": pc,
                       "excluded_nodes": []})
              for m in CALIBRATION for pc in (cfg.per_channel, not cfg.per_channel)
              if (m, pc) not in tried]
    passing = [c for c in others if c["passes"]]
    if passing:
        t = s.time(passing)
        chosen = s.pick(others, t)
        return (("ok", None, chosen, t) if chosen is not None
                else ("dropped", s.too_slow(passing, t), None, t))
    s.pick(others, fp32)  # records each one's accuracy rejection
    return _float_nodes(s, form, fp32, n_grid=len(grid), n_other=len(others))


def _float_nodes(s: Search, form: dict[str, Any], fp32: dict[str, Any], n_grid: int,
                 n_other: int) -> Outcome:
    """Keep the most harmful nodes in float, one at a time, from the best candidate of
    ``form``; time the first that passes against fp32."""
    cfg = s.cfg
    best = max((c for c in s.table if all(c[k] == v for k, v in form.items())),
               key=lambda c: c["val_accuracy"])  # first best wins ties
    current, excluded, attempts = best, [], []
    while len(excluded) < cfg.max_float_nodes:
        ranked = [n for n, _ in rank_sensitive_nodes(s.pre, _qdq(s, current),
                                                     s.ctx.prepared.val.x[:256])
                  if n not in excluded]
        if not ranked:
            break
        excluded.append(ranked[0])
        current = s.score({"phase": "float_nodes", **{k: best[k] for k in SETTINGS},
                           "excluded_nodes": list(excluded)})
        attempts.append(current)
        if current["val_accuracy"] > best["val_accuracy"] or current["passes"]:
            best = current
        if best["passes"]:
            break
    if best["passes"]:
        t = s.time([best])
        chosen = s.pick(attempts, t)
        return (("ok", None, chosen, t) if chosen is not None
                else ("dropped", s.too_slow([best], t), None, t))
    s.pick(attempts, fp32)
    return "failed", (
        f"no int8 candidate passes the paired accuracy check vs fp32 (max_accuracy_drop "
        f"{cfg.max_accuracy_drop:g}) after {len(s.table)} quantizations ({n_grid} grid "
        f"candidates, {n_other} other calibration settings, then up to {cfg.max_float_nodes} "
        f"nodes kept in float); closest, {describe(best)}: {best['accuracy_reason']}"), None, fp32


def _qdq(s: Search, cand: dict[str, Any]) -> Any:
    """A QDQ graph of ``cand``'s settings, which the node ranking reads (QOperator hides the
    float tensors it compares)."""
    if cand["quant_format"] == "QDQ":
        return cand["path"]
    twin = s.ctx.work / f"rank-{len(s.table)}-{len(cand['excluded_nodes'])}.onnx"
    return quantize_candidate({**cand, "quant_format": "QDQ"}, s.pre, twin, s.calib, s.ctx.work)
