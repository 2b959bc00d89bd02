"""Reconcile decisions for ACK, end to end through the real ACK provider and the ACK sandbox.

Kubernetes is the in-memory FakeKube: what is created, replaced, adopted, recreated and deleted, what the
Secret holds and what the conditions say, without kopf.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloudtriggers.models import token_sha256
from cloudtriggers.providers.ack import HOOK_URL, AckProvider
from cloudtriggers.providers.base import AccountLimiter
from cloudtriggers.reconcile import Reconciler
from cloudtriggers.sandbox import LOOPBACK
from cloudtriggers.sandbox.ack import AckAccount, AckSandbox
from cloudtriggers.settings import Settings
from fakekube import FakeKube

NS = "apps"
ROLE = "acs:ram::1234567890123401:role/cloudtriggers"
OIDC = "acs:ram::1234567890123401:oidc-provider/ack-rrsa-c1"


@dataclass
class World:
    sb: AckSandbox
    kube: FakeKube
    rec: Reconciler
    alice: AckAccount
    cid: str

    def spec(self, **over: Any) -> dict[str, Any]:
        ack = {
            "regionId": "cn-beijing",
            "clusterId": self.cid,
            "projectId": "default/web",
            "endpoint": self.sb.url,
            **over.pop("ack", {}),
        }
        return {"ack": ack, "credentialsSecretRef": {"name": "ali"}, **over}

    def writes(self) -> list[str]:
        return [c.action for c in self.sb.calls() if c.action in {"CreateTrigger", "DeleteTrigger"}]

    def secret(self, name: str = "web-trigger") -> dict[str, str]:
        got = self.kube.read_secret(NS, name)
        return got[0] if got else {}

    def fresh_reconciler(self) -> Reconciler:
        """As after an operator restart: no memory but what is stored."""
        return Reconciler(self.kube, self.rec.providers, Settings())


def new_provider(**kw: Any) -> AckProvider:
    return AckProvider(
        policy=LOOPBACK, limiter=AccountLimiter(rate=1000, burst=1000), timeout=(2.0, 5.0), **kw
    )


@pytest.fixture
def world() -> Iterator[World]:
    with AckSandbox() as sb:
        alice = sb.add_account("alice")
        cid = sb.add_cluster("alice", applications=("default/web", "default/api"))
        kube = FakeKube()
        kube.put_secret(
            NS, "ali", {"accessKeyId": alice.access_key_id, "accessKeySecret": alice.access_key_secret}
        )
        rec = Reconciler(kube, {"ack": new_provider(environ={})}, Settings())
        yield World(sb, kube, rec, alice, cid)


def test_create_then_ready_with_token_and_url_in_secret(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    out = world.rec.reconcile(NS, "web")
    [trig] = world.sb.triggers(world.cid)
    st = world.kube.status(NS, "web")
    assert st["externalId"] == trig["id"] and st["provider"] == "ack"
    assert st["atProvider"] == {
        "regionId": "cn-beijing",
        "clusterId": world.cid,
        "projectId": "default/web",
        "type": "deployment",
        "action": "redeploy",
        "name": "web",
    }
    assert world.kube.cond(NS, "web")["reason"] == "Available"
    assert world.kube.cond(NS, "web", "Synced")["status"] == "True"
    assert world.secret() == {"token": trig["token"], "url": HOOK_URL + trig["token"]}
    assert st["tokenSha256"] == token_sha256(trig["token"])
    assert "pendingCreate" not in st
    assert out.requeue_after is not None and 300 <= out.requeue_after < 900  # the next drift check
    assert world.writes() == ["CreateTrigger"]
    # The token lives in the Secret only.
    assert trig["token"] not in json.dumps(list(world.kube.triggers.values())) + json.dumps(world.kube.events)


def test_second_pass_in_sync_makes_no_write_and_no_status_churn(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    status_writes = world.kube.status_writes
    world.sb.clear_requests()
    world.rec.reconcile(NS, "web")
    assert [c.action for c in world.sb.calls()] == ["DescribeTrigger"]
    assert world.kube.status_writes == status_writes


def test_project_change_replaces_create_first_same_trigger_ready(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    old = world.kube.status(NS, "web")["externalId"]
    old_token = world.secret()["token"]
    world.sb.clear_requests()
    world.kube.apply(NS, "web", world.spec(ack={"projectId": "default/api"}))
    world.rec.reconcile(NS, "web")
    [new] = world.sb.triggers(world.cid)  # exactly one: the old one is gone
    assert new["project_id"] == "default/api" and new["id"] != old
    st = world.kube.status(NS, "web")
    assert st["externalId"] == new["id"] and st["atProvider"]["projectId"] == "default/api"
    assert "pendingDelete" not in st and "pendingCreate" not in st
    assert world.secret() == {"token": new["token"], "url": HOOK_URL + new["token"]} != {"token": old_token}
    assert world.kube.cond(NS, "web")["reason"] == "Available"
    assert world.kube.cond(NS, "web")["observedGeneration"] == 2
    assert "Replaced" in world.kube.reasons()
    # Create first, then delete the old one; the old one was looked up at its old application.
    assert world.writes() == ["CreateTrigger", "DeleteTrigger"]
    assert world.sb.calls("DELETE")[0].path.endswith(f"/triggers/{old}")
    assert world.sb.calls(action="DescribeTrigger")[0].query["Name"] == "web"


def test_type_change_is_a_replacement_too(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.kube.apply(NS, "web", world.spec(ack={"type": "application"}))
    world.rec.reconcile(NS, "web")
    [trig] = world.sb.triggers(world.cid)
    assert trig["type"] == "application"
    assert world.kube.status(NS, "web")["externalId"] == trig["id"]


def test_crash_between_replacement_create_and_delete_finishes_the_delete(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.kube.apply(NS, "web", world.spec(ack={"projectId": "default/api"}))
    world.sb.fail_next(1, 503, action="DeleteTrigger")
    world.rec.reconcile(NS, "web")
    assert len(world.sb.triggers(world.cid)) == 2
    assert world.kube.status(NS, "web")["pendingDelete"]
    world.fresh_reconciler().reconcile(NS, "web")
    [trig] = world.sb.triggers(world.cid)
    assert trig["project_id"] == "default/api"
    assert "pendingDelete" not in world.kube.status(NS, "web")
    assert world.kube.cond(NS, "web")["reason"] == "Available"


def test_deleted_at_provider_is_recreated_with_a_new_token(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    old = world.kube.status(NS, "web")["externalId"]
    old_token = world.secret()["token"]
    world.sb.delete_trigger(world.cid, old)
    world.rec.reconcile(NS, "web")
    [trig] = world.sb.triggers(world.cid)
    assert trig["id"] != old and world.kube.status(NS, "web")["externalId"] == trig["id"]
    assert world.secret()["token"] == trig["token"] != old_token


def test_lost_create_response_adopts_instead_of_creating_twice(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.sb.faults.drop_after_create = 1
    out = world.rec.reconcile(NS, "web")
    assert out.reason == "ProviderError"
    assert "pendingCreate" in world.kube.status(NS, "web")
    assert len(world.sb.triggers(world.cid)) == 1  # made, answer lost
    world.fresh_reconciler().reconcile(NS, "web")
    [trig] = world.sb.triggers(world.cid)
    assert world.kube.status(NS, "web")["externalId"] == trig["id"]
    assert world.secret()["token"] == trig["token"]
    assert "Adopted" in world.kube.reasons()
    assert world.writes() == ["CreateTrigger"]


def test_failed_token_read_after_create_adopts_on_the_next_pass(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.sb.fail_next(1, 500, action="DescribeTrigger")
    world.rec.reconcile(NS, "web")
    assert "pendingCreate" in world.kube.status(NS, "web")
    world.rec.reconcile(NS, "web")
    [trig] = world.sb.triggers(world.cid)
    assert world.kube.status(NS, "web")["externalId"] == trig["id"]
    assert world.writes() == ["CreateTrigger"]


def test_never_adopts_a_trigger_another_trigger_owns(world: World) -> None:
    world.kube.apply(NS, "first", world.spec())
    world.rec.reconcile(NS, "first")
    owned = world.kube.status(NS, "first")["externalId"]
    # A second Trigger for the same application whose create failed before anything was made.
    world.kube.apply(NS, "second", world.spec())
    world.sb.fail_next(1, 500, action="CreateTrigger")
    world.rec.reconcile(NS, "second")
    assert world.kube.status(NS, "second")["pendingCreate"]
    world.rec.reconcile(NS, "second")
    ids = [t["id"] for t in world.sb.triggers(world.cid)]
    assert len(ids) == 2
    second = world.kube.status(NS, "second")["externalId"]
    assert second != owned and second in ids
    assert world.kube.status(NS, "first")["externalId"] == owned
    assert world.secret("second-trigger")["token"] != world.secret("first-trigger")["token"]


def test_observe_only_never_writes(world: World) -> None:
    existing = world.sb.create_trigger_as("alice", world.cid, "default/web")
    world.kube.apply(NS, "obs", world.spec(managementPolicy="ObserveOnly", externalId=existing["id"]))
    world.rec.reconcile(NS, "obs")
    assert world.rec.finalize(world.kube.get_trigger(NS, "obs")) == "orphaned"  # type: ignore[arg-type]
    assert world.writes() == []
    assert world.kube.cond(NS, "obs")["reason"] == "Observed"
    world.sb.delete_trigger(world.cid, existing["id"])
    world.rec.reconcile(NS, "obs")
    assert world.kube.cond(NS, "obs")["reason"] == "NotFound"
    assert world.writes() == []


def test_adopting_by_external_id_takes_its_token(world: World) -> None:
    mine = world.sb.create_trigger_as("alice", world.cid, "default/web")
    world.kube.apply(NS, "web", world.spec(externalId=mine["id"]))
    world.rec.reconcile(NS, "web")
    assert world.kube.cond(NS, "web")["reason"] == "Available"
    assert world.secret()["token"] == mine["token"]
    assert world.writes() == []


def test_delete_policy_delete_and_orphan(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.kube.apply(NS, "keep", world.spec(deletionPolicy="Orphan"))
    world.rec.reconcile(NS, "web")
    world.rec.reconcile(NS, "keep")
    assert world.rec.finalize(world.kube.get_trigger(NS, "web")) == "deleted"  # type: ignore[arg-type]
    assert world.rec.finalize(world.kube.get_trigger(NS, "keep")) == "orphaned"  # type: ignore[arg-type]
    assert [t["id"] for t in world.sb.triggers(world.cid)] == [world.kube.status(NS, "keep")["externalId"]]


def test_delete_of_trigger_already_gone_counts_as_deleted(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.sb.delete_trigger(world.cid, world.kube.status(NS, "web")["externalId"])
    assert world.rec.finalize(world.kube.get_trigger(NS, "web")) == "deleted"  # type: ignore[arg-type]


def test_throttled_waits_what_x_acs_retry_after_says(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.sb.faults.retry_after_ms = 7000
    world.sb.fail_next(1, 400, "Throttling.User")
    out = world.rec.reconcile(NS, "web")
    assert out.reason == "Throttled" and out.requeue_after == 7.0
    assert world.kube.cond(NS, "web")["reason"] == "Throttled"


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (400, "SignatureDoesNotMatch", "CredentialsInvalid"),
        (403, "Forbidden.RAM", "Forbidden"),
        (404, "ErrorClusterNotFound", "TargetNotFound"),
    ],
)
def test_error_reasons_with_slow_retry(world: World, status: int, code: str, reason: str) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.sb.fail_next(1, status, code)
    out = world.rec.reconcile(NS, "web")
    cond = world.kube.cond(NS, "web")
    assert cond["reason"] == reason and code in cond["message"]
    assert out.requeue_after is not None and out.requeue_after >= 9  # at most ~5 attempts a minute
    assert world.alice.access_key_secret not in json.dumps(list(world.kube.triggers.values()))


def test_rrsa_workload_identity_when_no_secret_is_named(world: World, tmp_path: Path) -> None:
    world.sb.add_role(ROLE, OIDC, "alice")
    token_file = tmp_path / "token"
    token_file.write_text(world.sb.oidc_token())
    env = {
        "ALIBABA_CLOUD_ROLE_ARN": ROLE,
        "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": OIDC,
        "ALIBABA_CLOUD_OIDC_TOKEN_FILE": str(token_file),
        "ALIBABA_CLOUD_STS_ENDPOINT": world.sb.url,
        "CLOUDTRIGGERS_ACK_TRUSTED_ENDPOINTS": world.sb.url,
    }
    rec = Reconciler(world.kube, {"ack": new_provider(environ=env)}, Settings())
    spec = world.spec()
    del spec["credentialsSecretRef"]
    world.kube.apply(NS, "web", spec)
    rec.reconcile(NS, "web")
    assert world.kube.cond(NS, "web")["reason"] == "Available"
    assert world.sb.calls(action="CreateTrigger")[0].sts
    # Without RRSA configured the same Trigger has no credentials at all.
    world.rec.reconcile(NS, "web")
    assert world.kube.cond(NS, "web")["reason"] == "CredentialsMissing"


def test_lost_create_never_adopts_a_hand_made_trigger_that_existed_before(world: World) -> None:
    # ACK keeps no creation time, so the intent records what existed before the create.
    hand_made = world.sb.create_trigger_as("alice", world.cid, "default/web")
    world.kube.apply(NS, "web", world.spec())
    world.sb.faults.drop_after_create = 1
    world.rec.reconcile(NS, "web")
    assert world.kube.status(NS, "web")["pendingCreate"]["existing"] == [str(hand_made["id"])]
    world.fresh_reconciler().reconcile(NS, "web")
    ids = sorted(str(t["id"]) for t in world.sb.triggers(world.cid))
    ours = world.kube.status(NS, "web")["externalId"]
    assert len(ids) == 2 and ours in ids and ours != str(hand_made["id"])
    # Deleting with a create still pending also leaves the hand-made one alone.
    world.kube.apply(NS, "gone", world.spec(ack={"projectId": "default/web"}))
    world.sb.faults.drop_after_create = 1
    world.rec.reconcile(NS, "gone")
    obj = world.kube.get_trigger(NS, "gone")
    assert obj is not None and obj["status"]["pendingCreate"]["existing"]
    world.rec.finalize(obj)
    assert str(hand_made["id"]) in {str(t["id"]) for t in world.sb.triggers(world.cid)}
    assert ours in {str(t["id"]) for t in world.sb.triggers(world.cid)}


def test_no_create_before_the_finalizer_and_a_refused_intent_is_never_taken_for_a_crash(world: World) -> None:
    """Without kopf's finalizer the reconciler writes its intent, sees in the answer that the finalizer
    is missing, and creates nothing. If clearing that intent then fails, the intent must still not be
    read as an interrupted create: it would adopt (or on delete, remove) a trigger another Trigger
    of the same application has just made and the claim index has not seen yet."""
    world.kube.apply(NS, "web", world.spec())
    obj = world.kube.triggers[(NS, "web")]
    obj["metadata"]["finalizers"] = []

    out = world.rec.reconcile(NS, "web")
    assert out.needs_finalizer and out.reason == "Creating"
    assert world.writes() == [] and "pendingCreate" not in world.kube.status(NS, "web")

    # Again, but the write that clears the refused intent fails (the API server said 503).
    writes = world.kube.status_writes
    patch = world.kube.patch_trigger_status

    def failing_second(ns: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        if world.kube.status_writes == writes + 1:
            world.kube.status_writes += 1
            raise RuntimeError("503: the write was rejected")
        return patch(ns, name, status)

    world.kube.patch_trigger_status = failing_second  # type: ignore[method-assign]
    world.kube.triggers[(NS, "web")]["metadata"]["annotations"]["again"] = "1"
    with pytest.raises(RuntimeError):
        world.rec.reconcile(NS, "web")
    assert world.kube.status(NS, "web")["pendingCreate"]  # stored, stale
    world.kube.patch_trigger_status = patch  # type: ignore[method-assign]

    # Another Trigger's brand-new trigger for the same application, not claimed in the index yet.
    theirs = world.sb.create_trigger_as(world.alice.name, world.cid, "default/web")
    obj["metadata"]["finalizers"] = ["cloudtriggers.io/finalizer"]
    out = world.rec.reconcile(NS, "web")
    assert out.reason == "Available"
    status = world.kube.status(NS, "web")
    assert status["externalId"] != str(theirs["id"]) and "pendingCreate" not in status
    assert world.writes() == ["CreateTrigger"]
    assert {str(t["id"]) for t in world.sb.triggers(world.cid)} == {str(theirs["id"]), status["externalId"]}
