"""infra/: the compose file is checked statically (no Docker here); dev servers really run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers_data import REPO

INFRA = REPO / "infra"
BIN = Path(sys.executable).parent
SECRET_KEYS = re.compile(r"(PASSWORD|SECRET|AUTH_STRING|ACCESS_KEY|TOKEN)", re.I)
# `${VAR:?VAR must be set (see infra/.env.example)}`: compose refuses to start without VAR
REQUIRED = re.compile(r"\$\{(\w+):\?(\1) must be set \(see infra/\.env\.example\)\}")
OPTIONAL = {"DISTILLERY_APPRISE_URL", "DISTILLERY_DASK_ADDRESS"}  # may stay empty


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def env_example() -> dict[str, str]:
    lines = (INFRA / ".env.example").read_text().splitlines()
    return dict(ln.split("=", 1) for ln in lines if ln.strip() and not ln.startswith("#"))


def required_variables() -> set[str]:
    return {m.group(1) for m in REQUIRED.finditer((INFRA / "docker-compose.yml").read_text())}


def run_preflight(names: list[str], **values: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], **values}
    return subprocess.run(["sh", str(INFRA / "preflight.sh"), *names], env=env,
                          capture_output=True, text=True)


def test_every_service_has_an_image(compose):
    expected = {"preflight", "postgres", "minio", "minio-buckets", "mlflow", "prefect-server",
                "prefect-worker"}
    assert expected <= set(compose["services"])
    for name, svc in compose["services"].items():
        assert svc.get("image"), name


def test_compose_has_no_literal_secrets(compose):
    for name, svc in compose["services"].items():
        env = svc.get("environment") or {}
        for key, value in env.items():
            if SECRET_KEYS.search(key):
                assert REQUIRED.fullmatch(str(value)), f"{name}.{key}: {value!r} is not ${{VAR:?}}"


def test_compose_requires_every_variable_but_the_optional_ones():
    text = (INFRA / "docker-compose.yml").read_text()
    for ref in re.findall(r"(?<!\$)\$\{[^}]*\}", text):
        name = re.match(r"\$\{(\w+)", ref).group(1)
        if name in OPTIONAL:
            assert ref == f"${{{name}:-}}", ref
        else:
            assert REQUIRED.fullmatch(ref), f"docker-compose.yml: {ref} may be empty or unset"


def test_every_service_waits_for_preflight(compose):
    for name, svc in compose["services"].items():
        if name != "preflight":
            assert svc["depends_on"]["preflight"] == {
                "condition": "service_completed_successfully"}, name


def test_preflight_checks_every_required_variable(compose):
    pre = compose["services"]["preflight"]
    assert re.fullmatch(r"busybox:\d+\.\d+\.\d+", pre["image"]), pre["image"]
    assert pre["command"][:2] == ["sh", "/preflight.sh"]
    assert set(pre["command"][2:]) == set(pre["environment"]) == required_variables()


def test_preflight_refuses_placeholders_and_empty_values_naming_them():
    names = ["POSTGRES_PASSWORD", "PREFECT_API_AUTH_STRING", "MINIO_ROOT_PASSWORD", "DVC_BUCKET"]
    out = run_preflight(names, POSTGRES_PASSWORD="change-me", PREFECT_API_AUTH_STRING="admin:",
                        MINIO_ROOT_PASSWORD="  ", DVC_BUCKET="distillery-dvc")
    assert out.returncode == 1
    assert "POSTGRES_PASSWORD still holds the change-me placeholder" in out.stderr
    assert "MINIO_ROOT_PASSWORD is empty" in out.stderr
    assert "PREFECT_API_AUTH_STRING" not in out.stderr and "DVC_BUCKET" not in out.stderr


def test_preflight_refuses_every_placeholder_of_env_example():
    example = env_example()
    out = run_preflight(sorted(required_variables()), **example)
    assert out.returncode == 1
    placeholders = {k for k, v in example.items() if "change-me" in v}
    assert placeholders, "env.example has no placeholders?"
    for key in placeholders:
        assert f"{key} still holds the change-me placeholder" in out.stderr, key


def test_preflight_passes_filled_in_values():
    filled = {k: v.replace("change-me", "s3cret-value") for k, v in env_example().items()}
    out = run_preflight(sorted(required_variables()), **filled)
    assert out.returncode == 0, out.stderr


def docker_compose() -> list[str] | None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) and subprocess.run([*cmd, "version"], capture_output=True,
                                                   text=True).returncode == 0:
            return cmd
    return None


def test_compose_config_fails_naming_an_empty_secret(tmp_path):
    cmd = docker_compose()
    if cmd is None:
        pytest.skip("no `docker compose` CLI here (the plugin and docker-compose are absent)")
    filled = {k: v.replace("change-me", "s3cret-value") for k, v in env_example().items()}
    env = {k: v for k, v in os.environ.items() if k not in filled}
    config = [*cmd, "--env-file", str(tmp_path / "env"), "-f",
              str(INFRA / "docker-compose.yml"), "config", "--quiet"]
    (tmp_path / "env").write_text("".join(f"{k}={v}\n" for k, v in filled.items()))
    ok = subprocess.run(config, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "env").write_text("".join(
        f"{k}={'' if k == 'POSTGRES_PASSWORD' else v}\n" for k, v in filled.items()))
    empty = subprocess.run(config, env=env, capture_output=True, text=True)
    assert empty.returncode != 0
    assert "POSTGRES_PASSWORD must be set" in empty.stderr


def prefect_setting_names() -> set[str]:
    """Canonical env names of every Prefect setting, e.g. PREFECT_SERVER_UI_API_URL."""
    from prefect.settings import Settings
    from prefect.settings.base import PrefectBaseSettings

    def walk(cls) -> set[str]:
        names = set()
        for field_name, field in cls.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation,
                                                                PrefectBaseSettings):
                names |= walk(field.annotation)
            else:
                names.add(f"{cls.model_config.get('env_prefix')}{field_name.upper()}")
        return names

    return walk(Settings)


def test_compose_uses_prefects_own_setting_names(compose):
    known = prefect_setting_names()
    assert "PREFECT_SERVER_UI_API_URL" in known  # the walk found the nested settings
    for name, svc in compose["services"].items():
        for key in svc.get("environment") or {}:
            if key.startswith("PREFECT_") and name.startswith("prefect"):
                assert key in known, f"{name}.{key} is not a canonical Prefect setting name"


def test_mlflow_image_installs_pinned_packages(compose):
    entry = compose["services"]["mlflow"]["entrypoint"]
    install = re.search(r"pip install --quiet ([^&]+)&&", entry).group(1).split()
    assert {p.split("==")[0] for p in install} == {"psycopg2-binary", "boto3"}
    for package in install:
        assert re.fullmatch(r"[\w-]+==\d+(\.\d+)+", package), f"mlflow: {package} is not pinned"


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
    assert prefect["PREFECT_SERVER_API_AUTH_STRING"].startswith("${PREFECT_API_AUTH_STRING:?")
    assert prefect["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert prefect["PREFECT_SERVER_UI_API_URL"].startswith("${PREFECT_SERVER_UI_API_URL:?")
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


def test_compose_prefect_server_fastapi_is_within_the_project_pin(compose):
    import tomllib

    from packaging.requirements import Requirement

    command = compose["services"]["prefect-server"]["command"]
    pinned = re.search(r"pip install --quiet fastapi==([\d.]+) &&", command)
    assert pinned, f"prefect-server: fastapi is not pinned in {command!r}"
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    fastapi = next(Requirement(d) for d in deps if Requirement(d).name == "fastapi")
    assert fastapi.specifier.contains(pinned.group(1)), (pinned.group(1), str(fastapi))


@pytest.mark.slow
def test_dev_servers_prefect_ui_settings_name_the_real_port(servers):
    # The UI fetches /ui-settings and sends every API call to its `api_url`.
    with urllib.request.urlopen(servers["PREFECT_API_URL"].removesuffix("/api") + "/ui-settings",
                                timeout=5) as response:
        ui = json.load(response)
    assert ui["api_url"] == servers["PREFECT_API_URL"]


@pytest.mark.slow
@pytest.mark.parametrize("listing", ["flow-run", "artifact"])
def test_prefect_cli_lists_against_dev_server(servers, listing, tmp_path):
    # 422 here: fastapi validates the client's explicit `"limit": null` against `limit: int`;
    # the fastapi pin in pyproject.toml keeps a version that reads null as "use the default".
    env = {**os.environ, "PREFECT_API_URL": servers["PREFECT_API_URL"],
           "PREFECT_HOME": str(tmp_path)}
    out = subprocess.run([str(BIN / "prefect"), listing, "ls"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, f"prefect {listing} ls:\n{out.stdout[-2000:]}{out.stderr[-2000:]}"
