"""The compression table keeps the median round of each model's repeated measurements."""

from bench.compression import median_round


def test_median_round_keeps_the_whole_middle_measurement():
    rounds = [{"latency_ms_p50": 0.013, "tag": "spike"}, {"latency_ms_p50": 0.008, "tag": "a"},
              {"latency_ms_p50": 0.009, "tag": "b"}]
    assert median_round(rounds)["tag"] == "b"


def test_median_round_skips_failed_rounds_and_reports_a_failure_when_all_failed():
    ok = {"latency_ms_p50": 0.01}
    assert median_round([{"error": "x"}, ok]) is ok
    assert median_round([{"error": "x"}])["error"] == "x"
