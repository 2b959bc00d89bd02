"""What an on-call engineer sees: /metrics, JSON logs without secrets, and the Events story."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator

import pytest
import requests

from cloudtriggers.logs import configure
from cloudtriggers.sandbox.gitlab import MAINTAINER
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for
from cloudtriggers.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _trigger(world: LocalWorld, name: str) -> dict[str, object]:
    return {
        "apiVersion": "cloudtriggers.io/v1alpha1",
        "kind": "Trigger",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {
            "gitlab": {"url": world.gitlab.url, "project": "group/web"},
            "credentialsSecretRef": {"name": "gl"},
        },
    }


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure("json", "debug", stream=stream)
    try:
        yield stream
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_metrics_json_logs_and_events_over_a_lifecycle(logged: io.StringIO) -> None:
    port = _free_port()
    with LocalWorld(Settings(http_port=port, credentials_poll=0.5)) as world:
        user = world.gitlab.add_user("bot")
        pid = world.gitlab.add_project("group/web", {"bot": MAINTAINER})
        world.apply_secret("apps", "gl", {"token": user.token})
        world.start_operator()
        world.create_trigger(_trigger(world, "web"))
        wait_for(lambda: condition(world.trigger("apps", "web")).get("reason") == "Available", what="Ready")
        token = world.gitlab.triggers(pid)[0]["token"]
        # A bad token: CredentialsInvalid, with one Warning however often it is retried.
        world.apply_secret("apps", "gl", {"token": "glpat-revoked-0000000000"})
        world.patch_trigger("apps", "web", {"spec": {"gitlab": {"description": "changed"}}})
        wait_for(
            lambda: condition(world.trigger("apps", "web"), "Synced").get("reason") == "CredentialsInvalid",
            what="CredentialsInvalid",
        )

        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200

        def sample(line_start: str) -> float:
            lines = [ln for ln in text.splitlines() if ln.startswith(line_start)]
            assert lines, f"no sample {line_start!r} in /metrics"
            return float(lines[0].rsplit(" ", 1)[1])

        assert sample('cloudtriggers_reconciles_total{provider="gitlab",result="Available"}') >= 1
        assert sample('cloudtriggers_reconciles_total{provider="gitlab",result="CredentialsInvalid"}') >= 1
        assert sample('cloudtriggers_reconcile_duration_seconds_count{provider="gitlab"}') >= 2
        create = 'operation="POST /api/v4/projects/{id}/triggers"'
        assert sample(f'cloudtriggers_provider_requests_total{{code="201",{create},provider="gitlab"}}') >= 1
        assert sample('cloudtriggers_provider_request_duration_seconds_count{operation="POST') >= 1
        assert 'cloudtriggers_provider_requests_total{code="401"' in text
        assert sample('cloudtriggers_triggers{provider="gitlab",ready="True"}') == 1
        assert "cloudtriggers_rate_limiter_wait_seconds_total" in text
        assert "cloudtriggers_drift_repairs_total" in text

        warnings = [e for e in world.events("apps", "web") if e["type"] == "Warning"]
        assert [e["reason"] for e in warnings] == ["CredentialsInvalid"]
        # Posted from a thread of its own after the pass's status write (event_poster.py).
        wait_for(lambda: "Created" in [e["reason"] for e in world.events("apps", "web")], what="Created")

    lines = [ln for ln in logged.getvalue().splitlines() if ln.strip()]
    assert len(lines) > 20
    records = [json.loads(ln) for ln in lines]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert any(r.get("trigger") == "apps/web" for r in records)
    whole = logged.getvalue()
    assert token not in whole and user.token not in whole and "glpat-revoked-0000000000" not in whole
