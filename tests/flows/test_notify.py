"""Failure hooks: an Apprise message when a URL is configured, a log line otherwise."""

from types import SimpleNamespace

from flows.notify import failure_hook


def test_failure_hook_sends_an_apprise_notification(apprise_inbox):
    url, received = apprise_inbox
    hook = failure_hook(url)
    hook(SimpleNamespace(name="validate"), SimpleNamespace(name="validate"),
         SimpleNamespace(message="data rejected", name="Failed"))
    assert len(received) == 1
    assert "validate" in received[0]["title"] and "data rejected" in received[0]["message"]


def test_failure_hook_without_url_only_logs(caplog, monkeypatch):
    import flows.notify

    sent = []
    monkeypatch.setattr(flows.notify, "notify", lambda *a: sent.append(a) or True)
    with caplog.at_level("ERROR", logger="distillery"):
        failure_hook(None)(SimpleNamespace(name="x"), SimpleNamespace(name="x"),
                           SimpleNamespace(message="boom", name="Failed"))
    assert [r.getMessage() for r in caplog.records] == ["x failed: boom"]
    assert sent == []  # no URL: nothing is sent
