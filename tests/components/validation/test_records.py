"""How records and failure messages are worded: capped id lists, class names beside labels."""

from __future__ import annotations

from components.validation.records import SHOWN, _cap, _check, _classes


def test_cap_names_at_most_shown_items_then_counts_the_rest():
    items = [f"id{i}" for i in range(SHOWN + 3)]
    assert _cap(items, len(items)) == "id0, id1, id2, id3, id4 (+3 more)"
    assert _cap(items[:2], 2) == "id0, id1"


def test_classes_adds_names_only_where_they_differ_from_the_label():
    assert _classes([0, 2], ["c0", "c1", "c2"]) == "0 (c0), 2 (c2)"
    assert _classes([1, 5], ["0", "1"]) == "1, 5"  # unnamed label 5 stays as is


def test_check_keeps_the_message_only_on_failure():
    ok = _check("x", "train", True, {"n": 1}, "problem")
    assert ok == {"check": "x", "engine": "distillery", "split": "train", "success": True,
                  "result": {"n": 1}}
    assert _check("x", None, False, {}, "problem")["message"] == "problem"
