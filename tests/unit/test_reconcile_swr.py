"""Reconcile decisions for SWR, end to end through the real SWR provider and the SWR sandbox.

Kubernetes is the in-memory FakeKube: what is created, patched, replaced, adopted, refused and
deleted, and what the conditions say, without kopf.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cloudtriggers.models import swr_default_name
from cloudtriggers.providers.base import AccountLimiter, Observed, Target
from cloudtriggers.providers.swr import SwrProvider
from cloudtriggers.reconcile import Reconciler
from cloudtriggers.sandbox import LOOPBACK
from cloudtriggers.sandbox.swr import SwrAccount, SwrSandbox
from cloudtriggers.settings import Settings
from fakekube import FakeKube

NS = "apps"


@dataclass
class World:
    sb: SwrSandbox
    kube: FakeKube
    rec: Reconciler
    provider: SwrProvider
    bot: SwrAccount

    def spec(self, **over: Any) -> dict[str, Any]:
        swr = {
            "region": "cn-north-4",
            "organization": "group",
            "repository": "team/web",
            "application": "web",
            "clusterNamespace": "default",
            "clusterName": "prod",
            "endpoint": self.sb.url,
            **over.pop("swr", {}),
        }
        return {"swr": swr, "credentialsSecretRef": {"name": "swr"}, **over}

    def writes(self) -> list[str]:
        return [f"{c.method} {c.path}" for c in self.sb.calls() if c.method != "GET"]

    def methods(self) -> list[str]:
        return [c.method for c in self.sb.calls() if c.method != "GET"]

    def triggers(self, repo: str = "team/web") -> list[dict[str, Any]]:
        return self.sb.triggers("group", repo)


@pytest.fixture
def world() -> Iterator[World]:
    with SwrSandbox() as sb:
        bot = sb.add_account("bot")
        sb.add_repository("group", "team/web")
        sb.add_repository("group", "other")
        kube = FakeKube()
        kube.put_secret(NS, "swr", {"accessKey": bot.access_key, "secretKey": bot.secret_key})
        provider = SwrProvider(
            policy=LOOPBACK, limiter=AccountLimiter(rate=1000, burst=1000), timeout=(2.0, 5.0)
        )
        rec = Reconciler(kube, {"swr": provider}, Settings())
        yield World(sb, kube, rec, provider, bot)


def test_create_then_ready_with_name_as_id_and_no_secret(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    out = world.rec.reconcile(NS, "web")
    [trig] = world.triggers()
    assert trig["name"] == "web" and trig["enable"] == "true" and trig["cluster_name"] == "prod"
    st = world.kube.status(NS, "web")
    assert st["externalId"] == "web" and st["provider"] == "swr"
    assert st["atProvider"]["organization"] == "group" and st["atProvider"]["repository"] == "team/web"
    assert "secretName" not in st and "tokenSha256" not in st and "pendingCreate" not in st
    assert world.kube.cond(NS, "web")["reason"] == "Available"
    assert world.kube.cond(NS, "web", "Synced")["status"] == "True"
    assert list(world.kube.secrets) == [(NS, "swr")]  # SWR triggers have no secret outputs
    assert world.methods() == ["POST"]
    assert out.requeue_after is not None and out.requeue_after >= 300  # the next drift check, not a retry
    assert "Created" in world.kube.reasons()
    assert world.bot.secret_key not in json.dumps(list(world.kube.triggers.values()) + world.kube.events)


def test_second_pass_in_sync_makes_no_write_and_no_status_write(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    writes, status_writes = world.writes(), world.kube.status_writes
    world.rec.reconcile(NS, "web")
    assert world.writes() == writes
    assert world.kube.status_writes == status_writes


def test_enable_toggled_is_exactly_one_patch(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    ltt = world.kube.cond(NS, "web")["lastTransitionTime"]
    world.sb.clear_requests()
    world.kube.apply(NS, "web", world.spec(swr={"enabled": False}))
    world.rec.reconcile(NS, "web")
    assert world.writes() == ["PATCH /v2/manage/namespaces/group/repos/team%24web/triggers/web"]
    assert world.sb.calls("PATCH")[0].body == {"enable": "false"}
    assert world.triggers()[0]["enable"] == "false"
    assert world.kube.status(NS, "web")["externalId"] == "web"
    assert world.kube.cond(NS, "web")["reason"] == "Available"
    assert world.kube.cond(NS, "web")["lastTransitionTime"] == ltt
    assert "Updated" in world.kube.reasons()


def test_condition_changed_is_delete_then_create_same_name(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.sb.clear_requests()
    world.kube.apply(NS, "web", world.spec(swr={"triggerType": "tag", "condition": "v1;v2"}))
    world.rec.reconcile(NS, "web")
    base = "/v2/manage/namespaces/group/repos/team%24web/triggers"
    assert world.writes() == [f"DELETE {base}/web", f"POST {base}"]
    [trig] = world.triggers()
    assert (trig["name"], trig["trigger_type"], trig["condition"]) == ("web", "tag", "v1;v2")
    st = world.kube.status(NS, "web")
    assert st["externalId"] == "web" and "pendingCreate" not in st
    assert world.kube.cond(NS, "web")["reason"] == "Available"
    replaced = [e for e in world.kube.events if e["reason"] == "Replaced"]
    assert replaced and "condition, triggerType cannot change in place" in replaced[0]["message"]


def test_repository_change_moves_the_trigger(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.kube.apply(NS, "web", world.spec(swr={"repository": "other"}))
    world.rec.reconcile(NS, "web")
    assert world.triggers() == []
    assert [t["name"] for t in world.triggers("other")] == ["web"]
    assert world.kube.status(NS, "web")["atProvider"]["repository"] == "other"


def test_pre_existing_matching_trigger_is_adopted_without_writes(world: World) -> None:
    world.sb.create_trigger(
        "group", "team/web", "web", application="web", cluster_name="prod", cluster_ns="default"
    )
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    assert world.writes() == []
    assert world.kube.status(NS, "web")["externalId"] == "web"
    assert world.kube.cond(NS, "web")["reason"] == "Available"
    assert "Adopted" in world.kube.reasons()


def test_pre_existing_different_trigger_is_conflict_and_untouched(world: World) -> None:
    world.sb.create_trigger(
        "group", "team/web", "web", application="web", cluster_name="prod", condition=".*"
    )
    world.sb.edit_trigger("group", "team/web", "web", application="api")
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.rec.reconcile(NS, "web")
    assert world.writes() == []
    cond = world.kube.cond(NS, "web")
    assert cond["status"] == "False" and cond["reason"] == "Conflict"
    assert "already exists and differs in: application" in cond["message"]
    assert "externalId" not in world.kube.status(NS, "web")
    assert world.triggers()[0]["application"] == "api"


def test_409_race_then_adoption_on_the_next_pass(world: World) -> None:
    """Someone creates the same trigger between our observe and our create."""
    real_observe = world.provider.observe

    def racing_observe(target: Target, external_id: str) -> Observed | None:
        seen = real_observe(target, external_id)
        if seen is None and not world.triggers():
            world.sb.create_trigger(
                "group", "team/web", external_id, application="web", cluster_name="prod", cluster_ns="default"
            )
        return seen

    world.provider.observe = racing_observe  # type: ignore[method-assign]
    world.kube.apply(NS, "web", world.spec())
    out = world.rec.reconcile(NS, "web")
    assert out.reason == "Conflict" and out.requeue_after is not None and out.requeue_after < 5
    assert [c.status for c in world.sb.calls("POST")] == [409]
    assert "pendingCreate" not in world.kube.status(NS, "web")
    world.rec.reconcile(NS, "web")
    assert world.kube.cond(NS, "web")["reason"] == "Available"
    assert world.kube.status(NS, "web")["externalId"] == "web"
    assert "Adopted" in world.kube.reasons() and len(world.triggers()) == 1


def test_default_name_is_derived_from_metadata_name(world: World) -> None:
    name = "web.v2--prod-"
    world.kube.apply(NS, name, world.spec())
    world.rec.reconcile(NS, name)
    expected = swr_default_name(NS, name)
    assert expected.startswith("web-v2-prod-") and len(expected) <= 64
    assert [t["name"] for t in world.triggers()] == [expected]
    assert world.kube.status(NS, name)["externalId"] == expected
    assert world.kube.cond(NS, name)["reason"] == "Available"


def test_explicit_name_is_used(world: World) -> None:
    world.kube.apply(NS, "web", world.spec(swr={"name": "All_tags"}))
    world.rec.reconcile(NS, "web")
    assert [t["name"] for t in world.triggers()] == ["All_tags"]


def test_explicit_name_change_is_delete_old_then_create_new(world: World) -> None:
    world.kube.apply(NS, "web", world.spec(swr={"name": "All_tags"}))
    world.rec.reconcile(NS, "web")
    world.sb.clear_requests()
    world.kube.apply(NS, "web", world.spec(swr={"name": "Release_tags"}))
    world.rec.reconcile(NS, "web")
    assert [w.rsplit("/triggers", 1)[1] for w in world.writes()] == ["/All_tags", ""]
    assert [t["name"] for t in world.triggers()] == ["Release_tags"]
    assert world.kube.status(NS, "web")["externalId"] == "Release_tags"
    assert world.kube.cond(NS, "web")["reason"] == "Available"


def test_adopting_by_external_id_keeps_that_name(world: World) -> None:
    world.sb.create_trigger("group", "team/web", "Made_by_hand", application="web", cluster_name="prod")
    world.kube.apply(NS, "web", world.spec(externalId="Made_by_hand"))
    world.rec.reconcile(NS, "web")
    world.rec.reconcile(NS, "web")
    assert world.writes() == []
    assert world.kube.status(NS, "web")["externalId"] == "Made_by_hand"
    assert world.kube.cond(NS, "web")["reason"] == "Available"


def test_two_triggers_for_one_swr_trigger_second_is_conflict(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.kube.apply(NS, "copy", world.spec(swr={"name": "web", "condition": ".*"}))
    world.sb.clear_requests()
    world.rec.reconcile(NS, "copy")
    cond = world.kube.cond(NS, "copy")
    assert cond["reason"] == "Conflict" and "apps/web" in cond["message"]
    assert world.sb.calls() == []


def test_observe_only_never_writes(world: World) -> None:
    world.sb.create_trigger(
        "group", "team/web", "web", application="other-app", cluster_name="prod", enable="false"
    )
    world.kube.apply(NS, "web", world.spec(managementPolicy="ObserveOnly"))
    world.rec.reconcile(NS, "web")
    world.rec.finalize(world.kube.get_trigger(NS, "web"))  # type: ignore[arg-type]
    assert world.writes() == []
    cond = world.kube.cond(NS, "web")
    assert cond["reason"] == "Observed" and "differs from spec in: application, enabled" in cond["message"]
    world.sb.delete_trigger("group", "team/web", "web")
    world.rec.reconcile(NS, "web")
    assert world.kube.cond(NS, "web")["reason"] == "NotFound"
    assert world.writes() == []


def test_delete_and_orphan(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.kube.apply(NS, "keep", world.spec())
    world.rec.reconcile(NS, "web")
    world.rec.reconcile(NS, "keep")
    world.kube.apply(NS, "keep", world.spec(deletionPolicy="Orphan"))
    assert world.rec.finalize(world.kube.get_trigger(NS, "web")) == "deleted"  # type: ignore[arg-type]
    assert world.rec.finalize(world.kube.get_trigger(NS, "keep")) == "orphaned"  # type: ignore[arg-type]
    assert [t["name"] for t in world.triggers()] == ["keep"]
    assert world.sb.calls("DELETE")[0].path.endswith("/triggers/web")


def test_delete_of_trigger_already_gone_counts_as_deleted(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.sb.delete_trigger("group", "team/web", "web")
    assert world.rec.finalize(world.kube.get_trigger(NS, "web")) == "deleted"  # type: ignore[arg-type]


def test_deleted_at_provider_is_recreated_under_the_same_name(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.sb.delete_trigger("group", "team/web", "web")
    world.rec.reconcile(NS, "web")
    assert [t["name"] for t in world.triggers()] == ["web"]
    assert "Recreated" in world.kube.reasons()


def test_out_of_band_disable_is_repaired_in_place(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.sb.edit_trigger("group", "team/web", "web", enable="false")
    world.sb.clear_requests()
    world.rec.reconcile(NS, "web")
    assert world.methods() == ["PATCH"] and world.triggers()[0]["enable"] == "true"


def test_lost_create_response_gives_exactly_one_trigger(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.sb.faults.drop_after_create = 1
    out = world.rec.reconcile(NS, "web")
    assert out.reason == "ProviderError"
    assert "pendingCreate" in world.kube.status(NS, "web")
    assert len(world.triggers()) == 1
    rec2 = Reconciler(world.kube, world.rec.providers, Settings())  # as after an operator restart
    rec2.reconcile(NS, "web")
    assert len(world.triggers()) == 1 and len(world.sb.calls("POST")) == 1
    st = world.kube.status(NS, "web")
    assert st["externalId"] == "web" and "pendingCreate" not in st
    assert world.kube.cond(NS, "web")["reason"] == "Available"


def test_bad_key_is_credentials_invalid_and_never_a_fourth_failure(world: World) -> None:
    world.kube.put_secret(NS, "swr", {"accessKey": world.bot.access_key, "secretKey": "wrong" * 8})
    world.kube.apply(NS, "web", world.spec())
    delays = [world.rec.reconcile(NS, "web").requeue_after for _ in range(6)]
    cond = world.kube.cond(NS, "web")
    assert cond["reason"] == "CredentialsInvalid"
    assert "request not sent" in cond["message"] and "APIG.0301" in cond["message"]
    assert len(world.sb.calls()) == 3 and not world.sb.locked(world.bot.access_key)
    assert all(d is not None and d >= 9 for d in delays)
    assert "wrong" not in json.dumps(list(world.kube.triggers.values()))


def test_forbidden_and_missing_repository(world: World) -> None:
    reader = world.sb.add_account("reader", read_only=True)
    world.kube.put_secret(NS, "ro", {"accessKey": reader.access_key, "secretKey": reader.secret_key})
    world.kube.apply(NS, "ro", world.spec(credentialsSecretRef={"name": "ro"}))
    world.rec.reconcile(NS, "ro")
    assert world.kube.cond(NS, "ro")["reason"] == "Forbidden"
    world.kube.apply(NS, "nope", world.spec(swr={"repository": "missing"}))
    world.rec.reconcile(NS, "nope")
    cond = world.kube.cond(NS, "nope")
    assert cond["reason"] == "TargetNotFound" and "repository 'missing' not found" in cond["message"]


def test_throttled_is_reported(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.sb.faults.retry_after = 3
    world.sb.fail_next(1, 429)
    out = world.rec.reconcile(NS, "web")
    assert out.reason == "Throttled" and out.requeue_after == 3
