"""`bench.report.draw_plot` on a constructed bench result: the trade-off figure reads at a
glance (no colliding labels, a legend, the selected model ringed, ONNX Runtime's floor)."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib import pyplot as plt

from bench.report import PROFILE, draw_plot, write_plot
from tests.components.evaluation.test_report import assert_no_label_overlaps

# name: (kind, test accuracy, p50 ms at 1 thread batch 1, size bytes); a digits-like spread
MODELS = {"teacher-wide_cnn": ("teacher", 0.991, 1.10, 420_000),
          "teacher-resnet": ("teacher", 0.987, 0.85, 310_000),
          "teacher-mlp": ("teacher", 0.97, 0.30, 150_000),
          "ensemble": ("ensemble", 0.993, 2.40, 880_000),
          "student-alone": ("student", 0.975, 0.031, 9_800),
          "student": ("student", 0.981, 0.031, 9_800), "pruned": ("student", 0.98, 0.029, 6_900),
          "fp32": ("quantized", 0.98, 0.028, 6_800), "fp16": ("quantized", 0.979, 0.029, 3_600),
          "int8_dynamic": ("quantized", 0.978, 0.027, 2_300),
          "fp16int8_dynamic_student": ("quantized", 0.979, 0.027, 2_400)}


def bench_result() -> dict:
    rows = {n: {"kind": k, "accuracy": a, "1t-b1.latency_ms_p50": p50, "size_bytes": size}
            for n, (k, a, p50, size) in MODELS.items()}
    rows["identity"] = {"kind": "floor", "accuracy": None, "1t-b1.latency_ms_p50": 0.012,
                        "size_bytes": 120}
    return {"meta": {"dataset": "digits"}, "compression": {"rows": rows},
            "selected": "int8_dynamic"}


def test_bench_plot_labels_every_model_without_overlaps_with_legend_selected_and_floor():
    fig = draw_plot(bench_result())
    try:
        for ax in fig.axes:
            assert {t.get_text() for t in ax.texts} == (
                set(MODELS) - {"int8_dynamic"} | {"int8_dynamic (selected)"})
            ring = [c for c in ax.collections if c.get_gid() == "selected"]
            assert len(ring) == 1
        assert ring[0].get_offsets()[0].tolist() == pytest.approx([2.3, 0.978])  # size axis
        assert_no_label_overlaps(fig)
        assert len(fig.legends) == 1
        legend_box = fig.legends[0].get_window_extent(fig.canvas.get_renderer())
        assert not any(legend_box.overlaps(ax.get_window_extent()) for ax in fig.axes)
        entries = [t.get_text() for t in fig.legends[0].get_texts()]
        assert entries[:4] == ["teacher", "ensemble", "student", "quantized"]
        assert f"selected for {PROFILE}" in entries
        assert "ONNX Runtime per-call floor 0.012 ms (identity graph)" in entries
        floors = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == ":"]
        assert [ln.get_xdata()[0] for ln in floors] == [0.012]
    finally:
        plt.close(fig)


def test_bench_plot_is_written_as_png(tmp_path: Path):
    path = write_plot(bench_result(), tmp_path / "out" / "digits.png")
    assert path.read_bytes().startswith(b"\x89PNG")
