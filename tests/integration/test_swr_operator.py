"""The operator in-process (kopf in a thread) against the emulated Kubernetes API and the SWR sandbox.

The SWR scenarios observed only from outside: the Kubernetes objects, the events, and the requests
the SWR sandbox received. Temporary credentials are used so that both the secret key and the
security token are checked against every captured log line.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from cloudtriggers.providers.base import AccountLimiter, Observed, Target
from cloudtriggers.providers.swr import SwrProvider
from cloudtriggers.sandbox import LOOPBACK
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for
from cloudtriggers.sandbox.swr import SwrAccount, SwrSandbox, SwrTemporaryCredentials
from cloudtriggers.settings import Settings

NS = "apps"
TRIGGERS = "/v2/manage/namespaces/group/repos/team%24web/triggers"


class World(LocalWorld):
    ns = NS
    swr: SwrSandbox
    account: SwrAccount
    temp: SwrTemporaryCredentials

    def trigger_obj(self, name: str, **spec: Any) -> dict[str, Any]:
        swr = {
            "region": "cn-north-4",
            "organization": "group",
            "repository": "team/web",
            "application": "web",
            "clusterNamespace": "default",
            "clusterName": "prod",
            "endpoint": self.swr.url,
            **spec.pop("swr", {}),
        }
        return {
            "apiVersion": "cloudtriggers.io/v1alpha1",
            "kind": "Trigger",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {"swr": swr, "credentialsSecretRef": {"name": "swr-credentials"}, **spec},
        }

    def ready(self, name: str, reason: str = "Available", timeout: float = 15.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.trigger(self.ns, name)
            c = condition(obj)
            generation = (obj or {}).get("metadata", {}).get("generation")
            return obj if c.get("reason") == reason and c.get("observedGeneration") == generation else None

        return wait_for(probe, timeout=timeout, what=f"{name} Ready reason={reason}")

    def writes(self) -> list[str]:
        return [f"{c.method} {c.path}" for c in self.swr.calls() if c.method != "GET"]

    def reasons(self, name: str) -> list[str]:
        return [e["reason"] for e in self.events(self.ns, name)]


@contextlib.contextmanager
def swr_world(cls: type[World], caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    """The SWR scenarios' world on `cls`: LocalWorld here, the real cluster in tests/e2e."""
    caplog.set_level(logging.DEBUG)
    provider = SwrProvider(policy=LOOPBACK, limiter=AccountLimiter(rate=1000, burst=1000), timeout=(2.0, 5.0))
    w = cls(Settings(credentials_poll=0.5), providers={"swr": provider})
    w.start()  # starts (and stops) its own SWR sandbox
    try:
        w.account = w.swr.add_account("bot")
        w.temp = w.swr.add_temporary_credentials("bot")
        w.swr.add_repository("group", "team/web")
        w.apply_secret(
            w.ns,
            "swr-credentials",
            {
                "accessKey": w.temp.access_key,
                "secretKey": w.temp.secret_key,
                "securityToken": w.temp.security_token,
                "projectId": w.account.project_id,
            },
        )
        w.start_operator()
        yield w
    finally:
        w.stop()
    # caplog.records holds only the current phase (teardown): the call's lines are kept separately.
    records = caplog.get_records("setup") + caplog.get_records("call") + caplog.records
    text = "\n".join(r.getMessage() for r in records)
    assert "swr: GET /v2/manage/namespaces/" in text  # the check below sees the provider's own lines
    secrets = [w.temp.secret_key, w.temp.security_token, w.account.secret_key]
    leaked = [s[:6] + "..." for s in secrets if s in text]
    assert leaked == [], f"secrets found in logs: {leaked}"


