"""`components.core.stage`: a stage asks for paths by name, and a missing one names the stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.core.stage import StageIO, StageIOError, StageResult


def test_declared_paths_are_returned_by_name():
    io = StageIO("distill", deps={"prepared": Path("data/prepared")},
                 outs={"student": Path("models/student")})
    assert io.dep("prepared") == Path("data/prepared")
    assert io.out("student") == Path("models/student")
    assert io.address == "distill"


def test_undeclared_dep_or_out_is_refused_naming_the_stage_and_what_it_declares():
    io = StageIO("train_teachers", "mlp", deps={"prepared": Path("data/prepared")},
                 outs={"teachers": Path("models/teachers/mlp")})
    with pytest.raises(StageIOError) as err:
        io.dep("student")
    assert str(err.value) == ("dvc.yaml: stage `train_teachers@mlp` declares no deps `student` "
                              "(it declares ['prepared'])")
    assert isinstance(err.value, KeyError)  # callers may still catch a plain KeyError
    with pytest.raises(KeyError, match=r"stage `train_teachers@mlp` declares no outs `student` "
                                       r"\(it declares \['teachers'\]\)"):
        io.out("student")


def test_stage_result_defaults_are_empty_and_not_shared():
    a, b = StageResult(metrics={"acc": 1.0}, params={}), StageResult(metrics={}, params={})
    assert (a.timings, a.history, a.artifacts, a.tags) == ({}, {}, [], {})
    a.timings["stage_seconds"] = 1.0
    a.artifacts.append(Path("x"))
    assert b.timings == {} and b.artifacts == []  # each result gets its own containers
