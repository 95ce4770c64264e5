"""Failure notifications: Prefect on_failure hooks that log and send an Apprise message."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import yaml
from prefect import get_run_logger

APPRISE_ENV = "DISTILLERY_APPRISE_URL"


def notify(url: str, title: str, body: str) -> bool:
    """Send one message through Apprise (any of its URL schemes); False when it could not."""
    import apprise

    sender = apprise.Apprise()
    return bool(sender.add(url)) and bool(sender.notify(title=title, body=body))


def apprise_url(repo: str | Path = ".") -> str | None:
    """`DISTILLERY_APPRISE_URL`, else `notify.apprise_url` in params.yaml, else None."""
    if os.environ.get(APPRISE_ENV):
        return os.environ[APPRISE_ENV]
    path = Path(repo) / "params.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    return ((raw or {}).get("notify") or {}).get("apprise_url")


def failure_hook(url: str | None):
    """on_failure hook for a task or flow: log what failed and notify when a URL is configured."""

    def on_failure(obj, run, state) -> None:
        message = f"{run.name} failed: {state.message or state.name}"
        log = _logger()
        log.error(message)
        if url and not notify(url, f"Distillery: {obj.name} failed", message):
            log.warning("could not send the failure notification to %s", url.split(":", 1)[0])

    return on_failure


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run; the `distillery` logger outside one (hooks may run
    outside a run context)."""
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - prefect raises MissingContextError outside a run
        return logging.getLogger("distillery")
