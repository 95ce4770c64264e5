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


PLOTS = {"latency": ("latency_ms_p50", "p50 latency (ms)", 1.0),
         "size": ("size_bytes", "ONNX size (kB)", 1e-3)}
# label offsets in points, nearest first: on growing rings the diagonals, the axes, then the
# directions between them
_DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1),
               (1, 0.4), (-1, 0.4), (1, -0.4), (-1, -0.4), (0.4, 1), (-0.4, 1), (0.4, -1),
               (-0.4, -1))
OFFSETS = [(dx * r, dy * r) for r in (3, 8, 14, 22, 32, 44, 58) for dx, dy in _DIRECTIONS]
LEADER_FROM = 14  # points: a label this far from its point gets a line to it


def write_plots(metrics: dict[str, Any], cfg: EvaluateConfig, names: list[str],
                folder: Path) -> list[Path]:
    """Accuracy vs p50 latency and vs size per profile (`draw_plot`), `<profile>-<kind>.png`;
    a skipped profile's plot says why."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for pname in cfg.profiles:
        for kind in PLOTS:
            fig = draw_plot(metrics, cfg, names, pname, kind)
            path = folder / f"{pname}-{kind}.png"
            fig.savefig(path, dpi=fig.dpi)
            plt.close(fig)
            written.append(path)
    return written


def draw_plot(metrics: dict[str, Any], cfg: EvaluateConfig, names: list[str], pname: str,
              kind: str):
    """One figure: per candidate its val accuracy (filled, what selection uses; bar: 95%
    interval, latency spread) and test accuracy (hollow) against ``kind`` (`PLOTS`); green meets
    every budget, red fails one; the selected model ringed; budgets dashed; ONNX Runtime's
    per-call floor dotted when ``metrics["floor"][pname]["latency_ms_p50"]`` is there. Labels
    are placed so that none overlaps another (`place_labels`); the legend sits outside."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    key, xlabel, scale = PLOTS[kind]
    fig, ax = plt.subplots(figsize=(8.5, 4.5), dpi=100)
    if pname in metrics["skipped"]:
        ax.text(0.5, 0.5, f"{pname} skipped:\n{metrics['skipped'][pname]}",
                ha="center", va="center", wrap=True, fontsize=8)
        ax.set_axis_off()
        return fig
    chosen = metrics["selected"].get(pname)
    labels, xs, tests = [], [], []
    for name in names:
        m = metrics[name][pname]
        val, test = m.get("val_accuracy"), m.get("accuracy")
        if m.get(key) is None or (val is None and test is None):
            continue
        x, color = m[key] * scale, "tab:green" if m["meets_budget"] else "tab:red"
        ci, spread = m.get("val_accuracy_ci"), m.get("latency_spread_ms")
        if val is not None:
            xerr = spread / 2 if kind == "latency" and spread else None
            yerr = [[val - ci["ci_low"]], [ci["ci_high"] - val]] if ci else None
            if xerr or yerr:
                ax.errorbar(x, val, xerr=xerr, yerr=yerr, fmt="none", ecolor="grey", lw=0.6,
                            zorder=1)
            ax.scatter(x, val, s=30, color=color, zorder=3)
        if test is not None:
            ax.scatter(x, test, s=30, facecolors="none", edgecolors=color, zorder=3)
            tests.append((x, test))
        val = test if val is None else val  # where the label and the ring go
        if name == chosen:
            ax.scatter(x, val, s=260, facecolors="none", edgecolors="black", linewidths=1.4,
                       zorder=4, gid="selected", label=f"selected for {pname}")
        labels.append((x, val, f"{name} (selected)" if name == chosen else name,
                       {"fontweight": "bold"} if name == chosen else {}))
        xs.append(x)
    if xs and min(xs) > 0 and max(xs) > 20 * min(xs):  # teachers vs students: decades apart
        ax.set_xscale("log")
    budgets = cfg.profiles[pname].budgets
    if budgets.min_accuracy is not None:
        ax.axhline(budgets.min_accuracy, color="grey", ls="--", lw=0.8, label="budget")
    if kind == "size" and budgets.max_size_bytes is not None:
        ax.axvline(budgets.max_size_bytes * scale, color="grey", ls="--", lw=0.8,
                   label=None if budgets.min_accuracy is not None else "budget")
    floor = ((metrics.get("floor") or {}).get(pname) or {}).get("latency_ms_p50")
    if kind == "latency" and floor:
        ax.axvline(floor, color="grey", ls=":", lw=1.2,
                   label=f"ONNX Runtime per-call floor {floor:.3g} ms")
    ax.margins(x=0.12, y=0.15)  # room for the labels inside the frame
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{pname}: accuracy vs {kind}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    handles = [
        Line2D([], [], ls="", marker="o", color="tab:green", label="meets every budget"),
        Line2D([], [], ls="", marker="o", color="tab:red", label="fails a budget"),
        Line2D([], [], ls="", marker="o", color="black",
               label="val accuracy (selection; bar: 95% interval)"),
        Line2D([], [], ls="", marker="o", markerfacecolor="none", color="black",
               label="test accuracy"),
        *ax.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7,
              frameon=False)
    fig.tight_layout()
    unplaced = place_labels(ax, labels, tests)
    if unplaced:  # too crowded to label in place: name them under the legend
        ax.text(1.02, 0.0, "unlabelled (crowded):\n" + "\n".join(unplaced), fontsize=6,
                transform=ax.transAxes, va="bottom")
    return fig


def place_labels(ax, labels: list[tuple[float, float, str, dict[str, Any]]],
                 points: list[tuple[float, float]] = (), fontsize: float = 7) -> list[str]:
    """Annotate each (x, y, text, text kwargs) of ``labels`` on ``ax``: each text takes the
    nearest `OFFSETS` spot whose box stays inside the axes and overlaps no marker (at the
    labels' and ``points``' data coordinates) and no label placed before it. Call it once the
    figure's layout is final. Returns the texts that found no spot (left unplaced)."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pt = ax.figure.dpi / 72  # pixels per point
    r = 4 * pt  # half a marker, pixels
    xy = [(x, y) for x, y, *_ in labels] + list(points)
    taken = [Bbox.from_bounds(u - r, v - r, 2 * r, 2 * r)
             for u, v in (ax.transData.transform(xy) if xy else [])]
    unplaced = []
    # bold (selected) first, then top to bottom: the label that matters gets the best spot
    for x, y, text, kwargs in sorted(labels, key=lambda t: (not t[3], -t[1])):
        for dx, dy in OFFSETS:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                              fontsize=fontsize, va="center" if abs(dy) < abs(dx) / 2
                              else "bottom" if dy > 0 else "top",
                              ha="center" if abs(dx) < abs(dy) / 2 else "left" if dx > 0
                              else "right",
                              **kwargs)
            box = ann.get_window_extent(renderer)
            inside = (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0
                      and box.y1 <= frame.y1)
            if inside and not any(box.overlaps(t) for t in taken):
                taken.append(box)
                if max(abs(dx), abs(dy)) >= LEADER_FROM:  # far from its point: a leader line
                    u, v = ax.transData.transform((x, y))
                    end = ax.transData.inverted().transform((u + dx * pt, v + dy * pt))
                    ax.plot([x, end[0]], [y, end[1]], color="grey", lw=0.4, zorder=2,
                            scalex=False, scaley=False)
                break
            ann.remove()
        else:
            unplaced.append(text)
    return unplaced


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
