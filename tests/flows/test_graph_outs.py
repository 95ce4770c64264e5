"""`flows.graph`: each stage node lists the outputs DVC removes before it runs the stage."""

from __future__ import annotations

from flows.graph import read_graph
from tests.helpers_data import REPO


def test_graph_lists_the_outputs_dvc_removes_before_a_run():
    graph = read_graph(REPO)
    assert graph.stages["ingest"].outs == ("data/prepared",)
    assert set(graph.stages["train_teachers@mlp"].outs) == {
        "models/teachers/mlp", "metrics/teachers/mlp.json"}
