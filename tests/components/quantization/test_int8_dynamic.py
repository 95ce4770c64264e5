"""`int8_dynamic` is kept only where it measures faster than fp32 (constructed timings)."""

from __future__ import annotations

from components.quantization.int8_dynamic import keep_dynamic


def t(p50: float, spread: float = 0.01) -> dict:
    return {"p50_ms": p50, "spread_ms": spread}


def test_int8_dynamic_is_kept_on_the_profiles_where_it_is_faster():
    wins, reason = keep_dynamic({"edge": {"fp32": t(1.0), "int8_dynamic": t(2.0)},
                                 "server": {"fp32": t(10.0), "int8_dynamic": t(6.0)}})
    assert wins == ["server"] and reason is None


def test_int8_dynamic_is_dropped_when_slower_or_within_noise_everywhere():
    wins, reason = keep_dynamic({"edge": {"fp32": t(1.0), "int8_dynamic": t(2.0)},
                                 "server": {"fp32": t(10.0), "int8_dynamic": t(9.9, 0.2)}})
    assert wins == []
    assert reason.startswith("slower than fp32 on every profile: ")
    assert "edge p50 2.0000 vs 1.0000 ms" in reason and "server p50 9.9000" in reason
