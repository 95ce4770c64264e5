"""Per-profile selection: which budgets a measurement breaks, and which candidate a profile gets.

Decisions use the validation accuracy when it was measured (choosing on test would make the
reported test figure optimistic). Among the candidates that meet every budget, the most
accurate is the reference; a candidate whose paired accuracy drop against it (the same val
samples, `stats.compare`) is shown within ``margin`` is accuracy-equivalent, and so is every
candidate at least as accurate as an equivalent one. Among those the fastest wins
(`timing.faster`: by more than both spreads), and where the latency difference lies inside
the spread, the smallest model. So no profile gets a candidate that measures slower than
another budget-meeting candidate of equal or better accuracy.

Budgets are judged with the measured noise: a latency budget fails only when the p95 minus
the spread of the rounds' p95s still exceeds it (so one noisy run cannot flip a candidate
across it), and every failed or near budget records its ``budget_margin``.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np

from components.config import Budgets
from components.core.stats import accuracy_summary, compare
from components.core.timing import faster

# The default `evaluate.selection_margin`. At 269 val samples even two models that agree on
# every sample are only shown within ~1.1 points (Newcombe, 95% one-sided), so a 1-point
# margin would never find an equivalent; 2 points lets one disagreement through.
DEFAULT_MARGIN = 0.02
CORRECT_KEYS = {"val_accuracy": "val_correct", "accuracy": "test_correct"}


def check_budgets(measurement: dict[str, Any], budgets: Budgets) -> list[str]:
    """The budgets ``measurement`` breaks, as readable strings (empty: meets them all)."""
    return judge_budgets(measurement, budgets)[0]


def judge_budgets(measurement: dict[str, Any], budgets: Budgets,
                  ) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The broken budgets, and ``budget_margin``: per failed or near budget its value, limit,
    noise, headroom (``margin``, negative: over) and a ``note`` such as "p95 19.8 ms +- 0.6 vs
    budget 20". Near: the limit lies within the noise (latency spread, accuracy interval)."""
    if measurement.get("error"):
        return [f"measurement failed: {measurement['error']}"], {}
    acc_key = decision_accuracy_key(measurement)
    limits = [("latency_ms_p95", budgets.max_latency_ms_p95, "max"),
              ("size_bytes", budgets.max_size_bytes, "max"),
              ("peak_rss_mb", budgets.max_peak_rss_mb, "max"),
              (acc_key, budgets.min_accuracy, "min")]
    failed, margins = [], {}
    for key, limit, kind in limits:
        if limit is None:
            continue
        value = measurement.get(key)
        if value is None:
            failed.append(f"{key} missing")
            continue
        headroom = limit - value if kind == "max" else value - limit
        entry = {"value": value, "limit": limit, "margin": headroom}
        if key == "latency_ms_p95":
            noise = (measurement.get("latency_p95_spread_ms")
                     or measurement.get("latency_spread_ms") or 0.0)
            broken, near = headroom + noise < 0, abs(headroom) <= noise
            entry.update(spread=noise,
                         note=f"p95 {value:.3g} ms +- {noise:.2g} vs budget {limit:g}")
            text = f"{key} {value:.4g} > {limit:g} by more than its spread {noise:.2g}"
        else:
            broken, near = headroom < 0, False
            text = f"{key} {value:.4g} {'>' if kind == 'max' else '<'} {limit:g}"
            ci = (measurement.get(f"{acc_key}_ci") if key == acc_key else None)
            if ci:
                near = ci["ci_low"] <= limit <= ci["ci_high"]
                entry.update(ci=[ci["ci_low"], ci["ci_high"]], n=ci["n"])
                entry["note"] = (f"{key} {value:.4f} [{ci['ci_low']:.4f}, {ci['ci_high']:.4f}] "
                                 f"n={ci['n']} vs budget {limit:g}")
        if broken:
            failed.append(text)
        if broken or near:
            entry.setdefault("note", text)
            entry["verdict"] = "fails" if broken else "passes within the noise"
            margins[key] = entry
    return failed, margins


def decision_accuracy_key(measurement: dict[str, Any]) -> str:
    """`val_accuracy` when it was measured, else `accuracy` (test)."""
    return "val_accuracy" if measurement.get("val_accuracy") is not None else "accuracy"


def unpack_correct(record: dict[str, Any]) -> np.ndarray:
    """The boolean per-sample vector (N,) of a `profiles.pack_correct` record."""
    raw = np.frombuffer(base64.b64decode(record["bits"]), dtype=np.uint8)
    return np.unpackbits(raw)[: int(record["n"])].astype(bool)


def paired_vectors(a: dict[str, Any], b: dict[str, Any], metric: str,
                   ) -> tuple[np.ndarray, np.ndarray] | str:
    """Per-sample correctness of measurements ``a`` and ``b`` on the same samples for
    ``metric``; else why they cannot be paired."""
    key = CORRECT_KEYS.get(metric)
    if key is None:
        return f"{metric} has no per-sample form"
    ra, rb = a.get(key), b.get(key)
    if not ra or not rb:
        return f"no per-sample {key} recorded for {'both' if not ra and not rb else 'one'}"
    if (ra.get("samples"), ra.get("n")) != (rb.get("samples"), rb.get("n")):
        return f"measured on different samples ({ra.get('samples')} vs {rb.get('samples')})"
    return unpack_correct(ra), unpack_correct(rb)


