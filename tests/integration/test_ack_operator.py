"""The operator in-process (kopf in a thread) against the emulated Kubernetes API and the ACK sandbox.

The ACK scenarios observed only from outside: the Kubernetes objects, the events, and the requests the
ACK sandbox received. STS credentials (AccessKey, secret and security token) are used, so all three and
every trigger token are checked against every captured log line.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cloudtriggers.providers.ack import HOOK_URL, AckProvider
from cloudtriggers.providers.base import AccountLimiter
from cloudtriggers.sandbox import LOOPBACK
from cloudtriggers.sandbox.ack import AckSandbox, StsCredentials
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for
from cloudtriggers.settings import Settings

NS = "apps"


class World(LocalWorld):
    ns = NS
    ack: AckSandbox
    cid: str
    sts: StsCredentials
    tokens: set[str]

    def trigger_obj(self, name: str, **spec: Any) -> dict[str, Any]:
        ack = {
            "regionId": "cn-beijing",
            "clusterId": self.cid,
            "projectId": "default/web",
            "endpoint": self.ack.url,
            **spec.pop("ack", {}),
        }
        return {
            "apiVersion": "cloudtriggers.io/v1alpha1",
            "kind": "Trigger",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {"ack": ack, "credentialsSecretRef": {"name": "ali"}, **spec},
        }

    def ready(self, name: str, reason: str = "Available", timeout: float = 15.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.trigger(self.ns, name)
            c = condition(obj)
            generation = (obj or {}).get("metadata", {}).get("generation")
            return obj if c.get("reason") == reason and c.get("observedGeneration") == generation else None

        return wait_for(probe, timeout=timeout, what=f"{name} Ready reason={reason}")

    def writes(self) -> list[str]:
        return [f"{c.method} {c.path}" for c in self.ack.calls() if c.method != "GET"]

    def secret_data(self, name: str) -> dict[str, str]:
        s = self.secret(self.ns, name) or {}
        return {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}

    def server_triggers(self) -> list[dict[str, Any]]:
        found = self.ack.triggers(self.cid)
        self.tokens.update(t["token"] for t in found)
        return found


@contextlib.contextmanager
def ack_world(cls: type[World], caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    """The ACK scenarios' world on `cls`: LocalWorld here, the real cluster in tests/e2e."""
    caplog.set_level(logging.DEBUG)
    provider = AckProvider(
        policy=LOOPBACK, limiter=AccountLimiter(rate=1000, burst=1000), timeout=(2.0, 5.0), environ={}
    )
    w = cls(Settings(credentials_poll=0.5), providers={"ack": provider})
    w.tokens = set()
    w.start()  # starts (and stops) its own ACK sandbox
    try:
        w.ack.add_account("bot")
        w.cid = w.ack.add_cluster("bot", applications=("default/web", "default/api"))
        w.sts = w.ack.issue_sts("bot")
        w.apply_secret(
            w.ns,
            "ali",
            {
                "accessKeyId": w.sts.access_key_id,
                "accessKeySecret": w.sts.access_key_secret,
                "securityToken": w.sts.security_token,
            },
        )
        w.start_operator()
        yield w
        w.server_triggers()
    finally:
        w.stop()
    # No credential and no trigger token reaches a log line (kopf's, the clients', ours). In teardown
    # caplog.records holds the teardown records only: the test's own come from get_records("call").
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    assert records, "no log records captured: the check below would prove nothing"
    text = "\n".join(r.getMessage() for r in records)
    secrets = [w.sts.access_key_secret, w.sts.security_token, *w.tokens]
    leaked = [s[:8] + "..." for s in secrets if s in text]
    assert leaked == [], f"secrets found in logs: {leaked}"


