"""Stage jobs as the flow builds them from dvc.yaml, for the tests of the warm stage workers."""

from __future__ import annotations

from flows.graph import read_graph
from flows.worker_child import StageCall, StageJob
from tests.helpers_data import REPO


def job(address: str) -> StageJob:
    """The job that reproduces the dvc.yaml stage ``address`` of this repository."""
    node = read_graph(REPO).stages[address]
    return StageJob(address, StageCall(node.stage, node.item), node.outs)
