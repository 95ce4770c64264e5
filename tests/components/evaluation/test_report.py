"""`components.evaluation.report` on constructed metrics: the markdown tables and the plots."""

from __future__ import annotations

from pathlib import Path

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
