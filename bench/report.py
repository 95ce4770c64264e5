"""The bench's verdicts and outputs: goals met or missed (with why), markdown report, plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.compression import IDENTITY

FRESH_MAX_S = 300.0
NOOP_MAX_S = 5.0
OVERHEAD_MAX = 0.10
ACCURACY_POINTS = 1.0
SMALLER_X = 50.0
FASTER_X = 5.0
PROFILE = "edge-1core"


def _goal(name: str, target: str, value: str, met: bool | None, why: str = "") -> dict[str, Any]:
    return {"goal": name, "target": target, "value": value,
            "status": "not measured" if met is None else "met" if met else "missed",
            "why": "" if met else why}


def pipeline_goals(p: dict[str, Any]) -> list[dict[str, Any]]:
    fresh, noop = p["dvc"]["fresh"], p["dvc"]["noop"]
    slow = sorted(fresh["stages"].items(), key=lambda kv: -(kv[1]["compute_s"] or 0))[:3]
    goals = [
        _goal("fresh `dvc repro`", f"< {FRESH_MAX_S:g} s", f"{fresh['wall_s']:.1f} s",
              fresh["wall_s"] < FRESH_MAX_S,
              f"stage compute {fresh['stage_compute_s']:.1f} s (slowest: "
              + ", ".join(f"{n} {v['compute_s']:.1f} s" for n, v in slow)
              + f"); {fresh['wall_s'] - fresh['stage_compute_s']:.1f} s outside stage compute "
              f"(process start-up, imports, MLflow logging, DVC hashing)"),
        _goal("no-op `dvc repro`", f"< {NOOP_MAX_S:g} s", f"{noop['wall_s']:.2f} s",
              noop["wall_s"] < NOOP_MAX_S,
              f"`dvc version` alone takes {p['floor']['dvc_version_s']:.2f} s on this machine"),
    ]
    overhead = p.get("orchestration_overhead")
    if overhead is None:
        goals.append(_goal("orchestration overhead", f"< {OVERHEAD_MAX:.0%}", "-", None))
    else:
        flow = p["flow"]["fresh"]
        startup = flow["startup_s"] or 0.0
        goals.append(_goal(
            "orchestration overhead", f"< {OVERHEAD_MAX:.0%} of the fresh run",
            f"{overhead:.1%} ((flow {flow['wall_s']:.1f} s - compute "
            f"{flow['stage_compute_s']:.1f} s) / fresh {p['dvc']['fresh']['wall_s']:.1f} s)",
            overhead < OVERHEAD_MAX,
            f"the flow spends {startup:.1f} s before its first stage run (imports, flow run "
            f"creation against {p['prefect_api']}) and "
            f"{flow['wall_s'] - flow['stage_compute_s'] - startup:.1f} s between and around "
            f"stages (DVC status and commit, worker start-up, MLflow logging); plain `dvc "
            f"repro` spends {p['dvc_overhead']:.0%} of its wall time outside stage compute"))
    return goals


def model_goals(comp: dict[str, Any], selected: str | None,
                why_none: str = "") -> list[dict[str, Any]]:
    rows = comp["rows"]
    ens = rows["ensemble"]
    names = ("accuracy within 1 point of the ensemble", "50x smaller than the ensemble",
             "5x faster than the ensemble (p50, 1 thread, batch 1)")
    if selected is None or selected not in rows:
        return [_goal(n, "", "no model selected", False, why_none) for n in names]
    row = rows[selected]
    drop = 100 * (ens["accuracy"] - row["accuracy"])
    smaller = comp["teachers_size_bytes"] / row["size_bytes"]
    ens_p50, p50 = ens["1t-b1.latency_ms_p50"], row["1t-b1.latency_ms_p50"]
    floor = rows[IDENTITY]["1t-b1.latency_ms_p50"]
    faster = ens_p50 / p50 if p50 else 0.0
    return [
        _goal(names[0], f"<= {ACCURACY_POINTS:g} point below",
              f"{selected} {row['accuracy']:.4f} vs ensemble {ens['accuracy']:.4f} "
              f"({-drop:+.2f} points)", drop <= ACCURACY_POINTS + 1e-9,
              f"{selected} misclassifies {drop:.2f} points more of the test split"),
        _goal(names[1], f">= {SMALLER_X:g}x (sum of teacher files)",
              f"{smaller:.1f}x ({comp['teachers_size_bytes'] / 1e3:.0f} kB / "
              f"{row['size_bytes'] / 1e3:.1f} kB)", smaller >= SMALLER_X,
              f"{selected} is {row['size_bytes'] / 1e3:.1f} kB ({row['params']} parameters)"),
        _goal(names[2], f">= {FASTER_X:g}x", f"{faster:.2f}x ({ens_p50:.3f} ms / {p50:.3f} ms)",
              faster >= FASTER_X,
              f"ONNX Runtime's own per-call floor (identity graph) is {floor:.3f} ms, so no "
              f"model can be more than {ens_p50 / floor:.1f}x faster than the ensemble here; "
              f"{selected}'s own compute is about {p50 - floor:.3f} ms of its {p50:.3f} ms"),
    ]


def _f(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def render_markdown(result: dict[str, Any]) -> str:
    """The human-readable report of a bench result (the JSON has every figure)."""
    meta, comp, kd = result["meta"], result["compression"], result["distillation"]
    lines = [f"# Distillery bench: {meta['dataset']}", "",
             f"{meta['date']}; {meta['machine']}; commit `{meta['commit'][:12]}`"
             f"{' (QUICK mode: tiny parameters, goals not meaningful)' if meta['quick'] else ''}"
             ".", "", f"Source: `{meta['source']}`"
             f"{' ' + meta['path'] if meta.get('path') else ''}. "
             f"Command: `{meta['command']}`.", ""]
    if meta["uncommitted"]:
        lines += [f"Note: the bench measured the committed HEAD; {len(meta['uncommitted'])} "
                  f"tracked file(s) differ in the working tree: "
                  f"{', '.join(meta['uncommitted'][:8])}.", ""]
    lines += ["## Goals", "", "| goal | target | measured | status | why (when missed) |",
              "|---|---|---|---|---|"]
    lines += [f"| {g['goal']} | {g['target']} | {g['value']} | **{g['status']}** | {g['why']} |"
              for g in result["goals"]]
    p = result["pipeline"]
    lines += ["", "## Pipeline cost", "",
              f"Wall times of commands in fresh clones (`{p['changed_key']}` halved for the "
              f"change run). Stage compute: sum of the stages' `stage_seconds` (MLflow); MLflow "
              f"run time includes logging. Tool start-up: `dvc version` "
              f"{p['floor']['dvc_version_s']:.2f} s, `distillery --help` "
              f"{p['floor']['distillery_help_s']:.2f} s.", "",
              "| chain | run | wall s | stages run | stage compute s | MLflow run s "
              "| start-up s |", "|---|---|---|---|---|---|---|"]
    for chain in ("dvc", "flow"):
        if not p.get(chain):
            lines.append(f"| {chain} | skipped | | | | | |")
            continue
        for run in ("fresh", "noop", "changed"):
            r = p[chain][run]
            lines.append(f"| {chain} | {run} | {r['wall_s']:.2f} | {len(r['stages_ran'])} "
                         f"| {r['stage_compute_s']:.1f} | {r['stage_run_s']:.1f} "
                         f"| {_f(r['startup_s'], '.1f')} |")
    lines += ["", f"Plain `dvc repro` spends {p['dvc_overhead']:.1%} of its fresh wall time "
              f"outside stage compute. Flow chain's Prefect API: {p['prefect_api']}; stages run "
              f"in warm worker processes (`flows/workers.py`)."]
    temporary = p.get("temporary_server_noop")
    if temporary and p.get("flow"):
        lines += [f"Without a Prefect server (Prefect's temporary local server, started per "
                  f"run) a no-op flow takes {temporary['wall_s']:.1f} s against "
                  f"{p['flow']['noop']['wall_s']:.1f} s with one."]
    if p.get("orchestration_overhead") is not None:
        lines += [f"Orchestration overhead (flow wall - stage compute) / fresh dvc wall: "
                  f"{p['orchestration_overhead']:.1%}; the flow takes "
                  f"{p['flow_vs_dvc']:+.1%} wall time against plain `dvc repro`."]
    lines += ["", "## Compression", "",
              f"ONNX Runtime {comp.get('onnxruntime', '')}, {comp['runs']} timed calls after "
              f"{comp['warmup']} warm-up, each model in its own process, "
              f"{comp.get('rounds', 1)} interleaved round(s) per model and setting (the round "
              f"with the median p50 is shown). `1t-b1`: 1 thread, "
              f"batch 1; `all-b64`: all cores, batch 64. RSS: peak of the measuring process "
              f"(model: minus a process with onnxruntime and the data but no model).", "",
              "| model | kind | accuracy | params | MACs | size kB | p50 ms 1t-b1 | p95 ms 1t-b1 "
              "| img/s 1t-b1 | p50 ms b64 | p95 ms b64 | img/s b64 | peak RSS MiB "
              "| model RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    selected = result.get("selected")
    for name, r in comp["rows"].items():
        label = f"**{name}** (selected)" if name == selected else name
        lines.append(
            f"| {label} | {r['kind']} | {_f(r['accuracy'], '.4f')} | {_f(r['params'], ',')} "
            f"| {_f(r['macs'], ',')} | {r['size_bytes'] / 1e3:.1f} "
            f"| {_f(r['1t-b1.latency_ms_p50'], '.3f')} | {_f(r['1t-b1.latency_ms_p95'], '.3f')} "
            f"| {_f(r['1t-b1.throughput_per_s'], ',.0f')} "
            f"| {_f(r['all-b64.latency_ms_p50'], '.3f')} | {_f(r['all-b64.latency_ms_p95'], '.3f')}"
            f" | {_f(r['all-b64.throughput_per_s'], ',.0f')} | {_f(r['1t-b1.peak_rss_mb'], '.1f')}"
            f" | {_f(r['1t-b1.model_rss_mb'], '.1f')} |")
    for label, ref in comp["references"].items():
        lines += ["", f"Against the {label} (`{ref}`): x smaller file / fewer params / fewer MACs "
                  "/ faster p50 (1t-b1) / throughput (b64), accuracy difference in points.", "",
                  "| model | size | params | MACs | p50 1t | throughput b64 | accuracy pts |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in comp["rows"].items():
            if r["kind"] == "floor":
                continue
            q = r["ratios"][label]
            lines.append(f"| {name} | {_f(q['size_x_smaller'], '.1f')}x "
                         f"| {_f(q['params_x_fewer'], '.1f')}x | {_f(q['macs_x_fewer'], '.1f')}x "
                         f"| {_f(q['p50_1t_x_faster'], '.2f')}x "
                         f"| {_f(q['throughput_b64_x'], '.2f')}x "
                         f"| {_f(q['accuracy_delta_points'], '+.2f')} |")
    floor = comp["rows"][IDENTITY]
    lines += ["", f"ONNX Runtime's per-call floor (identity graph, same input): p50 "
              f"{floor['1t-b1.latency_ms_p50']:.4f} ms at 1 thread batch 1, "
              f"{floor['all-b64.latency_ms_p50']:.4f} ms at all cores batch 64.", "",
              f"![trade-offs]({meta['dataset']}.png)", "",
              "## Distillation gain", "",
              f"{kd['seeds']} seed(s) from {kd['first_seed']}; student {kd['config']['student']}, "
              f"T={kd['config']['temperature']:g}, alpha={kd['config']['alpha']:g}, "
              f"{kd['config']['epochs']} epochs max; {kd['seconds']:.0f} s in all. "
              "Test accuracy.", "",
              "| student trained | mean | std | min | max | gain vs alone (points) |",
              "|---|---|---|---|---|---|"]
    for label, r in kd["rows"].items():
        mark = " (best single)" if label == kd["best_single_teacher"] else \
            " (best multi)" if label == kd["best_multi_teacher"] else ""
        lines.append(f"| {label}{mark} | {r['mean']:.4f} | {r['std']:.4f} | {r['min']:.4f} "
                     f"| {r['max']:.4f} | {r['gain_points']:+.2f} |")
    return "\n".join(lines) + "\n"


KIND_COLORS = {"teacher": "tab:blue", "ensemble": "tab:purple", "student": "tab:orange",
               "quantized": "tab:green"}


def write_plot(result: dict[str, Any], path: Path) -> Path:
    """`draw_plot` saved as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw_plot(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi)
    plt.close(fig)
    return path


