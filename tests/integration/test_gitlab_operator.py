"""The operator in-process (kopf in a thread) against the emulated Kubernetes API and the GitLab sandbox.

Each scenario of the foundation issue, observed only from outside: the Kubernetes objects, the
events, and the requests the GitLab sandbox received.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from cloudtriggers.sandbox.gitlab import MAINTAINER, SandboxUser
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for
from cloudtriggers.settings import Settings


class World(LocalWorld):
    """LocalWorld plus scenario helpers; tests/e2e runs the same scenarios on a real cluster."""

    ns = "apps"
    user: SandboxUser
    pid: int
    gitlab_tokens: list[dict[str, Any]]

    def trigger_obj(self, name: str, **spec: Any) -> dict[str, Any]:
        gitlab = {"url": self.gitlab.url, "project": "group/web", **spec.pop("gitlab", {})}
        return {
            "apiVersion": "cloudtriggers.io/v1alpha1",
            "kind": "Trigger",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {"gitlab": gitlab, "credentialsSecretRef": {"name": "gl"}, **spec},
        }

    def ready(self, name: str, reason: str = "Available", timeout: float = 15.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.trigger(self.ns, name)
            c = condition(obj)
            return (
                obj
                if c.get("reason") == reason
                and c.get("observedGeneration") == (obj or {}).get("metadata", {}).get("generation")
                else None
            )

        return wait_for(probe, timeout=timeout, what=f"{name} Ready reason={reason}")

    def writes(self) -> list[str]:
        return [f"{c.method} {c.path}" for c in self.gitlab.calls() if c.method in {"POST", "PUT", "DELETE"}]

    def secret_data(self, name: str) -> dict[str, str]:
        import base64

        s = self.secret(self.ns, name) or {}
        return {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}


def assert_no_secret_in_logs(world: World, records: list[logging.LogRecord]) -> None:
    """No token or credential ever reaches a log line (kopf's, the clients', ours)."""
    secrets = [world.user.token] + [t["token"] for t in world.gitlab_tokens]
    text = "\n".join(r.getMessage() for r in records)
    leaked = [s[:8] + "..." for s in secrets if s in text]
    assert leaked == [], f"secrets found in logs: {leaked}"


def setup_world(w: World) -> World:
    w.user = w.gitlab.add_user("bot")
    w.pid = w.gitlab.add_project("group/web", {"bot": MAINTAINER})
    w.gitlab_tokens = []
    w.apply_secret(w.ns, "gl", {"token": w.user.token})
    w.start_operator()
    return w


@pytest.fixture
def world(caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    caplog.set_level(logging.DEBUG)
    w = World(Settings(credentials_poll=0.5))
    w.start()
    try:
        yield setup_world(w)
        w.gitlab_tokens = w.gitlab.triggers(w.pid)
    finally:
        w.stop()
    # caplog.records holds only the teardown phase: the test's own lines are in the "call" phase.
    assert_no_secret_in_logs(w, [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records])


def _no_token_outside_secret(world: World, token: str, name: str) -> None:
    visible = json.dumps(world.trigger(world.ns, name)) + json.dumps(world.events(world.ns, name))
    assert token not in visible


def test_create_becomes_ready_with_id_and_secret(world: World) -> None:
    world.create_trigger(world.trigger_obj("web"))
    obj = world.ready("web")
    [trig] = world.gitlab.triggers(world.pid)
    assert obj["status"]["externalId"] == str(trig["id"])
    assert obj["status"]["provider"] == "gitlab"
    assert condition(obj, "Synced")["status"] == "True"
    data = world.secret_data("web-trigger")
    assert data == {
        "token": trig["token"],
        "url": f"{world.gitlab.url}/api/v4/projects/{world.pid}/trigger/pipeline",
    }
    secret = world.secret(world.ns, "web-trigger") or {}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert "cloudtriggers.io/finalizer" in obj["metadata"]["finalizers"]
    # Posted from a thread of its own after the pass's status write (event_poster.py).
    wait_for(
        lambda: any(e["reason"] == "Created" for e in world.events(world.ns, "web")), what="the Created Event"
    )
    assert world.writes() == [f"POST /api/v4/projects/{world.pid}/triggers"]
    _no_token_outside_secret(world, trig["token"], "web")


def test_description_change_is_one_put_same_id(world: World) -> None:
    world.create_trigger(world.trigger_obj("web"))
    ext = world.ready("web")["status"]["externalId"]
    world.patch_trigger(world.ns, "web", {"spec": {"gitlab": {"description": "redeploy web"}}})
    obj = world.ready("web")
    assert obj["metadata"]["generation"] == 2
    assert obj["status"]["externalId"] == ext
    assert world.gitlab.triggers(world.pid)[0]["description"] == "redeploy web"
    assert [w.split()[0] for w in world.writes()] == ["POST", "PUT"]


def test_deleted_at_provider_is_recreated_with_new_secret_and_event(world: World) -> None:
    world.create_trigger(world.trigger_obj("web", resyncPeriod="5s"))
    old = world.ready("web")["status"]["externalId"]
    old_token = world.secret_data("web-trigger")["token"]
    world.gitlab.delete_trigger(world.pid, int(old))
    wait_for(
        lambda: len(world.gitlab.triggers(world.pid)) == 1, timeout=15, what="the drift timer to recreate"
    )
    obj = world.ready("web")
    [new] = world.gitlab.triggers(world.pid)
    assert obj["status"]["externalId"] == str(new["id"]) != old
    wait_for(lambda: world.secret_data("web-trigger")["token"] == new["token"], what="Secret update")
    assert new["token"] != old_token
    # Posted from a thread of its own after the pass's status write (event_poster.py).
    wait_for(
        lambda: any(e["reason"] == "Recreated" for e in world.events(world.ns, "web")),
        what="the Recreated Event",
    )


def test_reconcile_requested_at_annotation_forces_a_pass(world: World) -> None:
    world.create_trigger(world.trigger_obj("web"))
    old = world.ready("web")["status"]["externalId"]
    world.gitlab.delete_trigger(world.pid, int(old))
    world.patch_trigger(
        world.ns, "web", {"metadata": {"annotations": {"cloudtriggers.io/reconcile-requested-at": "now"}}}
    )
    wait_for(lambda: len(world.gitlab.triggers(world.pid)) == 1, timeout=10, what="recreate on request")


def test_rotate_requested_at_annotation_rotates_with_overlap(world: World) -> None:
    world.create_trigger(world.trigger_obj("web", rotation={"overlap": "8s"}))
    first = world.ready("web")["status"]["externalId"]
    token = world.secret_data("web-trigger")["token"]
    world.patch_trigger(
        world.ns, "web", {"metadata": {"annotations": {"cloudtriggers.io/rotate-requested-at": "1"}}}
    )
    wait_for(lambda: world.secret_data("web-trigger").get("token") not in (None, token), timeout=15)
    new = world.secret_data("web-trigger")["token"]
    assert {t["token"] for t in world.gitlab.triggers(world.pid)} == {token, new}  # the overlap
    wait_for(lambda: [t["token"] for t in world.gitlab.triggers(world.pid)] == [new], timeout=30)
    status = world.ready("web")["status"]
    assert status["externalId"] != first and status["rotation"]["lastRotationTime"]
    assert "Rotated" in [e["reason"] for e in world.events(world.ns, "web")]
    _no_token_outside_secret(world, new, "web")
    world.gitlab_tokens = [{"token": token}, {"token": new}]


def test_delete_removes_provider_trigger_and_finalizer(world: World) -> None:
    world.create_trigger(world.trigger_obj("web"))
    ext = world.ready("web")["status"]["externalId"]
    world.delete_trigger(world.ns, "web")
    wait_for(lambda: world.trigger(world.ns, "web") is None, what="the Trigger to be gone")
    assert world.gitlab.triggers(world.pid) == []
    assert f"DELETE /api/v4/projects/{world.pid}/triggers/{ext}" in world.writes()
    # Owned by the Trigger, so collected with it.
    wait_for(lambda: world.secret(world.ns, "web-trigger") is None, what="the output Secret to be collected")


@pytest.mark.parametrize("policy", ["Foreground", "Orphan"])
def test_a_delete_with_a_propagation_policy_deletes_the_provider_trigger(
    world: World, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`kubectl delete --cascade=foreground` (Argo CD prunes so by default) and `--cascade=orphan`:
    the API server adds the garbage collector's finalizer beside ours (the emulated API does, as
    store.go does), and the collector takes it off when it is done; ours is not affected."""
    world.create_trigger(world.trigger_obj("web"))
    world.ready("web")
    world.custom.delete_namespaced_custom_object(
        "cloudtriggers.io", "v1alpha1", world.ns, "triggers", "web", propagation_policy=policy
    )
    wait_for(lambda: world.trigger(world.ns, "web") is None, what="the Trigger to be gone")
    assert world.gitlab.triggers(world.pid) == []
    if policy == "Foreground":
        assert world.secret(world.ns, "web-trigger") is None  # deleted before the Trigger went
    else:  # kept, without its owner, as asked
        assert not (world.secret(world.ns, "web-trigger") or {})["metadata"].get("ownerReferences")
    noisy = [
        r.getMessage()
        for r in caplog.get_records("call")
        if r.levelno >= logging.WARNING and r.name.startswith("cloudtriggers")
    ]
    assert noisy == []


