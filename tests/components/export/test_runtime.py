"""`components.export.runtime`: the tie rule and which ORT file a profile runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.config import DeviceProfile
from components.core.host import host_isa
from components.export.onnx_utils import export_onnx, save_ort
from components.export.runtime import (
    choose,
    cpu_profiles,
    ort_target,
    thread_counts,
    tune_profile,
)
from components.modeling.architectures import build_model
from tests.helpers_models import DIGITS_ARCH, make_digits


def _t(p50: float, spread: float) -> dict:
    return {"p50_ms": p50, "spread_ms": spread, "p95_ms": p50 + spread}


def test_choose_keeps_the_default_when_the_fastest_is_inside_the_spread():
    table = {"default": _t(1.00, 0.05), "other": _t(0.93, 0.03)}  # 0.93 + 0.08 > 1.00
    assert choose(table, ["default", "other"]) == "default"


def test_choose_takes_a_candidate_faster_by_more_than_both_spreads():
    table = {"default": _t(1.00, 0.05), "other": _t(0.80, 0.03)}
    assert choose(table, ["default", "other"]) == "other"


def test_choose_prefers_the_simplest_of_those_tied_with_the_fastest():
    table = {"default": _t(1.00, 0.01), "simple": _t(0.52, 0.05), "fastest": _t(0.50, 0.01),
             "slow": _t(2.0, 0.0)}
    assert choose(table, ["default", "simple", "fastest", "slow"]) == "simple"
    assert choose(table, ["default", "fastest", "simple", "slow"]) == "fastest"


def test_choose_ignores_candidates_that_were_not_measured():
    table = {"b": _t(1.0, 0.0)}  # e.g. `a` was rejected by the parity check
    assert choose(table, ["a", "b"]) == "b"


def test_thread_counts_try_one_and_all_cores_only_for_a_profile_at_zero():
    assert thread_counts(0, 8) == [0, 1, 8]
    assert thread_counts(0, 1) == [0, 1]
    assert thread_counts(1, 8) == [1] and thread_counts(4, 8) == [4]


def test_ort_target_optimises_for_the_host_isa_only():
    assert ort_target(DeviceProfile(isa="x86-avx512"), "x86-avx512") == (
        "model.x86-avx512.ort", "host")
    assert ort_target(DeviceProfile(isa="x86"), "x86-avx512") == ("model.ort", "portable")
    assert ort_target(DeviceProfile(isa="arm64"), "x86-avx512") == ("model.ort", "portable")
    assert ort_target(DeviceProfile(isa="arm64"), "arm64") == ("model.ort", "portable")


def test_cpu_profiles_leave_out_other_providers():
    profiles = {"cpu": DeviceProfile(), "gpu": DeviceProfile(providers=["CUDAExecutionProvider"])}
    assert list(cpu_profiles(profiles)) == ["cpu"]


@pytest.mark.skipif(not host_isa().startswith("x86"), reason="NCHWc blocking is x86 only")
def test_save_ort_host_target_keeps_the_nchwc_layout_and_portable_does_not(tmp_path: Path):
    data = make_digits()
    model = build_model(DIGITS_ARCH.model_copy(update={"channels": [16, 16]}), data.in_shape, 10,
                        data.mean, data.std)
    src = export_onnx(model, data.in_shape, tmp_path / "m.onnx")
    host = save_ort(src, tmp_path / "host.ort", "host").read_bytes()
    portable = save_ort(src, tmp_path / "portable.ort", "portable").read_bytes()
    assert b"ReorderOutput" in host or b"ReorderInput" in host
    assert b"ReorderOutput" not in portable and b"ReorderInput" not in portable


def test_tune_profile_never_times_a_rejected_config_and_measures_each_axis(tmp_path: Path):
    data = make_digits()
    model = build_model(DIGITS_ARCH, data.in_shape, 10, data.mean, data.std)
    export_onnx(model, data.in_shape, tmp_path / "model.onnx")
    save_ort(tmp_path / "model.onnx", tmp_path / "model.ort", "portable")
    verdicts = iter(["outputs differ"])  # the first session opened (the default) fails parity

    entry = tune_profile(tmp_path, DeviceProfile(threads=0, batch_size=2), "model.ort",
                         data.test.x[:2], lambda session: next(verdicts, None), cores=2)
    rejected = [c for c in entry["candidates"] if "rejected" in c]
    assert [(c["model_file"], c["graph_optimization_level"]) for c in rejected] == [
        ("model.ort", "all")]
    assert (entry["model_file"], entry["graph_optimization_level"]) != ("model.ort", "all")
    timed = [c for c in entry["candidates"] if "rejected" not in c]
    assert len([c for c in timed if c["axis"] == "file+level"]) == 5
    assert {c["intra_op_num_threads"] for c in timed if c["axis"] == "threads"} == {0, 1, 2}
    if entry["intra_op_num_threads"] != 1:
        assert {c["allow_spinning"] for c in timed if c["axis"] == "spinning"} == {True, False}
    assert entry["batch_size"] == 2 and entry["p50_ms"] > 0
