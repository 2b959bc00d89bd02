"""Reconcile decisions, end to end through the real GitLab provider and the GitLab sandbox.

Kubernetes is the in-memory FakeKube, so every decision of design.md "Behaviour" is checked
without kopf: what is created, updated, adopted, recreated, deleted, and what the conditions say.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudtriggers.metrics import ORPHANED
from cloudtriggers.models import token_sha256
from cloudtriggers.providers.base import AccountLimiter
from cloudtriggers.providers.gitlab import GitLabProvider
from cloudtriggers.reconcile import Reconciler, Retry
from cloudtriggers.sandbox import LOOPBACK
from cloudtriggers.sandbox.gitlab import MAINTAINER, GitLabSandbox, SandboxUser
from cloudtriggers.settings import Settings
from fakekube import FakeKube

NS = "apps"


@dataclass
class World:
    sb: GitLabSandbox
    kube: FakeKube
    rec: Reconciler
    alice: SandboxUser
    bob: SandboxUser
    pid: int

    def spec(self, **over: Any) -> dict[str, Any]:
        gitlab = {"url": self.sb.url, "project": "group/web", **over.pop("gitlab", {})}
        return {"gitlab": gitlab, "credentialsSecretRef": {"name": "gl"}, **over}

    def writes(self) -> int:
        return len([c for c in self.sb.calls() if c.method in {"POST", "PUT", "DELETE"}])


@pytest.fixture
def world() -> Iterator[World]:
    with GitLabSandbox() as sb:
        alice = sb.add_user("alice")
        bob = sb.add_user("bob")
        pid = sb.add_project("group/web", {"alice": MAINTAINER, "bob": MAINTAINER})
        kube = FakeKube()
        kube.put_secret(NS, "gl", {"token": alice.token})
        provider = GitLabProvider(
            policy=LOOPBACK, limiter=AccountLimiter(rate=1000, burst=1000), timeout=(2.0, 5.0)
        )
        rec = Reconciler(kube, {"gitlab": provider}, Settings())
        yield World(sb, kube, rec, alice, bob, pid)


def test_create_then_ready_with_id_and_secret(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    out = world.rec.reconcile(NS, "web")
    triggers = world.sb.triggers(world.pid)
    assert len(triggers) == 1
    st = world.kube.status(NS, "web")
    assert st["externalId"] == str(triggers[0]["id"])
    assert st["provider"] == "gitlab"
    assert st["atProvider"]["projectId"] == world.pid
    assert st["atProvider"]["owner"] == "alice"
    assert "pendingCreate" not in st
    assert world.kube.cond(NS, "web")["status"] == "True"
    assert world.kube.cond(NS, "web")["reason"] == "Available"
    assert world.kube.cond(NS, "web", "Synced")["status"] == "True"
    token = triggers[0]["token"]
    secret, _ = world.kube.read_secret(NS, "web-trigger") or ({}, "")
    assert secret == {"token": token, "url": f"{world.sb.url}/api/v4/projects/{world.pid}/trigger/pipeline"}
    assert st["tokenSha256"] == token_sha256(token)
    assert triggers[0]["description"] == "apps/web"  # the default "<namespace>/<name>"
    assert out.requeue_after is not None and 300 <= out.requeue_after < 900  # [period/2, 3 period/2)
    assert "Created" in world.kube.reasons()
    # The token is nowhere but in the Secret.
    assert token not in json.dumps(list(world.kube.triggers.values())) + json.dumps(world.kube.events)


def test_second_pass_in_sync_makes_no_write_and_no_status_churn(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    writes, status_writes = world.writes(), world.kube.status_writes
    before = json.dumps(world.kube.status(NS, "web"), sort_keys=True)
    world.rec.reconcile(NS, "web")
    assert world.writes() == writes
    assert world.kube.status_writes == status_writes
    assert json.dumps(world.kube.status(NS, "web"), sort_keys=True) == before


def test_a_drift_check_a_period_later_writes_nothing_until_sync_time_is_old(world: World) -> None:
    # No status write per check (each is an API write and a watch event per watcher): lastSyncTime
    # is refreshed only once it is SYNC_TIME_REFRESH (5) periods old. Default period: 10 minutes.
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")

    def aged(seconds: float) -> None:
        then = datetime.now(UTC) - timedelta(seconds=seconds)
        world.kube.triggers[(NS, "web")]["status"]["lastSyncTime"] = then.strftime("%Y-%m-%dT%H:%M:%SZ")

    aged(1.5 * 600)
    writes = world.kube.status_writes
    world.rec.reconcile(NS, "web")
    assert world.kube.status_writes == writes
    aged(5.5 * 600)
    world.rec.reconcile(NS, "web")
    assert world.kube.status_writes == writes + 1
    last = world.kube.status(NS, "web")["lastSyncTime"]
    assert datetime.fromisoformat(last.replace("Z", "+00:00")) > datetime.now(UTC) - timedelta(seconds=5)


def test_after_a_restart_an_in_sync_trigger_waits_for_its_next_slot(world: World) -> None:
    now = time.time()
    # Synced 3 periods ago (refreshes are 5 periods apart): not overdue, the next slot of its phase.
    wait = world.rec.restart_delay("10m", "uid-1", now - 3 * 600)
    assert 0 <= wait < 600  # the next slot of its phase: checks stay spread over the period
    other = world.rec.restart_delay("10m", "uid-1", now - 600)
    gap = (wait - other) % 600
    assert min(gap, 600 - gap) < 1  # both on the same phase grid
    # Synced a moment ago: not before half a period.
    assert 300 <= world.rec.restart_delay("10m", "uid-1", now - 1) < 900
    # Older than the refresh allows: the operator was down, check now.
    assert world.rec.restart_delay("10m", "uid-1", now - 7 * 600) == 0.0


def test_description_change_is_one_put_same_id(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    ext = world.kube.status(NS, "web")["externalId"]
    ltt = world.kube.cond(NS, "web")["lastTransitionTime"]
    world.sb.clear_requests()
    world.kube.apply(NS, "web", world.spec(gitlab={"description": "redeploy web"}))
    world.rec.reconcile(NS, "web")
    assert [c.method for c in world.sb.calls() if c.method != "GET"] == ["PUT"]
    assert world.kube.status(NS, "web")["externalId"] == ext
    assert world.sb.triggers(world.pid)[0]["description"] == "redeploy web"
    assert world.kube.cond(NS, "web")["observedGeneration"] == 2
    assert world.kube.cond(NS, "web")["lastTransitionTime"] == ltt  # no transition, no churn
    assert "Updated" in world.kube.reasons()


def test_deleted_at_provider_is_recreated_and_secret_updated(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    old = world.kube.status(NS, "web")["externalId"]
    world.sb.delete_trigger(world.pid, int(old))
    world.rec.reconcile(NS, "web")
    triggers = world.sb.triggers(world.pid)
    assert len(triggers) == 1 and str(triggers[0]["id"]) != old
    assert world.kube.status(NS, "web")["externalId"] == str(triggers[0]["id"])
    assert world.kube.read_secret(NS, "web-trigger")[0]["token"] == triggers[0]["token"]  # type: ignore[index]
    assert "Recreated" in world.kube.reasons()


def test_out_of_band_description_edit_is_repaired(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    ext = int(world.kube.status(NS, "web")["externalId"])
    world.sb.set_description(world.pid, ext, "hand edited")
    world.rec.reconcile(NS, "web")
    assert world.sb.triggers(world.pid)[0]["description"] == "apps/web"


def test_project_change_replaces_create_first(world: World) -> None:
    other = world.sb.add_project("group/other", {"alice": MAINTAINER})
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.kube.apply(NS, "web", world.spec(gitlab={"project": "group/other"}))
    world.rec.reconcile(NS, "web")
    assert world.sb.triggers(world.pid) == []
    new = world.sb.triggers(other)
    assert len(new) == 1
    st = world.kube.status(NS, "web")
    assert st["externalId"] == str(new[0]["id"]) and st["atProvider"]["projectId"] == other
    assert "pendingDelete" not in st
    assert world.kube.read_secret(NS, "web-trigger")[0]["token"] == new[0]["token"]  # type: ignore[index]
    assert "Replaced" in world.kube.reasons()


def test_delete_policy_delete_and_orphan(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.kube.apply(NS, "keep", world.spec(deletionPolicy="Orphan"))
    world.rec.reconcile(NS, "web")
    world.rec.reconcile(NS, "keep")
    assert len(world.sb.triggers(world.pid)) == 2
    assert world.rec.finalize(world.kube.get_trigger(NS, "web")) == "deleted"  # type: ignore[arg-type]
    assert world.rec.finalize(world.kube.get_trigger(NS, "keep")) == "orphaned"  # type: ignore[arg-type]
    left = world.sb.triggers(world.pid)
    assert [str(t["id"]) for t in left] == [world.kube.status(NS, "keep")["externalId"]]


def test_delete_of_trigger_already_gone_counts_as_deleted(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.sb.delete_trigger(world.pid, int(world.kube.status(NS, "web")["externalId"]))
    assert world.rec.finalize(world.kube.get_trigger(NS, "web")) == "deleted"  # type: ignore[arg-type]


def test_observe_only_never_writes(world: World) -> None:
    existing = world.sb.create_trigger_as("alice", world.pid, "made by hand")
    world.kube.apply(NS, "obs", world.spec(managementPolicy="ObserveOnly", externalId=str(existing["id"])))
    world.sb.clear_requests()
    world.rec.reconcile(NS, "obs")
    world.rec.finalize(world.kube.get_trigger(NS, "obs"))  # type: ignore[arg-type]
    assert world.writes() == 0
    assert world.kube.cond(NS, "obs")["reason"] == "Observed"
    assert "differs from spec in: description" in world.kube.cond(NS, "obs")["message"]
    assert world.sb.triggers(world.pid)[0]["description"] == "made by hand"
    # ...and says NotFound once the object is gone, still without writing.
    world.sb.delete_trigger(world.pid, existing["id"])
    world.rec.reconcile(NS, "obs")
    assert world.kube.cond(NS, "obs")["reason"] == "NotFound"
    assert world.writes() == 0


def test_a_name_too_long_for_the_default_secret_is_an_invalid_spec(world: World) -> None:
    # The CRD refuses this at apply (models.ROOT_RULES); a Trigger stored under an older CRD must not
    # get a provider trigger whose token no Secret can hold (a real API server refuses the name).
    long = "w" * 246
    world.kube.apply(NS, long, world.spec())
    world.rec.reconcile(NS, long)
    assert world.sb.calls() == []
    ready = world.kube.cond(NS, long)
    assert ready["reason"] == "InvalidSpec" and "set spec.secretName" in ready["message"]
    assert "secretName" not in world.kube.status(NS, long)
    world.kube.apply(NS, long, world.spec(secretName="web-token"))
    world.rec.reconcile(NS, long)
    assert world.kube.cond(NS, long)["status"] == "True"
    assert world.kube.read_secret(NS, "web-token") is not None


def test_invalid_spec_makes_no_provider_call(world: World) -> None:
    ack = {"regionId": "cn-beijing", "clusterId": "c1", "projectId": "default/web"}
    world.kube.apply(NS, "bad", {**world.spec(), "ack": ack})
    out = world.rec.reconcile(NS, "bad")
    assert world.sb.calls() == []
    assert world.kube.cond(NS, "bad")["reason"] == "InvalidSpec"
    assert "exactly one provider block" in world.kube.cond(NS, "bad")["message"]
    assert out.requeue_after is None  # no retry until the spec changes


def test_missing_credentials_then_ready_when_secret_appears(world: World) -> None:
    world.kube.apply(NS, "web", {**world.spec(), "credentialsSecretRef": {"name": "later"}})
    out = world.rec.reconcile(NS, "web")
    assert world.kube.cond(NS, "web")["reason"] == "CredentialsMissing"
    assert world.sb.calls() == []
    assert out.requeue_after is not None and out.requeue_after <= 30
    assert out.watch_secret == (NS, "later", "")
    world.kube.put_secret(NS, "later", {"token": world.alice.token})
    world.rec.reconcile(NS, "web")
    assert world.kube.cond(NS, "web")["status"] == "True"


def test_bad_token_is_credentials_invalid_with_slow_retry(world: World) -> None:
    world.kube.put_secret(NS, "gl", {"token": "glpat-wrong-token-000000"})
    world.kube.apply(NS, "web", world.spec())
    delays = [world.rec.reconcile(NS, "web").requeue_after for _ in range(4)]
    assert world.kube.cond(NS, "web")["reason"] == "CredentialsInvalid"
    assert "401" in world.kube.cond(NS, "web")["message"]
    assert "glpat-wrong" not in json.dumps(list(world.kube.triggers.values()))
    assert all(d is not None and d >= 9 for d in delays)  # at most ~5 attempts a minute
    first, last = delays[0], delays[-1]
    assert first is not None and last is not None and last > first  # and backing off


def test_open_circuit_survives_a_metadata_only_change_of_the_secret(world: World) -> None:
    # Holding the Secret (our finalizer going on) moves its resourceVersion; the credentials did not
    # change, so the circuit must stay open: else every Trigger of a bad key gets a fresh wave.
    world.kube.put_secret(NS, "gl", {"token": "glpat-wrong-token-000000"})
    for name in ("a", "b", "c", "d"):
        world.kube.apply(NS, name, world.spec())
    for name in ("a", "b", "c"):
        world.rec.reconcile(NS, name)
    failed = len(world.sb.calls())
    assert world.kube.secrets[(NS, "gl")]["held"]
    world.kube.secrets[(NS, "gl")]["rv"] = "999"  # e.g. a label added by someone else
    world.rec.reconcile(NS, "d")
    assert len(world.sb.calls()) == failed
    assert world.kube.cond(NS, "d")["reason"] == "CredentialsInvalid"
    # New data is new credentials: the circuit closes at once.
    world.kube.put_secret(NS, "gl", {"token": world.alice.token})
    world.rec.reconcile(NS, "d")
    assert world.kube.cond(NS, "d")["status"] == "True"


def test_a_watched_body_at_the_version_of_our_last_write_is_current(world: World) -> None:
    # The loop passes the watched body instead of a GET when it is at the version of our own last
    # status write; anything newer (another writer) is not current.
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    stored = world.kube.get_trigger(NS, "web")
    assert stored is not None and world.rec.is_current(stored)
    world.kube.apply(NS, "web", world.spec(gitlab={"description": "changed"}))
    changed = world.kube.get_trigger(NS, "web")
    assert changed is not None and not world.rec.is_current(changed)
    world.rec.forget(stored["metadata"]["uid"])
    assert not world.rec.is_current(stored)


def test_lost_create_response_adopts_instead_of_creating_twice(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.sb.faults.drop_after_create = 1
    out = world.rec.reconcile(NS, "web")
    assert out.reason == "ProviderError"
    assert "pendingCreate" in world.kube.status(NS, "web")
    assert len(world.sb.triggers(world.pid)) == 1  # created server-side, answer lost
    # A fresh reconciler, as after an operator restart: it must find and adopt, not create again.
    rec2 = Reconciler(world.kube, world.rec.providers, Settings())
    rec2.reconcile(NS, "web")
    triggers = world.sb.triggers(world.pid)
    assert len(triggers) == 1
    assert world.kube.status(NS, "web")["externalId"] == str(triggers[0]["id"])
    assert world.kube.read_secret(NS, "web-trigger")[0]["token"] == triggers[0]["token"]  # type: ignore[index]
    assert "Adopted" in world.kube.reasons()


def test_adopting_another_users_trigger_is_token_unavailable(world: World) -> None:
    theirs = world.sb.create_trigger_as("bob", world.pid, "apps/web")
    world.kube.apply(NS, "web", world.spec(externalId=str(theirs["id"])))
    world.rec.reconcile(NS, "web")
    cond = world.kube.cond(NS, "web")
    assert cond["status"] == "False" and cond["reason"] == "TokenUnavailable"
    assert "owner's credentials" in cond["message"]
    assert world.kube.read_secret(NS, "web-trigger") is None  # the 4-character value is never written


def test_adopting_own_trigger_takes_its_token(world: World) -> None:
    mine = world.sb.create_trigger_as("alice", world.pid, "apps/web")
    world.kube.apply(NS, "web", world.spec(externalId=str(mine["id"])))
    world.rec.reconcile(NS, "web")
    assert world.kube.cond(NS, "web")["reason"] == "Available"
    assert world.kube.read_secret(NS, "web-trigger")[0]["token"] == mine["token"]  # type: ignore[index]
    assert "Adopted" in world.kube.reasons()
    assert len(world.sb.triggers(world.pid)) == 1


def test_two_triggers_for_one_object_second_is_conflict(world: World) -> None:
    world.kube.apply(NS, "first", world.spec())
    world.rec.reconcile(NS, "first")
    ext = world.kube.status(NS, "first")["externalId"]
    world.kube.apply(NS, "second", world.spec(externalId=ext))
    world.sb.clear_requests()
    world.rec.reconcile(NS, "second")
    cond = world.kube.cond(NS, "second")
    assert cond["reason"] == "Conflict" and "apps/first" in cond["message"]
    assert world.writes() == 0  # never touches it
    assert world.kube.read_secret(NS, "second-trigger") is None
    # The owner keeps reconciling undisturbed.
    world.rec.reconcile(NS, "first")
    assert world.kube.cond(NS, "first")["reason"] == "Available"


def test_paused_makes_no_provider_call_and_keeps_ready(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.sb.clear_requests()
    world.kube.apply(NS, "web", world.spec(gitlab={"description": "x"}), {"cloudtriggers.io/paused": "true"})
    out = world.rec.reconcile(NS, "web")
    assert world.sb.calls() == []
    assert world.kube.cond(NS, "web", "Synced")["reason"] == "Paused"
    assert world.kube.cond(NS, "web")["status"] == "True"
    assert out.requeue_after is None
    # Deleting a paused Trigger still follows its deletionPolicy.
    assert world.rec.finalize(world.kube.get_trigger(NS, "web")) == "deleted"  # type: ignore[arg-type]
    assert world.sb.triggers(world.pid) == []


def test_throttled_waits_what_retry_after_says(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.sb.faults.retry_after = 7
    world.sb.fail_next(1, 429)
    out = world.rec.reconcile(NS, "web")
    assert out.reason == "Throttled" and out.requeue_after == 7
    assert world.kube.cond(NS, "web")["reason"] == "Throttled"


def test_delete_that_cannot_authenticate_retries_then_orphans_in_terminating_namespace(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.kube.release_secret(NS, "gl")
    del world.kube.secrets[(NS, "gl")]
    obj = world.kube.get_trigger(NS, "web")
    assert obj is not None
    rec = Reconciler(world.kube, world.rec.providers, Settings())  # restarted: no credentials kept
    with pytest.raises(Retry):
        rec.finalize(obj)
    world.kube.terminating.add(NS)
    obj["metadata"]["deletionTimestamp"] = "2000-01-01T00:00:00Z"
    before = ORPHANED.labels("gitlab", "delete_timeout")._value.get()
    assert rec.finalize(obj) == "orphaned"
    assert ORPHANED.labels("gitlab", "delete_timeout")._value.get() == before + 1
    orphaned = [e for e in world.kube.events if e["reason"] == "Orphaned"]
    assert orphaned and orphaned[0]["type"] == "Warning"
    ext = world.kube.status(NS, "web")["externalId"]
    assert f"gitlab trigger {ext} is left at the provider" in orphaned[0]["message"]
    assert len(world.sb.triggers(world.pid)) == 1  # it is really still there


def test_delete_after_the_secret_went_uses_the_last_good_credentials(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    world.kube.release_secret(NS, "gl")
    del world.kube.secrets[(NS, "gl")]
    obj = world.kube.get_trigger(NS, "web")
    assert obj is not None
    assert world.rec.finalize(obj) == "deleted"
    assert world.sb.triggers(world.pid) == []


def test_the_credentials_secret_is_held_before_the_first_create(world: World) -> None:
    held_at_create: list[bool] = []
    create = world.rec.providers["gitlab"].create

    def spy(target: Any) -> Any:
        held_at_create.append(world.kube.secrets[(NS, "gl")]["held"])
        return create(target)

    world.rec.providers["gitlab"].create = spy  # type: ignore[method-assign]
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    assert held_at_create == [True]


def test_a_secret_deleted_on_purpose_stays_until_its_last_trigger_is_finalized(world: World) -> None:
    world.kube.apply(NS, "a", world.spec())
    world.kube.apply(NS, "b", world.spec())  # two Triggers share the Secret
    world.rec.reconcile(NS, "a")
    world.rec.reconcile(NS, "b")
    world.kube.delete_secret(NS, "gl")
    assert world.kube.secrets[(NS, "gl")]["deleting"]  # held: only marked for deletion

    out = world.rec.reconcile(NS, "a")  # still works, and says so
    assert out.reason == "Available"
    ready = world.kube.cond(NS, "a")
    assert ready["status"] == "True" and f"credentials Secret {NS}/gl is being deleted" in ready["message"]
    assert world.kube.reasons().count("CredentialsDeleting") == 1
    world.rec.reconcile(NS, "a")
    assert world.kube.reasons().count("CredentialsDeleting") == 1  # one Warning per transition

    guard = world.rec.guard
    for name in ("a", "b"):
        obj = world.kube.get_trigger(NS, name)
        assert obj is not None
        guard.note(obj["metadata"]["uid"], obj)
        assert world.rec.finalize(obj) == "deleted"
        obj["metadata"].update(finalizers=[], deletionTimestamp="2026-01-01T00:00:00Z")
        world.kube.triggers[(NS, name)] = obj  # finalized, not yet gone
        guard.drop(obj["metadata"]["uid"])
        assert guard.release_if_unused((NS, "gl")) is (name == "b")
        del world.kube.triggers[(NS, name)]
    assert (NS, "gl") not in world.kube.secrets  # released, so the API server let it go
    assert world.sb.triggers(world.pid) == []


def test_a_secret_being_deleted_before_it_was_held_makes_no_new_trigger(world: World) -> None:
    world.kube.secrets[(NS, "gl")]["deleting"] = True  # e.g. a namespace deletion raced the Trigger
    world.kube.apply(NS, "web", world.spec())
    out = world.rec.reconcile(NS, "web")
    assert out.reason == "CredentialsMissing"
    assert "no new gitlab trigger is made with it" in world.kube.cond(NS, "web")["message"]
    assert world.sb.triggers(world.pid) == [] and "pendingCreate" not in world.kube.status(NS, "web")


def test_switching_secret_releases_the_old_one_once_unused(world: World) -> None:
    world.kube.put_secret(NS, "gl2", {"token": world.alice.token})
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    guard = world.rec.guard
    obj = world.kube.get_trigger(NS, "web")
    assert obj is not None
    uid = obj["metadata"]["uid"]
    assert guard.note(uid, obj) is None
    world.kube.apply(NS, "web", world.spec(credentialsSecretRef={"name": "gl2"}))
    world.rec.reconcile(NS, "web")
    obj = world.kube.get_trigger(NS, "web")
    assert obj is not None
    assert guard.note(uid, obj) == (NS, "gl")  # the Secret it stopped using, for a release check
    assert guard.release_if_unused((NS, "gl")) is True
    assert guard.release_if_unused((NS, "gl2")) is False
    assert not world.kube.secrets[(NS, "gl")]["held"] and world.kube.secrets[(NS, "gl2")]["held"]


def test_sweep_releases_what_a_downtime_left_held(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    del world.kube.triggers[(NS, "web")]  # deleted while no operator watched
    rec = Reconciler(world.kube, world.rec.providers, Settings())
    assert rec.guard.sweep() == 1
    assert not world.kube.secrets[(NS, "gl")]["held"]


def test_a_release_that_races_a_new_user_holds_the_secret_again(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    guard = world.rec.guard
    release = world.kube.release_secret

    def racing(namespace: str, name: str) -> bool:
        world.kube.apply(NS, "late", world.spec())  # appears between the LIST and the release
        return release(namespace, name)

    del world.kube.triggers[(NS, "web")]
    world.kube.release_secret = racing  # type: ignore[method-assign]
    assert guard.release_if_unused((NS, "gl")) is False
    assert world.kube.secrets[(NS, "gl")]["held"]


def test_foreign_secret_is_never_overwritten(world: World) -> None:
    world.kube.put_secret(NS, "web-trigger", {"hello": "world"}, owner_uid="someone-else")
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    assert world.kube.read_secret(NS, "web-trigger")[0] == {"hello": "world"}  # type: ignore[index]
    assert world.kube.cond(NS, "web")["reason"] == "Conflict"


def test_provider_missing_from_this_build_is_a_clear_condition(world: World) -> None:
    ack = {"regionId": "cn-beijing", "clusterId": "c1", "projectId": "default/web"}
    world.kube.apply(NS, "ack", {"ack": ack, "credentialsSecretRef": {"name": "gl"}})
    out = world.rec.reconcile(NS, "ack")
    cond = world.kube.cond(NS, "ack")
    assert cond["reason"] == "ProviderError" and "no ack provider" in cond["message"]
    assert out.requeue_after is None
    assert world.rec.finalize(world.kube.get_trigger(NS, "ack")) == "nothing"  # type: ignore[arg-type]


def test_default_credentials_only_for_their_configured_endpoint(world: World) -> None:
    world.kube.put_secret("cloudtriggers", "defaults", {"token": world.alice.token})
    settings = Settings(
        default_credentials_secret="cloudtriggers/defaults", default_credentials_endpoint=world.sb.url
    )
    rec = Reconciler(world.kube, world.rec.providers, settings)
    spec = world.spec()
    del spec["credentialsSecretRef"]
    world.kube.apply(NS, "web", spec)
    rec.reconcile(NS, "web")
    assert world.kube.cond(NS, "web")["reason"] == "Available"
    # Another endpoint taken from a spec never gets the default credentials.
    other = {"gitlab": {"url": "http://127.0.0.1:9", "project": "group/web"}}
    world.kube.apply(NS, "elsewhere", other)
    world.sb.clear_requests()
    rec.reconcile(NS, "elsewhere")
    assert world.kube.cond(NS, "elsewhere")["reason"] == "CredentialsMissing"
    assert "no default credentials apply" in world.kube.cond(NS, "elsewhere")["message"]


def test_resync_slots_spread_triggers_evenly_and_survive_restarts() -> None:
    import time
    import uuid

    rec = Reconciler(FakeKube(), {}, Settings())
    now = time.time()
    period = 600.0
    uids = [str(uuid.uuid4()) for _ in range(2000)]
    due = [now + rec.resync_after("10m", u, last=now) for u in uids]
    assert all(now + period / 2 - 1 <= d < now + 1.5 * period + 1 for d in due)
    # All created at once, yet spread over the whole period: ten buckets, none far from 200.
    buckets = [0] * 10
    for d in due:
        buckets[int((d % period) / period * 10)] += 1
    assert min(buckets) > 140 and max(buckets) < 260, buckets
    # Each Trigger keeps its slot: computed again later (as after a restart), the same instant.
    u = uids[0]
    first = now + rec.resync_after("10m", u, last=now)
    later = time.time() + rec.resync_after("10m", u, last=first)
    assert abs((later - first) - period) < 0.5


def test_a_delete_the_endpoint_policy_now_refuses_orphans_with_a_warning(world: World) -> None:
    """Created while the endpoint was allowed; the administrator has since refused it: the delete
    cannot be sent, and waiting would not help, so the Trigger goes and the orphan is counted."""
    from cloudtriggers.providers.base import EndpointPolicy, new_session

    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    ext = world.kube.status(NS, "web")["externalId"]
    world.rec.providers["gitlab"].session = new_session(EndpointPolicy())  # type: ignore[attr-defined]
    calls = len(world.sb.calls())
    before = ORPHANED.labels("gitlab", "endpoint_not_allowed")._value.get()
    assert world.rec.finalize(world.kube.get_trigger(NS, "web")) == "orphaned"  # type: ignore[arg-type]
    assert ORPHANED.labels("gitlab", "endpoint_not_allowed")._value.get() == before + 1
    assert len(world.sb.calls()) == calls and len(world.sb.triggers(world.pid)) == 1
    [event] = [e for e in world.kube.events if e["reason"] == "Orphaned"]
    assert event["type"] == "Warning" and f"gitlab trigger {ext} is left" in event["message"]
    assert "endpoint not allowed" in event["message"]
