"""The stage graph, read from `dvc.yaml` through DVC's own API: the one source of truth.

`read_graph()` asks DVC for its index (foreach stages already expanded, e.g. `train_teachers@mlp`)
and its dependency graph, and turns them into a plain `StageGraph`: stages in a deterministic
topological order (ties keep `dvc.yaml`'s order) and the groups of stages that can run at the
same time. The Prefect flow is built from this object, so the two cannot drift apart.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.core.stage import StageIO


@dataclass(frozen=True)
class StageNode:
    """One runnable `dvc.yaml` stage (a foreach stage appears once per item)."""

    name: str  # DVC's address: `ingest`, `train_teachers@mlp`
    stage: str  # the params section / stage runner name: `train_teachers`
    item: str | None  # the foreach key: `mlp`
    cmd: str
    upstream: tuple[str, ...]  # stages whose outputs this one reads (direct edges only)
    metrics: tuple[str, ...] = ()  # metrics files declared in dvc.yaml, relative to the repo
    outs: tuple[str, ...] = ()  # every output DVC removes before running it, relative to the repo


@dataclass(frozen=True)
class StageGraph:
    """Stages in topological order, with their parallel groups."""

    stages: dict[str, StageNode]  # insertion order = topological order

    @property
    def order(self) -> list[str]:
        return list(self.stages)

    @property
    def groups(self) -> list[list[str]]:
        """Waves of stages with no mutual dependency (wave = longest upstream path)."""
        level: dict[str, int] = {}
        for name, node in self.stages.items():
            level[name] = 1 + max((level[u] for u in node.upstream), default=-1)
        waves: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
        for name in self.stages:
            waves[level[name]].append(name)
        return waves

    def upstream_closure(self, targets: list[str]) -> StageGraph:
        """The sub-graph that `dvc repro TARGETS` would consider: the targets and their ancestors.

        A target may be a stage name (`train_teachers` selects every item) or a full address.
        """
        wanted: set[str] = set()
        todo = [n for n in self.stages if n in targets or self.stages[n].stage in targets]
        unknown = [t for t in targets if t not in self.stages
                   and not any(n.stage == t for n in self.stages.values())]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown} (dvc.yaml has {self.order})")
        while todo:
            name = todo.pop()
            if name not in wanted:
                wanted.add(name)
                todo.extend(self.stages[name].upstream)
        return StageGraph({n: s for n, s in self.stages.items() if n in wanted})


def read_graph(repo: str | Path = ".") -> StageGraph:
    """Build the `StageGraph` of the DVC project at `repo` from DVC's index (no stage runs)."""
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(repo)) as dvc_repo:
        index = dvc_repo.index
        # Only dvc.yaml stages are runnable; `.dvc` files (dvc add/import) are data, not steps.
        declared = [s for s in index.stages if isinstance(s, PipelineStage)]
        # DVC's edges point from a stage to the stages producing its dependencies.
        graph = index.graph
        root = Path(dvc_repo.root_dir)
        address = {s: _address(s, root) for s in declared}
        nodes = {
            address[s]: StageNode(
                name=address[s],
                stage=s.name.split("@", 1)[0],
                item=s.name.split("@", 1)[1] if "@" in s.name else None,
                cmd=s.cmd if isinstance(s.cmd, str) else " && ".join(s.cmd),
                upstream=tuple(address[u] for u in graph.successors(s) if u in address),
                metrics=tuple(str(o.def_path) for o in s.outs if o.metric),
                outs=tuple(os.path.relpath(o.fs_path, root) for o in s.outs if not o.persist),
            )
            for s in declared
        }
    return StageGraph({name: nodes[name] for name in topological_order(nodes)})


def _address(stage, root: Path) -> str:
    """`NAME` for the root dvc.yaml (what `dvc repro NAME` takes), `sub/dvc.yaml:NAME` else."""
    dvcfile = Path(stage.dvcfile.path)
    if dvcfile.parent == root:
        return stage.name
    return f"{dvcfile.relative_to(root).as_posix()}:{stage.name}"


def topological_order(nodes: dict[str, StageNode]) -> list[str]:
    """Kahn's algorithm; among ready stages the one declared first in dvc.yaml goes first."""
    position = {name: i for i, name in enumerate(nodes)}
    remaining = {name: set(node.upstream) for name, node in nodes.items()}
    order: list[str] = []
    while remaining:
        ready = sorted((n for n, ups in remaining.items() if not ups), key=position.__getitem__)
        if not ready:  # DVC rejects cycles itself; this guards hand-built graphs
            raise ValueError(f"cycle among stages {sorted(remaining)}")
        order.append(ready[0])
        del remaining[ready[0]]
        for ups in remaining.values():
            ups.discard(ready[0])
    return order


_VAR = re.compile(r"\$\{\s*([\w.]+)\s*\}")


def stage_io(stage: str, item: str | None = None, dvc_file: str | Path = "dvc.yaml") -> StageIO:
    """The `StageIO` of ``stage`` (one ``item`` of a foreach stage), read from dvc.yaml.

    Paths are named by the `vars.paths` entry they are written with (`${paths.student}`, or a
    path below one, like `${paths.teachers}/${key}`). This runs inside every stage process, so it
    reads the YAML itself instead of building DVC's index; `tests/flows/test_graph.py` checks that
    it resolves every stage's paths exactly as DVC does.
    """
    doc = yaml.safe_load(Path(dvc_file).read_text(encoding="utf-8")) or {}
    paths: dict[str, str] = {}
    for entry in doc.get("vars", []):
        if isinstance(entry, dict):
            paths.update(entry.get("paths", {}))
    body = (doc.get("stages") or {}).get(stage)
    if body is None:
        raise ValueError(f"dvc.yaml: no stage `{stage}` (stages: {sorted(doc.get('stages', {}))})")
    if "do" in body:
        if item is None:
            raise ValueError(f"dvc.yaml: stage `{stage}` is a foreach stage and needs an item")
        body = body["do"]
    context = {"key": item, "item": item, **{f"paths.{k}": v for k, v in paths.items()}}

    def named(entries: list) -> dict[str, Path]:
        # Only paths written with a `vars.paths` entry have a name; others (the raw data,
        # `${ingest.path}` from params.yaml, and the code deps) are DVC's business alone.
        out: dict[str, Path] = {}
        for entry in entries or []:
            text = str(next(iter(entry)) if isinstance(entry, dict) else entry)
            names = [m.group(1)[len("paths."):] for m in _VAR.finditer(text)
                     if m.group(1).startswith("paths.")]
            if names:
                out[names[0]] = Path(_VAR.sub(lambda m: str(context[m.group(1)]), text))
        return out

    outs = named(body.get("outs", [])) | named(body.get("plots", []))
    metrics = named(body.get("metrics", []))
    return StageIO(stage=stage, item=item, deps=named(body.get("deps", [])),
                   outs=outs | metrics, metrics=next(iter(metrics.values()), None))