def test_orphan_keeps_provider_trigger(world: World) -> None:
    world.create_trigger(world.trigger_obj("web", deletionPolicy="Orphan"))
    ext = world.ready("web")["status"]["externalId"]
    world.delete_trigger(world.ns, "web")
    wait_for(lambda: world.trigger(world.ns, "web") is None, what="the Trigger to be gone")
    assert [str(t["id"]) for t in world.gitlab.triggers(world.pid)] == [ext]
    assert not any(w.startswith("DELETE") for w in world.writes())


def test_observe_only_makes_zero_write_calls(world: World) -> None:
    existing = world.gitlab.create_trigger_as("bot", world.pid, "made by hand")
    world.create_trigger(
        world.trigger_obj("obs", managementPolicy="ObserveOnly", externalId=str(existing["id"]))
    )
    obj = world.ready("obs", reason="Observed")
    assert obj["status"]["externalId"] == str(existing["id"])
    world.delete_trigger(world.ns, "obs")
    wait_for(lambda: world.trigger(world.ns, "obs") is None, what="the Trigger to be gone")
    assert world.writes() == []
    assert len(world.gitlab.triggers(world.pid)) == 1


def test_invalid_spec_is_invalidspec_with_zero_provider_calls(world: World) -> None:
    bad = world.trigger_obj("bad", resyncPeriod="1s")  # the emulator has no CRD validation; the operator does
    world.create_trigger(bad)
    obj = world.ready("bad", reason="InvalidSpec")
    assert "resyncPeriod must be at least 5s" in condition(obj)["message"]
    assert world.gitlab.calls() == []
    # Fixing the spec is enough to proceed.
    world.patch_trigger(world.ns, "bad", {"spec": {"resyncPeriod": "10m"}})
    world.ready("bad")


