"""`int8`'s choice on constructed accuracy/timing tables, and the grid it searches.

No onnxruntime here: `choose_int8` decides on figures, so every rule is checked on a table built
to break it.
"""

from __future__ import annotations

import numpy as np

from components.config import QuantizeConfig
from components.config.deployment import DeviceProfile
from components.quantization.int8 import accuracy_fields, candidate_grid, choose_int8, rejection

N = 1000
REFERENCE = np.arange(N) >= 50  # fp32: 95% right
FP32 = {"p50_ms": 1.0, "spread_ms": 0.02}


def correctness(flips: int) -> np.ndarray:
    """fp32's correctness with ``flips`` of its right answers made wrong."""
    out = REFERENCE.copy()
    out[100 : 100 + flips] = False
    return out


def cand(fmt: str = "U8S8", p50: float = 0.5, flips: int = 0, margin: float = 0.005,
         spread: float = 0.02, **extra) -> dict:
    return {"format": fmt, "per_channel": False, "method": "minmax", "quant_format": "QDQ",
            "p50_ms": p50, "spread_ms": spread,
            **accuracy_fields(REFERENCE, correctness(flips), margin), **extra}


def test_choose_int8_keeps_the_fastest_passing_candidate():
    table = [cand(p50=0.8), cand("S8S8", p50=0.4), cand(p50=0.6), cand(p50=0.1, flips=40)]
    chosen = choose_int8(table, FP32)
    assert chosen is table[1]  # 0.1 ms is faster but drops 4 points


def test_choose_int8_never_keeps_a_candidate_not_faster_than_fp32():
    slower = cand(p50=1.2)
    within_noise = cand(p50=0.97)  # 0.03 ms faster, inside the two spreads (0.04)
    assert choose_int8([slower, within_noise], FP32) is None
    assert "not faster than fp32" in rejection(within_noise, FP32)
    assert choose_int8([slower, within_noise, cand(p50=0.9)], FP32)["p50_ms"] == 0.9


def test_choose_int8_rejects_a_point_estimate_pass_whose_interval_fails():
    # 3 of 1000 flipped: drop 0.3 points <= 0.5 margin, but the 95% upper bound exceeds it
    shaky = cand(p50=0.2, flips=3)
    assert shaky["drop"] <= 0.005 < shaky["upper"] and not shaky["passes"]
    sound = cand(p50=0.7, flips=0)
    assert choose_int8([shaky, sound], FP32) is sound
    assert rejection(shaky, FP32).startswith("accuracy:")


def test_choose_int8_ties_go_to_the_first_listed():
    first, second = cand(p50=0.5), cand("S8S8", p50=0.5)
    assert choose_int8([first, second], FP32) is first


def test_arm_pinned_formats_exclude_u8s8():
    arm = DeviceProfile(isa="arm64")
    assert arm.resolved_int8_formats() == ["S8S8"]
    grid = candidate_grid(arm.resolved_int8_formats(), QuantizeConfig())
    assert {c["format"] for c in grid} == {"S8S8"} and len(grid) == 4
    # a faster U8S8 in the table still cannot win on a profile that pins S8S8
    table = [cand("U8S8", p50=0.2), cand("S8S8", p50=0.6)]
    assert choose_int8(table, FP32, formats=arm.resolved_int8_formats())["format"] == "S8S8"
    assert "not among the profile's int8 formats" in rejection(table[0], FP32, ["S8S8"])


def test_candidate_grid_covers_formats_and_forms_first_and_respects_max_candidates():
    cfg = QuantizeConfig(per_channel=True, calibration_method="entropy")
    grid = candidate_grid(["U8S8", "S8S8"], cfg)
    assert len(grid) == 8 and {c["method"] for c in grid} == {"entropy"}
    assert [c["per_channel"] for c in grid] == [True] * 4 + [False] * 4  # configured first
    assert {(c["format"], c["quant_format"]) for c in grid[:4]} == {
        (f, q) for f in ("U8S8", "S8S8") for q in ("QDQ", "QOperator")}
    small = candidate_grid(["U8S8", "S8S8"], cfg.model_copy(update={"max_candidates": 2}))
    assert [(c["format"], c["quant_format"], c["per_channel"]) for c in small] == [
        ("U8S8", "QDQ", True), ("S8S8", "QDQ", True)]