@pytest.fixture
def world(caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    with ack_world(World, caplog) as w:
        yield w


def test_create_becomes_ready_with_token_and_url_in_owned_secret(world: World) -> None:
    world.create_trigger(world.trigger_obj("web"))
    obj = world.ready("web")
    [trig] = world.server_triggers()
    assert obj["status"]["externalId"] == trig["id"] and obj["status"]["provider"] == "ack"
    assert world.secret_data("web-trigger") == {"token": trig["token"], "url": HOOK_URL + trig["token"]}
    secret = world.secret(world.ns, "web-trigger") or {}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    assert world.writes() == [f"POST /clusters/{world.cid}/triggers"]
    assert all(c.sts for c in world.ack.calls())  # signed with the Secret's security token
    visible = json.dumps(world.trigger(world.ns, "web")) + json.dumps(world.events(world.ns, "web"))
    assert trig["token"] not in visible


def test_project_change_replaces_the_trigger_and_moves_the_secret(world: World) -> None:
    world.create_trigger(world.trigger_obj("web"))
    obj = world.ready("web")
    old, uid = obj["status"]["externalId"], obj["metadata"]["uid"]
    started = time.monotonic()
    world.patch_trigger(world.ns, "web", {"spec": {"ack": {"projectId": "default/api"}}})
    obj = world.ready("web")
    elapsed = time.monotonic() - started
    [new] = world.server_triggers()  # one new trigger; the old one is deleted
    assert new["project_id"] == "default/api" and new["id"] != old
    assert obj["metadata"]["uid"] == uid and obj["metadata"]["generation"] == 2  # the same Trigger object
    assert obj["status"]["externalId"] == new["id"] and "pendingDelete" not in obj["status"]
    wait_for(lambda: world.secret_data("web-trigger")["token"] == new["token"], what="the Secret update")
    assert world.secret_data("web-trigger")["url"] == HOOK_URL + new["token"]
    assert [w.split()[0] for w in world.writes()] == ["POST", "POST", "DELETE"]
    assert world.writes()[-1].endswith(f"/triggers/{old}")
    # Posted from a thread of its own after the pass's status write (event_poster.py).
    wait_for(
        lambda: any(e["reason"] == "Replaced" for e in world.events(world.ns, "web")),
        what="the Replaced Event",
    )
    print(f"\nreplacement: spec patch to Ready with the new trigger in {elapsed * 1000:.0f} ms")


def test_rotation_hands_the_hook_url_over_then_deletes_the_old_trigger(world: World) -> None:
    world.create_trigger(world.trigger_obj("web", rotation={"overlap": "8s"}))
    old = world.ready("web")["status"]["externalId"]
    old_url = world.secret_data("web-trigger")["url"]
    world.patch_trigger(
        world.ns, "web", {"metadata": {"annotations": {"cloudtriggers.io/rotate-requested-at": "leak"}}}
    )
    wait_for(lambda: world.secret_data("web-trigger").get("url") not in (None, old_url), timeout=15)

    def rotated_id() -> str | None:  # the status is written after the Secret, in the same pass
        got = ((world.trigger(world.ns, "web") or {}).get("status") or {}).get("externalId")
        return got if got != old else None

    new = wait_for(rotated_id, timeout=15, what="the new trigger's id in status")
    ids = {t["id"] for t in world.server_triggers()}
    assert ids == {old, new}  # the overlap: the old hook URL still works
    assert world.secret_data("web-trigger")["url"] == HOOK_URL + world.secret_data("web-trigger")["token"]
    wait_for(lambda: [t["id"] for t in world.server_triggers()] == [new], timeout=30, what="old deleted")
    assert any(e["reason"] == "Rotated" for e in world.events(world.ns, "web"))
    assert world.writes()[-1].endswith(f"/triggers/{old}")


def test_deleted_at_provider_is_recreated_with_a_new_token_in_the_secret(world: World) -> None:
    world.create_trigger(world.trigger_obj("web"))
    old = world.ready("web")["status"]["externalId"]
    old_token = world.secret_data("web-trigger")["token"]
    world.server_triggers()
    world.ack.delete_trigger(world.cid, old)
    # Ask for a pass now rather than wait for the drift timer (same reconcile path, seconds sooner).
    world.patch_trigger(
        world.ns, "web", {"metadata": {"annotations": {"cloudtriggers.io/reconcile-requested-at": "now"}}}
    )
    wait_for(lambda: len(world.server_triggers()) == 1, timeout=10, what="the recreate")
    [new] = world.server_triggers()
    assert new["id"] != old
    wait_for(lambda: world.secret_data("web-trigger")["token"] == new["token"], what="the Secret update")
    assert new["token"] != old_token
    obj = world.ready("web")
    assert obj["status"]["externalId"] == new["id"]


def test_delete_calls_delete_trigger_and_collects_the_secret(world: World) -> None:
    world.create_trigger(world.trigger_obj("web"))
    ext = world.ready("web")["status"]["externalId"]
    world.server_triggers()
    world.delete_trigger(world.ns, "web")
    wait_for(lambda: world.trigger(world.ns, "web") is None, what="the Trigger to be gone")
    assert world.server_triggers() == []
    assert f"DELETE /clusters/{world.cid}/triggers/{ext}" in world.writes()
    wait_for(lambda: world.secret(world.ns, "web-trigger") is None, what="the output Secret to be collected")


def test_throttling_waits_as_long_as_x_acs_retry_after_says(world: World) -> None:
    world.ack.faults.retry_after_ms = 1500
    world.ack.fail_next(1, 400, "Throttling.User")
    world.create_trigger(world.trigger_obj("web"))
    obj = world.ready("web", timeout=15)
    throttled, *rest = world.ack.calls()
    assert throttled.code == "Throttling.User"
    waited = rest[0].at - throttled.at
    assert 1.5 <= waited < 3.0, waited
    assert obj["status"]["externalId"] == world.server_triggers()[0]["id"]
    print(f"\nthrottled: next request {waited * 1000:.0f} ms after x-acs-retry-after: 1500")


def test_lost_create_response_then_restart_gives_exactly_one_trigger(world: World) -> None:
    world.ack.faults.drop_after_create = 1
    world.create_trigger(world.trigger_obj("web"))
    wait_for(
        lambda: (
            (world.trigger(world.ns, "web") or {}).get("status", {}).get("pendingCreate")
            and condition(world.trigger(world.ns, "web"), "Synced").get("status") == "False"
        ),
        what="the failed create to be recorded",
    )
    assert len(world.server_triggers()) == 1  # created, but the answer was lost
    world.stop_operator()
    world.start_operator()
    obj = world.ready("web")
    [trig] = world.server_triggers()
    assert obj["status"]["externalId"] == trig["id"] and "pendingCreate" not in obj["status"]
    assert world.secret_data("web-trigger")["token"] == trig["token"]
    assert len(world.ack.calls("POST")) == 1


def test_observe_only_makes_zero_write_calls(world: World) -> None:
    existing = world.ack.create_trigger_as("bot", world.cid, "default/web")
    world.create_trigger(world.trigger_obj("obs", managementPolicy="ObserveOnly", externalId=existing["id"]))
    obj = world.ready("obs", reason="Observed")
    assert obj["status"]["externalId"] == existing["id"]
    world.delete_trigger(world.ns, "obs")
    wait_for(lambda: world.trigger(world.ns, "obs") is None, what="the Trigger to be gone")
    assert world.writes() == []
    assert len(world.server_triggers()) == 1


def test_missing_credentials_then_ready_when_the_secret_appears(world: World) -> None:
    obj = world.trigger_obj("web")
    obj["spec"]["credentialsSecretRef"] = {"name": "later"}
    world.create_trigger(obj)
    world.ready("web", reason="CredentialsMissing")
    assert world.ack.calls() == []
    world.apply_secret(
        world.ns,
        "later",
        {
            "accessKeyId": world.sts.access_key_id,
            "accessKeySecret": world.sts.access_key_secret,
            "securityToken": world.sts.security_token,
        },
    )
    world.ready("web", timeout=10)
