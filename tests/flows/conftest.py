"""Fixtures for the Prefect flows: one pair of real servers per session, tiny repo clones.

`servers` starts a real `prefect server start` and a real `mlflow server` through
infra/dev-servers.sh (the script developers use), once per session and only when a test asks for
it; logic-only tests call `task.fn()` and need no server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from tests.helpers_data import REPO
from tests.workspace import OPEN_BUDGETS, tracked_files

DEV_SERVERS = REPO / "infra" / "dev-servers.sh"
BIN = Path(sys.executable).parent
def shrink(params: dict, limit_per_class: int = 8, epochs: int = 2) -> dict:
    """Tiny run: few samples, 2 epochs everywhere, tiny teachers."""
    def visit(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "epochs":
                    node[k] = epochs
                elif k == "patience":
                    node[k] = 1
                else:
                    visit(v)

    visit(params)
    params["ingest"]["limit_per_class"] = limit_per_class
    params["validate"]["min_class_share"] = 0.01
    params["train_teachers"]["teachers"] = {
        "cnn": {"arch": "cnn", "channels": [4], "pools": 1, "head": "flatten", "hidden": 8},
        "mlp": {"arch": "mlp", "hidden": [16]},
    }
    params["train_teachers"]["training"].update(batch_size=32, shift=0)
    # budgets and gates every tiny model meets, so a run ends with a `champion`
    for profile in params["evaluate"]["profiles"].values():
        profile["budgets"] = dict(OPEN_BUDGETS)
    params["evaluate"].update(runs=10, warmup=2)
    params["register"]["policy"].update(gates={"min_val_accuracy": 0.0}, require_all_budgets=False)
    params["prune"].update(steps=1, max_accuracy_drop=1.0)
    return params


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})


def make_clone(dest: Path, **shrink_kwargs) -> Path:
    """A throwaway git repo holding the project's files and tiny params, with a local remote."""
    for rel in tracked_files(REPO):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(shrink(params, **shrink_kwargs)))
    (dest / ".dvc" / "config").write_text(
        f"[core]\n    remote = local\n    autostage = false\n"
        f"['remote \"local\"']\n    url = {dest.parent / (dest.name + '-remote')}\n")
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "clone")
    return dest


@pytest.fixture(scope="session")
def servers(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Real Prefect + MLflow servers on free loopback ports, for the whole session."""
    state = tmp_path_factory.mktemp("dev-servers")
    env = {**os.environ, "DISTILLERY_DEV_DIR": str(state), "DISTILLERY_BIN": str(BIN),
           "DISTILLERY_DEV_PREFECT_SERVICES": "0", "PREFECT_SERVER_UI_ENABLED": "false"}
    started = subprocess.run(["bash", str(DEV_SERVERS), "start"], env=env, capture_output=True,
                             text=True, timeout=240)
    if started.returncode:
        subprocess.run(["bash", str(DEV_SERVERS), "stop"], env=env, capture_output=True)
        pytest.fail(f"dev servers did not start:\n{started.stdout}\n{started.stderr}")
    urls = dict(line.removeprefix("export ").split("=", 1)
                for line in started.stdout.splitlines() if line.startswith("export "))
    saved = {k: os.environ.get(k) for k in urls}
    os.environ.update(urls)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings({PREFECT_API_URL: urls["PREFECT_API_URL"]}):
            yield {**urls, "DISTILLERY_DEV_DIR": str(state)}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        subprocess.run(["bash", str(DEV_SERVERS), "stop"], env=env, capture_output=True,
                       timeout=60)


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """One tiny clone shared by the integration tests (they run in file order)."""
    return make_clone(tmp_path_factory.mktemp("clone") / "repo")


@pytest.fixture
def apprise_inbox():
    """A local HTTP endpoint for Apprise's `json://` scheme; yields (url, received bodies)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"json://127.0.0.1:{server.server_port}/notify", received
    server.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """A throwaway sqlite MLflow registry with a tiny prepared dataset, one per test module."""
    from tests.flows.helpers_registry import throwaway_registry

    with throwaway_registry(tmp_path_factory.mktemp("registry")) as opened:
        yield opened
