"""`components.evaluation.rounds` with stand-in processes that speak the `profiles --serve`
protocol: rounds interleave, one process at a time, and failures become ``{"error"}``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from components.evaluation.rounds import run_rounds

# A stand-in measurement: ready, then per `round` it appends "<name> start/end" to a shared log
# (so overlaps would show) and replies with fixed times; `stop` replies with its peak RSS.
FAKE = r"""
import json, sys, time
name, log = sys.argv[1], sys.argv[2]
def reply(d):
    sys.stdout.write(json.dumps(d) + "\n"); sys.stdout.flush()
print("a library's chatter on stdout", flush=True)
reply({"ready": True, "batch_size": 1, "accuracy": 1.0})
for line in sys.stdin:
    if line.strip() == "round":
        with open(log, "a") as f: f.write(name + " start\n")
        time.sleep(0.01)
        with open(log, "a") as f: f.write(name + " end\n")
        reply({"times": [1.0, 2.0, 3.0] if name == "a" else [4.0, 4.0, 4.0]})
    elif line.strip() == "stop":
        reply({"peak_rss_mb": 42.0}); break
"""


def fake(name: str, log: Path) -> list[str]:
    return [sys.executable, "-c", FAKE, name, str(log)]


def test_rounds_interleave_one_process_at_a_time_with_the_order_rotated(tmp_path: Path):
    log = tmp_path / "log"
    out = run_rounds({n: fake(n, log) for n in "abc"}, dict(os.environ), rounds=3,
                     timeout_s=30)
    events = [line.split() for line in log.read_text().splitlines()]
    # each round ends before the next one starts
    assert [e[1] for e in events] == ["start", "end"] * 9
    assert all(events[i][0] == events[i + 1][0] for i in range(0, 18, 2))
    starts = [e[0] for e in events[::2]]
    assert starts == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # rotated per round
    assert out["a"]["latency_ms_p50"] == 2.0 and out["a"]["latency_spread_ms"] == 0.0
    assert out["b"]["latency_ms_p50"] == 4.0 and out["b"]["rounds"] == 3
    assert out["a"]["peak_rss_mb"] == 42.0 and out["a"]["accuracy"] == 1.0


def test_a_failed_or_hung_process_is_an_error_and_the_others_still_measure(tmp_path: Path):
    log = tmp_path / "log"
    broken = [sys.executable, "-c", "import sys; sys.exit('InvalidGraph: not an onnx graph')"]
    hung = [sys.executable, "-c", "import time; time.sleep(60)"]
    out = run_rounds({"ok": fake("ok", log), "broken": broken, "hung": hung}, dict(os.environ),
                     rounds=2, timeout_s=2)
    assert out["broken"] == {"error": "InvalidGraph: not an onnx graph"}
    assert out["hung"]["error"].startswith("timed out")
    assert out["ok"]["rounds"] == 2 and "error" not in out["ok"]


def test_an_untimed_process_only_reports_ready(tmp_path: Path):
    base = [sys.executable, "-c", "print('{\"ready\": true, \"peak_rss_mb\": 7.0}')"]
    out = run_rounds({"baseline": base, "a": fake("a", tmp_path / "log")}, dict(os.environ),
                     rounds=1, timeout_s=30, untimed=frozenset({"baseline"}))
    assert out["baseline"] == {"peak_rss_mb": 7.0}
    assert out["a"]["rounds"] == 1