def accuracy_interval(measurement: dict[str, Any], split: str = "val") -> dict[str, Any] | None:
    """`stats.accuracy_summary` of the recorded correctness of ``split`` (val or test)."""
    record = measurement.get(f"{split}_correct")
    return accuracy_summary(unpack_correct(record)) if record else None


def _timing(m: dict[str, Any]) -> dict[str, float]:
    p50 = m.get("latency_ms_p50")
    return {"p50_ms": math.inf if p50 is None else p50,
            "spread_ms": m.get("latency_spread_ms") or 0.0}


def _ms(*values: float) -> str:
    """Latencies in one unit: "7.9 vs 11.0 us" below a millisecond, else ms."""
    if max(values) < 1:
        return " vs ".join(f"{1000 * v:.1f}" for v in values) + " us"
    return " vs ".join(f"{v:.3g}" for v in values) + " ms"


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _verb(names: list[str], one: str, many: str) -> str:
    return one if len(names) == 1 else many


def select_profile(measurements: dict[str, dict[str, Any]], margin: float = DEFAULT_MARGIN,
                   confidence: float = 0.95) -> dict[str, Any]:
    """The pick of one profile: ``{reference, equivalent, chosen, reason, margin, drops}``.

    ``equivalent``: the candidates besides the reference that the fastest is chosen among;
    ``drops``: per compared candidate the paired drop, its upper bound and the verdict.
    """
    ok = {n: m for n, m in measurements.items() if m.get("meets_budget")}
    out: dict[str, Any] = {"reference": None, "equivalent": [], "chosen": None,
                           "margin": margin, "drops": {}}
    if not ok:
        return {**out, "reason": "no candidate meets every budget"}
    acc = {n: m[decision_accuracy_key(m)] for n, m in ok.items()}
    t = {n: _timing(m) for n, m in ok.items()}
    reference = min(ok, key=lambda n: (-acc[n], t[n]["p50_ms"], n))
    ref = ok[reference]
    key = decision_accuracy_key(ref)
    passing, failing, why = [reference], [], []
    for name in sorted(set(ok) - {reference}):
        pair = paired_vectors(ref, ok[name], key)
        if isinstance(pair, str):  # no pairing: only an equal point accuracy is equivalent
            verdict = acc[name] >= acc[reference]
            out["drops"][name] = {"passes": verdict, "paired": False, "why": pair}
        else:
            c = compare(pair[0], pair[1], margin, confidence)
            verdict = c.passes
            out["drops"][name] = {"passes": verdict, "paired": True, "drop": c.drop["drop"],
                                  "upper": c.drop["upper"], "n": c.drop["n"]}
        (passing if verdict else failing).append(name)
    floor = min(acc[n] for n in passing)
    lifted = [n for n in failing if acc[n] >= floor]  # more accurate than an equivalent one
    pool = sorted(passing + lifted)
    front = [n for n in pool if not any(faster(t[o], t[n]) for o in pool if o != n)]
    chosen = min(front, key=lambda n: (ok[n].get("size_bytes") or math.inf, t[n]["p50_ms"], n))
    out.update(reference=reference, chosen=chosen, equivalent=sorted(set(pool) - {reference}))
    why.append(f"{reference} is the most accurate within budgets ({key} {acc[reference]:.4f})")
    bound = [n for n in passing[1:] if out["drops"][n]["paired"]]
    if bound:
        ups = ", ".join(f"{100 * out['drops'][n]['upper']:.1f}" for n in bound)
        why.append(f"{_names([reference, *bound])} are accuracy-equivalent (drop upper bound "
                   f"{ups} pt <= {100 * margin:g} pt)")
    unpaired = [n for n in passing[1:] if not out["drops"][n]["paired"]]
    if unpaired:
        why.append(f"{_names(unpaired)} {_verb(unpaired, 'matches', 'match')} its {key} (no "
                   "per-sample correctness to pair)")
    not_eq = [n for n in failing if n not in lifted and out["drops"][n]["paired"]]
    if not_eq:
        ups = ", ".join(f"{100 * out['drops'][n]['upper']:.1f}" for n in not_eq)
        why.append(f"{_names(not_eq)} {_verb(not_eq, 'is', 'are')} not shown within the margin "
                   f"(upper bound {ups} pt > {100 * margin:g} pt)")
    if lifted:
        why.append(f"{_names(lifted)} {_verb(lifted, 'is', 'are')} at least as accurate as an "
                   "equivalent one, so compared too")
    others = [n for n in pool if n != chosen]
    if not others:
        why.append(f"{chosen} is chosen: no other candidate is accuracy-equivalent")
    elif len(front) == 1:
        runner = min(others, key=lambda n: t[n]["p50_ms"])
        why.append(f"{chosen} is faster than {runner} by more than the spread "
                   f"({_ms(t[chosen]['p50_ms'], t[runner]['p50_ms'])})")
    else:
        rest = [n for n in front if n != chosen]
        sizes = " vs ".join(f"{(ok[n].get('size_bytes') or 0) / 1000:.1f}" for n in [chosen, *rest])
        why.append(f"{_names([chosen, *rest])} are within the latency spread "
                   f"({_ms(*(t[n]['p50_ms'] for n in [chosen, *rest]))}); {chosen} is the "
                   f"smallest ({sizes} kB)")
    return {**out, "reason": "; ".join(why)}


def select_candidate(measurements: dict[str, dict[str, Any]],
                     margin: float = DEFAULT_MARGIN) -> str | None:
    """The name `select_profile` chooses (None when no candidate meets every budget)."""
    return select_profile(measurements, margin)["chosen"]