def test_missing_credentials_then_ready_when_secret_appears(world: World) -> None:
    obj = world.trigger_obj("web")
    obj["spec"]["credentialsSecretRef"] = {"name": "later"}
    world.create_trigger(obj)
    world.ready("web", reason="CredentialsMissing")
    assert world.gitlab.calls() == []
    world.apply_secret(world.ns, "later", {"token": world.user.token})
    world.ready("web", timeout=10)


def test_lost_create_response_then_restart_gives_exactly_one_trigger(world: World) -> None:
    world.gitlab.faults.drop_after_create = 1
    world.create_trigger(world.trigger_obj("web"))
    wait_for(
        lambda: (
            (world.trigger(world.ns, "web") or {}).get("status", {}).get("pendingCreate")
            and condition(world.trigger(world.ns, "web"), "Synced").get("status") == "False"
        ),
        what="the failed create to be recorded",
    )
    assert len(world.gitlab.triggers(world.pid)) == 1  # created, but the answer was lost
    world.stop_operator()
    world.start_operator()
    obj = world.ready("web")
    [trig] = world.gitlab.triggers(world.pid)
    assert obj["status"]["externalId"] == str(trig["id"])
    assert "pendingCreate" not in obj["status"]
    assert world.secret_data("web-trigger")["token"] == trig["token"]
    assert len(world.gitlab.calls("POST", "/triggers")) == 1


def test_restart_of_ready_triggers_makes_no_provider_call(world: World) -> None:
    for n in ("a", "b", "c"):
        world.create_trigger(world.trigger_obj(n))
    for n in ("a", "b", "c"):
        world.ready(n)
    world.stop_operator()
    world.gitlab.clear_requests()
    world.start_operator()
    import time

    time.sleep(1.0)
    assert world.gitlab.calls() == []
