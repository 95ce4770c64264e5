"""The model card: its sections, the metrics table, the lineage list, the short summary."""

from __future__ import annotations

from flows.model_card import _summary, model_card

META = {"input": {"name": "image", "shape": ["batch", 1, 8, 8]},
        "output": {"name": "logits", "kind": "logits"}, "classes": ["0", "1", "2"]}
METRICS_BY_PROFILE = {
    "edge-1core": {"accuracy": 0.9666666, "latency_ms_p50": 0.25, "latency_ms_p95": 0.5,
                   "size_bytes": 1234, "peak_rss_mb": None, "meets_budget": True},
    "server": {"accuracy": 0.5, "meets_budget": False,
               "failed_budgets": ["accuracy < 0.9", "p95 > 1 ms"]},
}
TAGS = {"git_commit": "abc123", "data_hash": "blobs", "distillery.variant": "int8"}


def card() -> str:
    return model_card("digits", "7", "int8", META, METRICS_BY_PROFILE, ["edge-1core"],
                      {"gpu": "no CUDA"}, {"data_hash": "blobs", "validation": {"ok": True}},
                      TAGS)


def test_model_card_states_use_data_metrics_limits_and_lineage():
    text = card()
    assert text.startswith("# digits version 7: `int8`\n\nSelected for profiles: edge-1core.")
    assert "shape ['batch', 1, 8, 8] (`image`, float32 in [0, 1], NCHW) into 3 classes (0, 1, 2)"\
        in text
    assert 'data_hash `blobs`; validation: {"ok": true}' in text
    assert "| edge-1core | 0.966667 | 0.25 | 0.5 | 1234 | - | ok |" in text
    assert "| server | 0.5 | - | - | - | - | accuracy < 0.9; p95 > 1 ms |" in text
    assert "Profile `gpu` skipped: no CUDA" in text
    assert text.index("## Known limits") < text.index("## Lineage")
    lineage = text.split("## Lineage\n\n")[1].splitlines()
    assert lineage == ["- data_hash: `blobs`", "- distillery.variant: `int8`",
                       "- git_commit: `abc123`"]  # sorted by tag


def test_summary_stops_before_the_known_limits_and_points_at_the_full_card():
    summary = _summary(card(), "run-42")
    assert "| server |" in summary and "Profile `gpu` skipped" in summary
    assert "## Known limits" not in summary and "## Lineage" not in summary
    assert summary.endswith("\nFull model card: `model_card.md` of run run-42.")


def test_a_card_without_selection_or_metadata_says_so():
    text = model_card("digits", "1", "fp32", {}, {}, [], {}, {}, {})
    assert "Selected for profiles: none." in text
    assert "Classify images of shape ? (`image`, float32 in [0, 1], NCHW) into 0 classes ()" \
        in text
    assert text.endswith("## Lineage\n\n")


def test_a_card_of_a_uint8_bundle_states_the_pixel_contract_and_every_output():
    meta = {**META, "input": {"name": "image", "dtype": "uint8", "layout": "NHWC",
                              "shape": ["batch", 8, 8, 1]},
            "outputs": ["logits", "probabilities", "label"]}
    text = model_card("digits", "2", "fp32", meta, {}, [], {}, {}, {})
    assert ("(`image`, uint8 pixels 0..255, NHWC) into 3 classes (0, 1, 2); output `logits` "
            "(logits), then `probabilities`, then `label`. Scaling to [0, 1], the NCHW "
            "transpose and normalisation are inside the graph.") in text
