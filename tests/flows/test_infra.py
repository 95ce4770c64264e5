"""infra/: the compose file is checked statically (no Docker here); dev servers really run."""

from __future__ import annotations

import os
import re
import subprocess
import urllib.request

import pytest
import yaml

from tests.helpers_data import REPO

INFRA = REPO / "infra"
SECRET_KEYS = re.compile(r"(PASSWORD|SECRET|AUTH_STRING|ACCESS_KEY|TOKEN)", re.I)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def env_example() -> dict[str, str]:
    lines = (INFRA / ".env.example").read_text().splitlines()
    return dict(ln.split("=", 1) for ln in lines if ln.strip() and not ln.startswith("#"))


def test_every_service_has_an_image(compose):
    expected = {"postgres", "minio", "minio-buckets", "mlflow", "prefect-server", "prefect-worker"}
    assert expected <= set(compose["services"])
    for name, svc in compose["services"].items():
        assert svc.get("image"), name


def test_compose_has_no_literal_secrets(compose):
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if SECRET_KEYS.search(key):
                assert re.fullmatch(r"\$\{\w+\}", str(value)), f"{name}.{key} is literal"


def test_every_variable_is_in_env_example():
    text = (INFRA / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    assert used, "compose reads nothing from the environment?"
    assert used <= set(env_example()), used - set(env_example())


def test_env_example_holds_only_placeholders():
    for key, value in env_example().items():
        if SECRET_KEYS.search(key):
            assert "change-me" in value, key


def test_servers_are_configured_as_asked(compose):
    svc = compose["services"]
    assert "--app-name basic-auth" in svc["mlflow"]["entrypoint"]
    assert "--artifacts-destination s3://" in svc["mlflow"]["entrypoint"]
    assert "postgresql" in svc["mlflow"]["entrypoint"]
    prefect = svc["prefect-server"]["environment"]
    assert prefect["PREFECT_SERVER_API_AUTH_STRING"] == "${PREFECT_API_AUTH_STRING}"
    assert prefect["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert "--type process" in svc["prefect-worker"]["command"]


def test_dev_servers_status_fails_when_not_started(tmp_path):
    env = {**os.environ, "DISTILLERY_DEV_DIR": str(tmp_path)}
    out = subprocess.run(["bash", str(INFRA / "dev-servers.sh"), "status"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 1


@pytest.mark.slow
def test_dev_servers_serve_mlflow_and_prefect_on_loopback(servers):
    for url in (servers["MLFLOW_TRACKING_URI"] + "/health",
                servers["PREFECT_API_URL"] + "/health"):
        assert url.startswith("http://127.0.0.1:")
        assert urllib.request.urlopen(url, timeout=5).status == 200
    env = {**os.environ, "DISTILLERY_DEV_DIR": servers["DISTILLERY_DEV_DIR"]}
    status = subprocess.run(["bash", str(INFRA / "dev-servers.sh"), "status"], env=env,
                            capture_output=True, text=True)
    assert status.returncode == 0 and status.stdout.count(" up ") == 2