def draw_plot(result: dict[str, Any]):
    """Test accuracy vs p50 latency (1 thread, batch 1) and vs ONNX size, log x, one point a
    model coloured by kind, the selected one ringed, ONNX Runtime's per-call floor (identity
    graph) dotted; labels placed without overlaps (`place_labels`), the legend on the right."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from components.evaluation.report import place_labels

    rows = {n: r for n, r in result["compression"]["rows"].items() if r["accuracy"] is not None}
    selected = result.get("selected")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), dpi=100)
    floor_label = None
    for ax, key, xlabel, scale in (
            (axes[0], "1t-b1.latency_ms_p50", "p50 latency, 1 thread, batch 1 (ms)", 1.0),
            (axes[1], "size_bytes", "ONNX file size (kB)", 1e-3)):
        for name, r in rows.items():
            if r.get(key) is None:
                continue
            x = r[key] * scale
            ax.scatter(x, r["accuracy"], s=30, color=KIND_COLORS.get(r["kind"], "grey"),
                       zorder=3)
            if name == selected:
                ax.scatter(x, r["accuracy"], s=260, facecolors="none", edgecolors="black",
                           linewidths=1.4, zorder=4, gid="selected")
        floor = result["compression"]["rows"][IDENTITY].get(key) if key.startswith("1t") else None
        if floor:
            floor_label = f"ONNX Runtime per-call floor {floor:.3g} ms (identity graph)"
            ax.axvline(floor, color="grey", ls=":", lw=1.2)
        ax.set_xscale("log")
        ax.margins(x=0.12, y=0.15)  # room for the labels inside the frame
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3, which="both")
    order = list(KIND_COLORS)  # known kinds in pipeline order, then any other by name
    kinds = sorted({r["kind"] for r in rows.values()},
                   key=lambda k: (order.index(k) if k in order else len(order), k))
    handles = [Line2D([], [], ls="", marker="o", color=KIND_COLORS.get(k, "grey"), label=k)
               for k in kinds]
    if selected in rows:
        handles.append(Line2D([], [], ls="", marker="o", markersize=14, markerfacecolor="none",
                              color="black", label=f"selected for {PROFILE}"))
    if floor_label:
        handles.append(Line2D([], [], ls=":", color="grey", label=floor_label))
    legend = fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(f"{result['meta']['dataset']}: accuracy vs latency and size", fontsize=10)
    width = legend.get_window_extent(fig.canvas.get_renderer()).width / fig.bbox.width
    fig.tight_layout(rect=(0, 0, 0.99 - width, 1))  # the axes end where the legend begins
    for ax, key, scale in ((axes[0], "1t-b1.latency_ms_p50", 1.0), (axes[1], "size_bytes", 1e-3)):
        labels = [(r[key] * scale, r["accuracy"], f"{n} (selected)" if n == selected else n,
                   {"fontweight": "bold"} if n == selected else {})
                  for n, r in rows.items() if r.get(key) is not None]
        unplaced = place_labels(ax, labels)
        if unplaced:  # too crowded to label in place: name them below the axes
            ax.text(0.0, -0.25, "unlabelled (crowded): " + ", ".join(unplaced), fontsize=6,
                    transform=ax.transAxes, va="top")
    return fig
