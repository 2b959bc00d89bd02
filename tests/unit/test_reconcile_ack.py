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
from cloudtriggers.reconcile.passes import INTENT_ANNOTATION
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


class Crash(BaseException):
    """The process dies here (BaseException: nothing in the reconciler catches it)."""


def _brand_new(world: World, name: str = "web") -> dict[str, Any]:
    """As kubectl apply leaves it: no finalizer, no status."""
    world.kube.apply(NS, name, world.spec())
    obj = world.kube.triggers[(NS, name)]
    obj["metadata"]["finalizers"] = []
    return obj


def test_a_first_create_stores_its_intent_with_the_finalizer_in_one_write_before_the_call(
    world: World,
) -> None:
    obj = _brand_new(world)
    hold = world.kube.set_trigger_finalizer
    seen: list[tuple[list[str], dict[str, str]]] = []

    def watching(body: dict[str, Any], present: bool, annotations: dict[str, str] | None = None) -> Any:
        seen.append((world.writes(), dict(annotations or {})))
        return hold(body, present, annotations)

    world.kube.set_trigger_finalizer = watching  # type: ignore[method-assign]
    out = world.rec.reconcile(NS, "web")
    assert out.reason == "Available"
    assert len(seen) == 1 and seen[0][0] == []  # one write, before any provider write
    intent = json.loads(seen[0][1][INTENT_ANNOTATION])
    assert intent["provider"] == "ack" and intent["existing"] == [] and intent["startedAt"]
    assert obj["metadata"]["finalizers"] == ["cloudtriggers.io/finalizer"]
    assert world.kube.status_writes == 1  # the outcome only: no status write for the intent
    assert "pendingCreate" not in world.kube.status(NS, "web")
    assert world.writes() == ["CreateTrigger"]


def test_a_crash_after_the_first_intent_write_creates_once_and_after_the_create_adopts(
    world: World,
) -> None:
    # Crash right after the intent's write: the next process creates (one trigger).
    _brand_new(world, "a")
    hold = world.kube.set_trigger_finalizer

    def crash_after(body: dict[str, Any], present: bool, annotations: dict[str, str] | None = None) -> Any:
        hold(body, present, annotations)
        raise Crash

    world.kube.set_trigger_finalizer = crash_after  # type: ignore[method-assign]
    with pytest.raises(Crash):
        world.rec.reconcile(NS, "a")
    world.kube.set_trigger_finalizer = hold  # type: ignore[method-assign]
    assert world.writes() == [] and not world.kube.status(NS, "a")
    assert world.fresh_reconciler().reconcile(NS, "a").reason == "Available"
    assert world.writes() == ["CreateTrigger"]

    # Crash after the create, before any status write: the next process adopts it (still one).
    _brand_new(world, "b")
    patch = world.kube.patch_trigger_status

    def crash(namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        raise Crash

    world.kube.patch_trigger_status = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        world.rec.reconcile(NS, "b")
    world.kube.patch_trigger_status = patch  # type: ignore[method-assign]
    assert world.writes() == ["CreateTrigger", "CreateTrigger"]
    rec = world.fresh_reconciler()
    rec.claims.put(*rec.claim_of(world.kube.triggers[(NS, "a")]))  # as the watch tells it
    out = rec.reconcile(NS, "b")
    assert out.reason == "Available"
    assert world.writes() == ["CreateTrigger", "CreateTrigger"]
    ids = {world.kube.status(NS, n)["externalId"] for n in ("a", "b")}
    assert ids == {str(t["id"]) for t in world.sb.triggers(world.cid)} and len(ids) == 2


def test_a_lost_first_create_is_carried_into_status_and_deleted_with_the_trigger(world: World) -> None:
    _brand_new(world)
    world.sb.faults.drop_after_create = 1  # made, but the answer is lost: ambiguous
    world.rec.reconcile(NS, "web")
    status = world.kube.status(NS, "web")
    assert status["pendingCreate"]["provider"] == "ack"  # the annotation's intent, now in status
    assert len(world.sb.triggers(world.cid)) == 1
    world.rec.finalize(world.kube.triggers[(NS, "web")])
    assert world.sb.triggers(world.cid) == []


def test_the_annotation_counts_only_until_the_status_is_ours(world: World) -> None:
    """Long after its first create, the annotation's look-back must not adopt what others made since."""
    _brand_new(world)
    assert world.rec.reconcile(NS, "web").reason == "Available"
    first = world.kube.status(NS, "web")["externalId"]
    hand_made = world.sb.create_trigger_as(world.alice.name, world.cid, "default/web")
    world.sb.delete_trigger(world.cid, first)  # gone at the provider: recreate
    world.kube.triggers[(NS, "web")]["metadata"]["annotations"]["again"] = "1"
    assert world.rec.reconcile(NS, "web").reason == "Available"
    now = world.kube.status(NS, "web")["externalId"]
    assert now not in {first, str(hand_made["id"])}
    assert world.writes() == ["CreateTrigger", "CreateTrigger"]


def test_a_finalizer_taken_off_later_is_put_back_before_a_create(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    assert world.rec.reconcile(NS, "web").reason == "Available"
    obj = world.kube.triggers[(NS, "web")]
    obj["metadata"]["finalizers"] = []
    world.sb.delete_trigger(world.cid, world.kube.status(NS, "web")["externalId"])
    order: list[str] = []
    hold, patch = world.kube.set_trigger_finalizer, world.kube.patch_trigger_status

    def holding(body: dict[str, Any], present: bool, annotations: dict[str, str] | None = None) -> Any:
        assert not annotations  # the status is ours: the intent goes there
        order.append(f"finalizer {world.writes()}")
        return hold(body, present, annotations)

    def patching(namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        order.append(f"status {world.writes()} {'pendingCreate' in status}")
        return patch(namespace, name, status)

    world.kube.set_trigger_finalizer = holding  # type: ignore[method-assign]
    world.kube.patch_trigger_status = patching  # type: ignore[method-assign]
    obj["metadata"]["annotations"]["again"] = "1"
    assert world.rec.reconcile(NS, "web").reason == "Available"
    one = "['CreateTrigger']"
    assert order[:2] == [f"finalizer {one}", f"status {one} True"]  # both before the second create
    assert obj["metadata"]["finalizers"] == ["cloudtriggers.io/finalizer"]


def test_a_pass_that_creates_nothing_still_adds_the_finalizer(world: World) -> None:
    """An adopted trigger is deleted with its Trigger (deletionPolicy Delete): the finalizer must be on."""
    ours = world.sb.create_trigger_as(world.alice.name, world.cid, "default/web")
    world.kube.apply(NS, "web", world.spec(externalId=str(ours["id"])))
    obj = world.kube.triggers[(NS, "web")]
    obj["metadata"]["finalizers"] = []
    assert world.rec.reconcile(NS, "web").reason == "Available"
    assert obj["metadata"]["finalizers"] == ["cloudtriggers.io/finalizer"]
    assert INTENT_ANNOTATION not in obj["metadata"]["annotations"]
    assert world.writes() == []
