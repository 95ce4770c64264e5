"""`components.evaluation.report` on constructed metrics: the markdown tables and the plots."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.config import Budgets, DeviceProfile, EvaluateConfig
from components.evaluation.report import render_report, write_plots

CFG = EvaluateConfig(profiles={
    "cpu": DeviceProfile(threads=1, batch_size=4, budgets=Budgets(min_accuracy=0.9)),
    "gpu": DeviceProfile(providers=["CUDAExecutionProvider"], batch_size=8),
})


def measured(acc: float | None, failed: list[str] | None = None) -> dict:
    return {"val_accuracy": acc, "accuracy": acc, "latency_ms_p50": 0.1, "latency_ms_p95": 0.2,
            "latency_ms_p99": 0.3, "throughput_per_s": 5000.0, "size_bytes": 4000,
            "peak_rss_mb": 60.0, "model_rss_mb": 2.0, "meets_budget": not failed,
            "failed_budgets": failed or []}


def metrics(selected: str | None = "good") -> dict:
    return {"good": {"cpu": measured(0.99)},
            "weak": {"cpu": measured(0.4, ["val_accuracy 0.4 < 0.9"])},
            "selected": {"cpu": selected, "gpu": None},
            "skipped": {"gpu": "CUDAExecutionProvider not available"},
            "baseline_rss_mb": {"cpu": 58.0}}


def test_report_has_one_table_per_profile_with_the_selected_candidate_in_bold():
    report = render_report(metrics(), CFG, ["good", "weak"])
    assert "## cpu" in report and "## gpu" in report
    assert "budgets: min_accuracy 0.9" in report
    assert "| **good** (selected) | 0.9900 | 0.9900 |" in report
    assert "| weak | 0.4000 |" in report and "| val_accuracy 0.4 < 0.9 |" in report
    assert "Baseline RSS (onnxruntime + data, no model): 58.0 MiB" in report
    assert "Selected: good" in report
    assert "Skipped: CUDAExecutionProvider not available" in report


def test_report_says_when_no_candidate_meets_every_budget():
    report = render_report(metrics(selected=None), CFG, ["good", "weak"])
    assert "**good**" not in report
    assert "Selected: none (no candidate meets every budget)" in report


def test_plots_are_written_per_profile_and_kind_even_for_a_skipped_profile(tmp_path: Path):
    written = write_plots(metrics(), CFG, ["good", "weak"], tmp_path / "plots")
    assert sorted(p.name for p in written) == [
        "cpu-latency.png", "cpu-size.png", "gpu-latency.png", "gpu-size.png"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in written)
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


def test_report_shows_intervals_spread_the_reason_and_near_budgets():
    m = metrics()
    ci = {"accuracy": 0.99, "n": 269, "ci_low": 0.973, "ci_high": 0.998, "confidence": 0.95}
    m["good"]["cpu"].update(val_accuracy_ci=ci, accuracy_ci=ci, latency_spread_ms=0.002,
                            model_file="model.cpu.ort", budget_margin={"latency_ms_p95": {
                                "note": "p95 0.2 ms +- 0.01 vs budget 0.2",
                                "verdict": "passes within the noise"}})
    m["selection"] = {"cpu": {"reference": "weak", "chosen": "good",
                              "reason": "good is faster than weak by more than the spread"}}
    report = render_report(m, CFG, ["good", "weak"])
    assert ("| **good** (selected) | 0.9900 [0.973, 0.998] n=269 | 0.9900 [0.973, 0.998] n=269 "
            "| 0.1000 +- 0.0020 |") in report
    assert "| weak (reference) |" in report
    assert "ok: p95 0.2 ms +- 0.01 vs budget 0.2 (within the noise)" in report
    assert "Model files run: model.cpu.ort" in report
    assert "Selected: good (good is faster than weak by more than the spread)" in report


# what a digits run yields: teachers decades slower than students, quantized variants stacked
CROWD = {"teacher-wide_cnn": (0.995, 0.991, 1.10, 420_000), "teacher-resnet": (0.99, 0.987,
         0.85, 310_000), "teacher-mlp": (0.975, 0.97, 0.30, 150_000),
         "ensemble": (0.997, 0.993, 2.40, 880_000), "student": (0.985, 0.981, 0.031, 9_800),
         "pruned": (0.983, 0.98, 0.029, 6_900), "fp32": (0.983, 0.98, 0.028, 6_800),
         "fp16": (0.983, 0.979, 0.029, 3_600), "int8_dynamic": (0.981, 0.978, 0.027, 2_300),
         "int8_static": (0.98, 0.978, 0.026, 2_200),
         "fp16int8_dynamic_student": (0.982, 0.979, 0.027, 2_400)}


def crowded_metrics() -> dict:
    m = {"selected": {"cpu": "int8_dynamic", "gpu": None}, "skipped": {"gpu": "no CUDA"},
         "baseline_rss_mb": {"cpu": 58.0}, "floor": {"cpu": {"latency_ms_p50": 0.012}}}
    for name, (val, test, p50, size) in CROWD.items():
        row = measured(test) | {"val_accuracy": val, "latency_ms_p50": p50, "size_bytes": size,
                                "latency_spread_ms": p50 / 20, "val_accuracy_ci": {
                                    "ci_low": val - 0.01, "ci_high": min(1.0, val + 0.008)}}
        m[name] = {"cpu": row}
    m["teacher-mlp"]["cpu"].update(meets_budget=False, failed_budgets=["size"])
    return m


def _label_boxes(fig) -> list[tuple[str, object]]:
    """(text, window box) of every drawn tick label and annotation of ``fig``."""
    from matplotlib.text import Annotation

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []
    for ax in fig.axes:
        ticks = []
        for axis in (ax.xaxis, ax.yaxis):  # tick objects outside the view are kept, not drawn
            lo, hi = sorted(axis.get_view_interval())
            ticks += [t.label1 for t in axis.get_major_ticks() + axis.get_minor_ticks()
                      if t.get_loc() is not None and lo <= t.get_loc() <= hi
                      and t.label1.get_visible() and t.label1.get_text()]
        notes = [c for c in ax.get_children() if isinstance(c, Annotation)]
        boxes += [(t.get_text(), t.get_window_extent(renderer)) for t in ticks + notes]
    return boxes


def assert_no_label_overlaps(fig) -> None:
    boxes = _label_boxes(fig)
    clashes = [(a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1:]
               if box.overlaps(other)]
    assert not clashes, f"overlapping labels: {clashes}"


def test_plots_label_every_candidate_without_overlaps_with_legend_selected_and_floor():
    from matplotlib import pyplot as plt

    from components.evaluation.report import draw_plot

    m = crowded_metrics()
    for kind in ("latency", "size"):
        fig = draw_plot(m, CFG, list(CROWD), "cpu", kind)
        ax = fig.axes[0]
        notes = {t.get_text() for t in ax.texts}
        assert notes == {n for n in CROWD if n != "int8_dynamic"} | {"int8_dynamic (selected)"}
        assert_no_label_overlaps(fig)
        legend = ax.get_legend()
        assert legend is not None
        entries = [t.get_text() for t in legend.get_texts()]
        assert "selected for cpu" in entries and "test accuracy" in entries
        assert any(e.startswith("val accuracy") for e in entries)
        ring = [c for c in ax.collections if c.get_gid() == "selected"]
        assert len(ring) == 1
        val, _, p50, size = CROWD["int8_dynamic"]
        assert ring[0].get_offsets()[0].tolist() == pytest.approx(
            [p50 if kind == "latency" else size / 1000, val])  # on its val accuracy
        floors = [e for e in entries if e.startswith("ONNX Runtime per-call floor")]
        assert floors == (["ONNX Runtime per-call floor 0.012 ms"] if kind == "latency" else [])
        plt.close(fig)
