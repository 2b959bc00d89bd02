"""Rotation in the running operator: a new value of cloudtriggers.io/rotate-requested-at rotates the
token within seconds, the output Secret says when (for tools that restart what mounts it), and the
old token stops working once the overlap has run."""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import pytest

from cloudtriggers.reconcile import ROTATE_ANNOTATION
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for
from cloudtriggers.settings import Settings
from faults.faultkit import KITS, NS, trigger_obj


def token_in(w: LocalWorld, ns: str = NS) -> str:
    """The token the output Secret holds now ("" when there is none)."""
    secret = w.secret(ns, "web-trigger") or {}
    return base64.b64decode((secret.get("data") or {}).get("token", "")).decode()


def test_on_demand_rotation_within_seconds_and_the_old_token_after_the_overlap() -> None:
    kit = KITS["gitlab"]
    with LocalWorld(Settings(credentials_poll=0.5)) as w:
        kit.setup(w)
        w.start_operator()
        w.create_trigger(trigger_obj(w, kit, "web", rotation={"overlap": "8s"}))
        wait_for(lambda: condition(w.trigger(NS, "web")).get("reason") == "Available")

        def token() -> str:
            return token_in(w)

        first = token()
        asked = time.monotonic()
        w.patch_trigger(NS, "web", {"metadata": {"annotations": {ROTATE_ANNOTATION: "2026-12-03T16:00:00Z"}}})
        wait_for(lambda: token() not in ("", first), timeout=15, what="rotated")
        print(f"rotated {time.monotonic() - asked:.2f} s after the request")
        live = [t for _, t in kit.objects(w)]
        assert first in live and token() in live  # the overlap: both work
        annotations = (w.secret(NS, "web-trigger") or {})["metadata"].get("annotations") or {}
        assert annotations.get("cloudtriggers.io/rotated-at")
        # The Event is posted from a thread of its own after the pass's writes (event_poster.py).
        wait_for(
            lambda: any(e["reason"] == "Rotated" for e in w.events(NS, "web")), timeout=10, what="Rotated"
        )
        wait_for(lambda: [t for _, t in kit.objects(w)] == [token()], timeout=30, what="old token deleted")

        # The provider delete comes first and the status write that forgets it second (a crash
        # between them repeats an idempotent delete), so the status may lag the provider briefly.
        def status() -> dict[str, Any]:
            return (w.trigger(NS, "web") or {}).get("status") or {}

        wait_for(lambda: "pendingDelete" not in status(), timeout=10, what="pendingDelete gone")
        assert status()["rotation"]["requested"] == "2026-12-03T16:00:00Z"
        assert [t for _, t in kit.objects(w)] == [token()]


REFUSED_SETTINGS = Settings(credentials_poll=0.5, slow_backoff=(0.5, 1.0))


def refused_secret_scenario(w: LocalWorld, ns: str) -> None:
    """A user made the output Secret immutable: a real API server refuses any change of its data
    (pkg/apis/core/validation ValidateSecretUpdate), so a rotation's new token cannot be written.
    The Trigger says so; the old token keeps working, the new trigger is made once; once the user
    deletes the Secret, the rotation finishes. (tests/e2e runs it on a real API server.)"""
    kit = KITS["gitlab"]
    w.apply_secret(ns, "creds", kit.prepare(w))
    w.start_operator()
    obj = trigger_obj(w, kit, "web", rotation={"overlap": "0s"})
    obj["metadata"]["namespace"] = ns
    w.create_trigger(obj)
    wait_for(lambda: condition(w.trigger(ns, "web")).get("reason") == "Available", timeout=15)

    first = token_in(w, ns)
    w.core.patch_namespaced_secret("web-trigger", ns, {"immutable": True})
    w.patch_trigger(ns, "web", {"metadata": {"annotations": {ROTATE_ANNOTATION: "2026-12-06T18:00:00Z"}}})
    refused = wait_for(
        lambda: (c := condition(w.trigger(ns, "web"))).get("reason") == "SecretRefused" and c,
        timeout=15,
        what="SecretRefused",
    )
    assert refused["status"] == "False"
    assert refused["message"] == (
        'the API server refused the output Secret web-trigger: Secret "web-trigger" is invalid: '
        "data: Forbidden: field is immutable when `immutable` is set"
    )
    time.sleep(3)  # a few retries: the new trigger is adopted each time, never made again
    live = [t for _, t in kit.objects(w)]
    assert len(live) == 2 and first in live and token_in(w, ns) == first  # the old token still works

    # The user deletes the Secret; the next pass writes it and finishes the rotation.
    w.core.delete_namespaced_secret("web-trigger", ns)
    wait_for(lambda: token_in(w, ns) not in ("", first), timeout=15, what="the new token written")
    wait_for(
        lambda: [t for _, t in kit.objects(w)] == [token_in(w, ns)], timeout=15, what="old token deleted"
    )
    wait_for(lambda: condition(w.trigger(ns, "web")).get("reason") == "Available", timeout=10)


def test_a_secret_the_api_server_refuses_to_change_is_said_and_nothing_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with LocalWorld(REFUSED_SETTINGS) as w:
        refused_secret_scenario(w, NS)
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert errors == []  # no traceback: a refusal is the condition's to say
