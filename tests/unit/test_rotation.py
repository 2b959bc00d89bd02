"""Token rotation (reconcile/rotate.py), on a simulated clock, through the real GitLab and ACK
clients against their sandboxes: scheduled and on demand, create-before-delete with hand-over."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cloudtriggers.apiserver.cel import violations
from cloudtriggers.crd import build_crd
from cloudtriggers.metrics import ROTATIONS
from cloudtriggers.providers.base import AccountLimiter
from cloudtriggers.providers.gitlab import GitLabProvider
from cloudtriggers.reconcile import ROTATE_ANNOTATION, Reconciler
from cloudtriggers.sandbox import LOOPBACK
from cloudtriggers.sandbox.gitlab import MAINTAINER, GitLabSandbox
from cloudtriggers.settings import Settings
from fakekube import FakeKube
from unit.test_crd_cel import ACK, GITLAB, trigger

NS = "apps"
START = 1_800_000_000.0  # a simulated wall clock


@dataclass
class World:
    sb: GitLabSandbox
    kube: FakeKube
    rec: Reconciler
    pid: int
    now: list[float]

    def spec(self, **extra: Any) -> dict[str, Any]:
        return {
            "gitlab": {"url": self.sb.url, "project": "group/web"},
            "credentialsSecretRef": {"name": "gl"},
            **extra,
        }

    def tokens(self) -> dict[int, str]:
        return {t["id"]: t["token"] for t in self.sb.triggers(self.pid)}

    def secret_token(self) -> str:
        got = self.kube.read_secret(NS, "web-trigger")
        assert got is not None
        return got[0]["token"]

    def annotate(self, value: str) -> None:
        self.kube.triggers[(NS, "web")]["metadata"].setdefault("annotations", {})[ROTATE_ANNOTATION] = value


@pytest.fixture
def world() -> Iterator[World]:
    with GitLabSandbox() as sb:
        user = sb.add_user("bot")
        pid = sb.add_project("group/web", {"bot": MAINTAINER})
        kube = FakeKube()
        kube.put_secret(NS, "gl", {"token": user.token})
        provider = GitLabProvider(policy=LOOPBACK, limiter=AccountLimiter(rate=1000, burst=1000))
        rec = Reconciler(kube, {"gitlab": provider}, Settings())
        now = [START]
        rec.clock = lambda: now[0]
        yield World(sb, kube, rec, pid, now)


def test_every_hour_with_a_minute_of_overlap(world: World) -> None:
    """Three simulated hours, a pass a minute: a rotation each hour, the Secret always holding a
    live token, never more than two at GitLab, and the old one gone within the overlap + one pass."""
    world.kube.apply(NS, "web", world.spec(rotation={"every": "1h", "overlap": "1m"}))
    before = ROTATIONS.labels("gitlab", "success")._value.get()
    rotations: list[float] = []
    last_token = ""
    two_since: float | None = None
    for minute in range(3 * 60 + 5):
        world.now[0] = START + minute * 60
        world.rec.reconcile(NS, "web")
        tokens = world.tokens()
        assert len(tokens) <= 2, f"minute {minute}: {len(tokens)} tokens at GitLab"
        assert world.secret_token() in tokens.values(), f"minute {minute}: the Secret's token is dead"
        if world.secret_token() != last_token:
            if last_token:
                rotations.append(minute)
            last_token = world.secret_token()
        if len(tokens) == 2:
            two_since = two_since if two_since is not None else minute
            assert minute - two_since <= 2, f"minute {minute}: the old token outlived its overlap"
        else:
            two_since = None
    assert rotations == [60, 120, 180]
    assert ROTATIONS.labels("gitlab", "success")._value.get() == before + 3
    st = world.kube.status(NS, "web")
    assert st["rotation"]["lastRotationTime"] and st["rotation"]["nextRotationTime"]
    assert st["tokenSha256"] and "pendingDelete" not in st
    rotated = [e for e in world.kube.events if e["reason"] == "Rotated"]
    assert len(rotated) == 3 and "keeps working until" in rotated[0]["message"]
    assert all(t not in json.dumps(world.kube.events) for t in world.tokens().values())
    assert ROTATE_ANNOTATION not in str(world.kube.secret_annotations)
    assert world.kube.secret_annotations[(NS, "web-trigger")]["cloudtriggers.io/rotated-at"]


def test_on_demand_once_per_new_value_and_the_requeue_ends_the_overlap(world: World) -> None:
    world.kube.apply(NS, "web", world.spec(resyncPeriod="2h"))  # only on demand, default overlap 10m
    world.rec.reconcile(NS, "web")
    first = world.secret_token()
    world.annotate("2026-12-03T10:00:00Z")
    out = world.rec.reconcile(NS, "web")
    assert world.secret_token() != first and len(world.tokens()) == 2
    assert out.requeue_after is not None and 600 <= out.requeue_after <= 602  # back when the overlap ends
    second = world.secret_token()
    world.rec.reconcile(NS, "web")  # the same value again: nothing
    assert world.secret_token() == second and len(world.tokens()) == 2
    world.now[0] += 601
    world.rec.reconcile(NS, "web")
    assert list(world.tokens().values()) == [second]
    world.annotate("again")
    world.rec.reconcile(NS, "web")
    assert world.secret_token() != second and len(world.tokens()) == 2
    # Asked again while an overlap runs: the older token goes first, never three.
    world.annotate("and again")
    world.rec.reconcile(NS, "web")
    assert len(world.tokens()) == 2 and world.secret_token() in world.tokens().values()


def test_a_deleted_trigger_takes_both_tokens(world: World) -> None:
    world.kube.apply(NS, "web", world.spec(rotation={"overlap": "1h"}))
    world.rec.reconcile(NS, "web")
    world.annotate("now")
    world.rec.reconcile(NS, "web")
    assert len(world.tokens()) == 2
    assert world.rec.finalize(world.kube.get_trigger(NS, "web")) == "deleted"  # type: ignore[arg-type]
    assert world.tokens() == {}


def test_adopted_triggers_are_not_rotated(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    ext = world.kube.status(NS, "web")["externalId"]
    web = world.kube.triggers.pop((NS, "web"))  # gone without deleting its trigger: free to adopt
    world.rec.forget(web["metadata"]["uid"])
    world.kube.apply(NS, "adopted", {**world.spec(), "externalId": ext, "secretName": "adopted"})
    world.kube.triggers[(NS, "adopted")]["metadata"]["annotations"] = {ROTATE_ANNOTATION: "x"}
    world.rec.reconcile(NS, "adopted")  # adopts it
    world.rec.reconcile(NS, "adopted")  # then sees the request, and refuses it
    refused = [e for e in world.kube.events if e["reason"] == "RotationRefused"]
    assert refused and "only tokens cloudtriggers made rotate" in refused[0]["message"]
    assert len(world.tokens()) == 1 and world.kube.cond(NS, "adopted")["reason"] == "Available"
    world.rec.reconcile(NS, "adopted")  # the request is recorded: one Warning, not one per pass
    assert len([e for e in world.kube.events if e["reason"] == "RotationRefused"]) == 1


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"swr": {"region": "cn-north-4"}, "rotation": {}}, "SWR triggers have no token"),
        ({"gitlab": GITLAB, "rotation": {"every": "30m"}}, "rotation.every must be at least 1h"),
        ({"gitlab": GITLAB, "externalId": "7", "rotation": {}}, "rotates only tokens it created"),
        ({"ack": ACK, "managementPolicy": "ObserveOnly", "externalId": "7", "rotation": {}}, "Full"),
    ],
)
def test_the_api_server_refuses_rotation_it_cannot_do(spec: dict[str, Any], says: str) -> None:
    found = "\n".join(violations(build_crd(), trigger(**spec)))
    assert says in found, found


def test_rotation_is_accepted_for_gitlab_and_ack() -> None:
    for block in ({"gitlab": GITLAB}, {"ack": ACK}):
        assert violations(build_crd(), trigger(**block, rotation={"every": "24h", "overlap": "0s"})) == []


def test_a_rotation_asked_for_with_a_spec_change_follows_it_at_once(world: World) -> None:
    world.kube.apply(NS, "web", world.spec())
    world.rec.reconcile(NS, "web")
    first = world.secret_token()
    world.kube.apply(
        NS, "web", world.spec(gitlab={"url": world.sb.url, "project": "group/web", "description": "x"})
    )
    world.annotate("with the change")
    out = world.rec.reconcile(NS, "web")  # updates the description in place
    assert out.requeue_after == 1.0  # and comes back for the rotation
    world.rec.reconcile(NS, "web")
    assert world.secret_token() != first


def test_an_interrupted_rotation_whose_request_is_withdrawn_is_finished(world: World) -> None:
    """Crash after the provider create, then the request and spec.rotation removed: the next pass
    adopts what the interrupted rotation made and deletes the old trigger: one token, none orphaned."""
    world.kube.apply(NS, "web", world.spec(rotation={"overlap": "0s"}))
    world.rec.reconcile(NS, "web")
    old = world.kube.status(NS, "web")["externalId"]
    provider = world.rec.providers["gitlab"]
    real_write = world.kube.write_output_secret

    def crash(*a: Any, **k: Any) -> None:
        raise RuntimeError("crash after the create")

    world.kube.write_output_secret = crash  # type: ignore[method-assign]
    world.annotate("once")
    with pytest.raises(RuntimeError):
        world.rec.reconcile(NS, "web")
    assert len(world.tokens()) == 2 and world.kube.status(NS, "web").get("pendingCreate")
    world.kube.write_output_secret = real_write  # type: ignore[method-assign]
    spec = world.spec()
    world.kube.apply(NS, "web", spec)
    world.kube.triggers[(NS, "web")]["metadata"]["annotations"] = {}
    fresh = Reconciler(world.kube, {"gitlab": provider}, Settings())  # the restarted operator
    fresh.clock = world.rec.clock
    fresh.reconcile(NS, "web")
    st = world.kube.status(NS, "web")
    assert st["externalId"] != old and "pendingCreate" not in st and len(world.tokens()) == 2
    assert st["pendingDelete"]["externalId"] == old  # with the default overlap, now that spec has none
    world.now[0] += 601
    fresh.reconcile(NS, "web")
    assert len(world.tokens()) == 1 and world.secret_token() == next(iter(world.tokens().values()))
