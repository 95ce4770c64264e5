"""dvc.yaml's code deps are complete: DVC's incremental rebuild is only as right as they are.

For every stage, the import closure inside the repo of its own module (named after the stage)
and of the stage runner must be covered by the stage's deps (a directory dep covers its files).
Imports inside functions count: the walk reads every import statement of every module it reaches.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.helpers_data import REPO

PACKAGES = ("components", "flows")
RUNNER = "flows.stages"


def module_path(module: str) -> Path | None:
    base = REPO / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every in-repo module ``path`` imports, at any depth of its code, and their packages."""
    found: set[str] = set()
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        for name in names:
            parts = name.split(".")
            if parts[0] in PACKAGES:
                # `import a.b.c` runs a/__init__.py and a/b/__init__.py too
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in found if module_path(m) is not None}


def runs_code(path: Path) -> bool:
    """False for a file that is only a docstring (an empty package marker): nothing to track."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return not all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def closure(*modules: str) -> set[Path]:
    seen: set[Path] = set()
    todo = [p for m in modules if (p := module_path(m)) is not None]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [module_path(m) for m in imported_modules(path)]
    return {p for p in seen if runs_code(p)}


def stages() -> dict[str, dict]:
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    paths = {k: v for entry in doc.get("vars", []) for k, v in entry.get("paths", {}).items()}
    out = {}
    for name, body in doc["stages"].items():
        body = body.get("do", body)
        deps = [str(d) for d in body.get("deps", [])]
        out[name] = {"deps": [_resolve(d, paths) for d in deps], "cmd": body["cmd"]}
    return out


def _resolve(text: str, paths: dict[str, str]) -> str:
    for key, value in paths.items():
        text = text.replace(f"${{paths.{key}}}", value)
    return text


def stage_entry(name: str) -> str:
    for package in PACKAGES:
        if module_path(f"{package}.{name}") is not None:
            return f"{package}.{name}"
    raise AssertionError(f"stage `{name}` has no module components/{name}.py or flows/{name}.py")


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_imported_file_is_a_dep(name):
    stage = stages()[name]
    reached = closure(stage_entry(name), RUNNER)
    missing = sorted(p.relative_to(REPO).as_posix() for p in reached
                     if not covered(p, stage["deps"]))
    assert not missing, f"dvc.yaml stage `{name}` imports files that are not deps: {missing}"


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_code_dep_exists(name):
    for dep in stages()[name]["deps"]:
        if dep.endswith(".py") or dep.startswith(PACKAGES):
            assert (REPO / dep).exists(), f"dvc.yaml stage `{name}`: dep {dep} does not exist"


def test_closure_follows_imports_inside_functions(tmp_path, monkeypatch):
    """The walk itself: a lazy import inside a function is reached (the test can fail)."""
    reached = {p.relative_to(REPO).as_posix() for p in closure("flows.stages")}
    assert "components/config/params.py" in reached  # via `from components.config import ...`
    assert "flows/tracking.py" in reached  # imported inside run_stage only
    assert not covered(REPO / "components/config/params.py", ["components/conf"])
    assert covered(REPO / "components/config/params.py", ["components/config"])