@pytest.fixture
def world(caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    with swr_world(World, caplog) as w:
        yield w


def test_create_becomes_ready_with_the_name_as_id_and_no_secret(world: World) -> None:
    world.create_trigger(world.trigger_obj("web"))
    obj = world.ready("web")
    [trig] = world.swr.triggers("group", "team/web")
    assert obj["status"]["externalId"] == trig["name"] == "web"
    assert obj["status"]["provider"] == "swr"
    assert obj["status"]["atProvider"]["repository"] == "team/web"
    assert condition(obj, "Synced")["status"] == "True"
    assert world.secret(world.ns, "web-trigger") is None  # SWR triggers have no secret outputs
    assert world.writes() == [f"POST {TRIGGERS}"]
    assert all(c.authenticated and "x-security-token" in c.headers for c in world.swr.calls())
    wait_for(lambda: "Created" in world.reasons("web"), what="the Created event")  # emitted after the status
    visible = json.dumps(obj) + json.dumps(world.events(world.ns, "web"))
    assert world.temp.secret_key not in visible and world.temp.security_token not in visible


def test_enable_toggle_is_one_patch(world: World) -> None:
    world.create_trigger(world.trigger_obj("web"))
    world.ready("web")
    world.patch_trigger(world.ns, "web", {"spec": {"swr": {"enabled": False}}})
    obj = world.ready("web")
    assert obj["metadata"]["generation"] == 2 and obj["status"]["externalId"] == "web"
    assert world.writes() == [f"POST {TRIGGERS}", f"PATCH {TRIGGERS}/web"]
    assert world.swr.trigger("group", "team/web", "web")["enable"] == "false"  # type: ignore[index]


def test_condition_change_is_delete_then_create_same_name(world: World) -> None:
    world.create_trigger(world.trigger_obj("web"))
    world.ready("web")
    world.patch_trigger(
        world.ns, "web", {"spec": {"swr": {"triggerType": "regular", "condition": "^v[0-9]+$"}}}
    )
    obj = world.ready("web")
    assert obj["metadata"]["generation"] == 2 and obj["status"]["externalId"] == "web"
    assert world.writes() == [f"POST {TRIGGERS}", f"DELETE {TRIGGERS}/web", f"POST {TRIGGERS}"]
    [trig] = world.swr.triggers("group", "team/web")
    assert (trig["name"], trig["trigger_type"], trig["condition"]) == ("web", "regular", "^v[0-9]+$")
    wait_for(lambda: "Replaced" in world.reasons("web"), what="the Replaced event")


def test_pre_existing_matching_trigger_is_adopted(world: World) -> None:
    world.swr.create_trigger(
        "group", "team/web", "web", application="web", cluster_name="prod", cluster_ns="default"
    )
    world.create_trigger(world.trigger_obj("web"))
    obj = world.ready("web")
    assert obj["status"]["externalId"] == "web"
    assert world.writes() == []
    wait_for(lambda: "Adopted" in world.reasons("web"), what="the Adopted event")


def test_adoption_after_a_409_on_create(world: World) -> None:
    """The same trigger appears between the operator's observe and its create (a console user, say)."""
    provider = world.providers["swr"]  # type: ignore[index]
    real_observe = provider.observe

    def racing_observe(target: Target, external_id: str) -> Observed | None:
        seen = real_observe(target, external_id)
        if seen is None and not world.swr.triggers("group", "team/web"):
            world.swr.create_trigger(
                "group", "team/web", external_id, application="web", cluster_name="prod", cluster_ns="default"
            )
        return seen

    provider.observe = racing_observe  # type: ignore[method-assign]
    world.create_trigger(world.trigger_obj("web"))
    obj = world.ready("web")
    assert obj["status"]["externalId"] == "web"
    assert [c.status for c in world.swr.calls("POST")] == [409]
    assert len(world.swr.triggers("group", "team/web")) == 1
    wait_for(lambda: "Adopted" in world.reasons("web"), what="the Adopted event")


def test_pre_existing_different_trigger_is_conflict_without_writes(world: World) -> None:
    world.swr.create_trigger("group", "team/web", "web", application="api", cluster_name="prod")
    world.create_trigger(world.trigger_obj("web"))
    obj = world.ready("web", reason="Conflict")
    assert "differs in: application" in condition(obj)["message"]
    assert world.writes() == []


def test_delete_sends_delete_and_releases_the_trigger(world: World) -> None:
    world.create_trigger(world.trigger_obj("web"))
    world.ready("web")
    world.delete_trigger(world.ns, "web")
    wait_for(lambda: world.trigger(world.ns, "web") is None, what="the Trigger to be gone")
    assert world.swr.triggers("group", "team/web") == []
    assert world.writes()[-1] == f"DELETE {TRIGGERS}/web"


def test_bad_secret_key_is_credentials_invalid_with_at_most_three_attempts(world: World) -> None:
    world.apply_secret(
        world.ns, "bad", {"accessKey": world.account.access_key, "secretKey": "not-the-key-" * 3}
    )
    obj = world.trigger_obj("web")
    obj["spec"]["credentialsSecretRef"] = {"name": "bad"}
    world.create_trigger(obj)
    world.ready("web", reason="CredentialsInvalid")
    assert 1 <= len(world.swr.calls()) <= 3 and not world.swr.locked(world.account.access_key)
