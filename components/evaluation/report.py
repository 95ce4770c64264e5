"""The evaluation report: `evaluate.md` (one table per profile) and its plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.config import EvaluateConfig


def render_report(metrics: dict[str, Any], cfg: EvaluateConfig, names: list[str]) -> str:
    """Markdown: per profile its budgets, one table row per candidate (val accuracy with its
    95% interval, test beside it, p50 +- spread; the selected one in bold) and the reason."""
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
                  "| candidate | val accuracy | test accuracy | p50 ms +- spread | p95 ms | p99 ms "
                  "| samples/s | size kB | peak RSS MiB | model RSS MiB | budgets |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        chosen = metrics["selected"].get(pname)
        selection = (metrics.get("selection") or {}).get(pname) or {}
        for name in names:
            m = metrics[name][pname]
            label = f"**{name}** (selected)" if name == chosen else name
            if name == selection.get("reference") and name != chosen:
                label += " (reference)"
            size = m["size_bytes"] / 1000 if m["size_bytes"] is not None else None
            lines.append(
                f"| {label} | {_acc(m.get('val_accuracy'), m.get('val_accuracy_ci'))} "
                f"| {_acc(m['accuracy'], m.get('accuracy_ci'))} | {_latency(m)} "
                f"| {_fmt(m['latency_ms_p95'], '.3f')} | {_fmt(m['latency_ms_p99'], '.3f')} "
                f"| {_fmt(m['throughput_per_s'], '.0f')} | {_fmt(size, '.1f')} "
                f"| {_fmt(m['peak_rss_mb'], '.1f')} | {_fmt(m['model_rss_mb'], '.1f')} "
                f"| {_verdict(m)} |")
        files = sorted({m.get("model_file") for n in names
                        if (m := metrics[n][pname]).get("model_file")})
        if files:
            lines += ["", f"Model files run: {', '.join(files)}"]
        why = selection.get("reason") or "best val accuracy within budgets, then lowest p50"
        lines += ["", f"Selected: {chosen or 'none (no candidate meets every budget)'}"
                  + (f" ({why})" if chosen else ""), ""]
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
                    x, y = m[key] * scale, m["accuracy"]
                    ci, spread = m.get("accuracy_ci"), m.get("latency_spread_ms")
                    if ci or (kind == "latency" and spread):  # 95% interval, latency spread
                        ax.errorbar(x, y, xerr=spread / 2 if kind == "latency" and spread
                                    else None, yerr=[[y - ci["ci_low"]], [ci["ci_high"] - y]]
                                    if ci else None, fmt="none", ecolor="grey", lw=0.6)
                    ax.scatter(x, y, marker="o" if m["meets_budget"] else "x",
                               color="tab:green" if m["meets_budget"] else "tab:red")
                    chosen = name == metrics["selected"].get(pname)
                    ax.annotate(f"{name} (selected)" if chosen else name, (x, y), fontsize=7,
                                xytext=(3, 3), textcoords="offset points",
                                fontweight="bold" if chosen else "normal")
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
                ax.set_title(f"{pname}: accuracy vs {kind} (o meets budgets, x fails; "
                             "-- budget; bars: 95% interval, spread)", fontsize=9)
                ax.grid(alpha=0.3)
            path = folder / f"{pname}-{kind}.png"
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
    return written


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _acc(value: float | None, ci: dict[str, Any] | None) -> str:
    """"0.9888 [0.968, 0.996] n=269" (the 95% Wilson interval), or the bare value."""
    if value is None or not ci:
        return _fmt(value, ".4f")
    return f"{value:.4f} [{ci['ci_low']:.3f}, {ci['ci_high']:.3f}] n={ci['n']}"


def _latency(m: dict[str, Any]) -> str:
    spread = m.get("latency_spread_ms")
    text = _fmt(m.get("latency_ms_p50"), ".4f")
    return text if spread is None or m.get("latency_ms_p50") is None else f"{text} +- {spread:.4f}"


def _verdict(m: dict[str, Any]) -> str:
    """"ok", or the broken budgets; a budget passed within the noise says how sure."""
    near = [e["note"] + " (within the noise)" for e in (m.get("budget_margin") or {}).values()
            if e.get("verdict") != "fails"]
    text = "ok" if m["meets_budget"] else "; ".join(m["failed_budgets"])
    return text + (": " + "; ".join(near) if near else "")
