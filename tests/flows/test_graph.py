"""The stage graph read through DVC agrees with dvc.yaml, and the flow is planned from it."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from flows.graph import StageGraph, StageNode, read_graph, stage_io, topological_order
from flows.pipeline import plan
from tests.helpers_data import REPO


def declared_stages() -> list[str]:
    """dvc.yaml's stage names read without DVC, foreach items expanded from params.yaml."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    names = []
    for name, body in stages.items():
        items = body.get("foreach")
        if isinstance(items, str):  # ${a.b}: a params path
            node = params
            for key in re.fullmatch(r"\$\{(.+)\}", items).group(1).split("."):
                node = node[key]
            items = node
        names += [f"{name}@{k}" for k in items] if items is not None else [name]
    return names


@pytest.fixture(scope="module")
def graph() -> StageGraph:
    return read_graph(REPO)


def test_graph_has_every_dvc_yaml_stage(graph):
    assert sorted(graph.order) == sorted(declared_stages())


def test_graph_order_puts_each_stage_after_its_upstream(graph):
    seen: set[str] = set()
    for name in graph.order:
        assert set(graph.stages[name].upstream) <= seen, name
        seen.add(name)
    assert graph.order[:3] == ["check", "ingest", "validate"]


def test_teachers_form_one_parallel_group_after_validate(graph):
    teachers = [n for n in graph.order if n.startswith("train_teachers@")]
    assert len(teachers) >= 2
    assert teachers in graph.groups
    for t in teachers:
        assert "validate" in graph.stages[t].upstream
    assert set(teachers) <= set(graph.stages["ensemble"].upstream)


def test_flow_plan_task_names_equal_dvc_yaml_stages(graph):
    tasks = plan(graph)
    assert list(tasks) == graph.order
    assert [t.name for t in tasks.values()] == graph.order
    assert sorted(graph.order) == sorted(declared_stages())


def test_upstream_closure_selects_targets_and_ancestors(graph):
    sub = graph.upstream_closure(["train_teachers"])
    assert sub.order[:3] == ["check", "ingest", "validate"]
    assert all(n.startswith("train_teachers@") for n in sub.order[3:])
    with pytest.raises(ValueError, match="unknown stage"):
        graph.upstream_closure(["nope"])


def test_topological_order_rejects_a_cycle():
    nodes = {n: StageNode(n, n, None, "true", (u,)) for n, u in (("a", "b"), ("b", "a"))}
    with pytest.raises(ValueError, match="cycle"):
        topological_order(nodes)


def test_stage_io_resolves_every_path_exactly_as_dvc_does(graph):
    """The runner reads dvc.yaml itself (no DVC index per stage): it must agree with DVC."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        for stage in repo.index.stages:
            node = graph.stages[stage.name]
            io = stage_io(node.stage, node.item, REPO / "dvc.yaml")
            dvc_outs = {os.path.relpath(o.fs_path, REPO) for o in stage.outs}
            dvc_deps = {os.path.relpath(d.fs_path, REPO) for d in stage.deps}
            assert {str(p) for p in io.outs.values()} == dvc_outs, stage.name
            assert {str(p) for p in io.deps.values()} <= dvc_deps, stage.name
            metrics = {os.path.relpath(o.fs_path, REPO) for o in stage.outs if o.metric}
            assert ({str(io.metrics)} if io.metrics else set()) == metrics, stage.name


def test_every_stage_runs_through_bin_stage_and_depends_on_check(graph):
    for name, node in graph.stages.items():
        assert node.cmd.startswith(f"bin/stage {node.stage}"), (name, node.cmd)
        if name != "check":
            assert "check" in node.upstream, name
    assert graph.stages["check"].upstream == ()


def test_bin_stage_says_how_to_set_up_when_python_lacks_the_project(tmp_path):
    """No venv anywhere (none active, no .venv): exit 127 with one line naming `make setup`."""
    import shutil
    import subprocess

    (tmp_path / "bin").mkdir()
    script = shutil.copy2(REPO / "bin" / "stage", tmp_path / "bin" / "stage")
    proc = subprocess.run([str(script), "check"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 127
    assert "make setup" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
