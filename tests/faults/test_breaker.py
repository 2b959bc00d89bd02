"""Back-pressure on bad credentials and bad specs: a circuit per account, slow retries of permanent errors.

- CredentialsBreaker on a fake clock: opens after N failures, one probe after the cool-down (doubling),
  closes on success or when the credentials Secret changes, and limits the first wave of calls.
- The operator in-process: ten Triggers sharing one bad GitLab token cost at most `threshold` provider
  calls, all say CredentialsInvalid, probes follow the cool-down, and fixing the Secret heals them all.
- A Trigger whose target does not exist, on a simulated clock (the requeue delays the reconciler
  returns): at most 5 attempts in any minute, a few an hour, and 2 an hour once backed off.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cloudtriggers.metrics import render
from cloudtriggers.providers.base import AccountLimiter, CredentialsBreaker
from cloudtriggers.providers.gitlab import GitLabProvider
from cloudtriggers.reconcile import Reconciler
from cloudtriggers.sandbox import LOOPBACK
from cloudtriggers.sandbox.gitlab import MAINTAINER, GitLabSandbox
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for
from cloudtriggers.settings import Settings
from fakekube import FakeKube
from faults.faultkit import KITS, NS, TALLY, ProviderKit, new_world, trigger_obj, wait_goal


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_probes_and_closes() -> None:
    clock = Clock()
    b = CredentialsBreaker(threshold=3, cooldown=60, max_cooldown=240, clock=clock)
    key = "gitlab:https://gitlab.example.com:abc"
    for uid in ("a", "b", "c"):
        assert b.admit(key, uid, "1") is None
    # The first wave of an unproven key is limited to `threshold` calls in flight.
    waiting = b.admit(key, "d", "1")
    assert waiting is not None and not waiting.open
    for uid in ("a", "b", "c"):
        b.failure(key, uid, "401 Unauthorized")
        b.done(key, uid)
    verdict = b.admit(key, "d", "1")
    assert verdict is not None and verdict.open and verdict.retry_in == 60
    assert "401 Unauthorized" in verdict.message and "request not sent" in verdict.message
    assert b.open_count() == {"gitlab": 1}
    # After the cool-down exactly one Trigger probes; the others keep waiting for its answer.
    clock.now += 60
    assert b.admit(key, "e", "1") is None
    blocked = b.admit(key, "f", "1")
    assert blocked is not None and blocked.open
    b.failure(key, "e", "401 Unauthorized")
    b.done(key, "e")
    again = b.admit(key, "f", "1")
    assert again is not None and again.retry_in == 120  # the cool-down doubled
    clock.now += 120
    assert b.admit(key, "f", "1") is None
    b.failure(key, "f", "401")
    b.done(key, "f")
    clock.now += 240
    assert b.admit(key, "g", "1") is None
    b.failure(key, "g", "401")
    b.done(key, "g")
    capped = b.admit(key, "h", "1")
    assert capped is not None and capped.retry_in == 240  # capped at max_cooldown
    # A new version of the credentials Secret closes the circuit at once.
    assert b.admit(key, "h", "2") is None
    b.success(key, "h")
    b.done(key, "h")
    assert b.open_count() == {}
    # Proven credentials are not limited to `threshold` calls in flight.
    assert all(b.admit(key, u, "2") is None for u in "ijklmn")


def test_a_probe_that_never_reports_is_handed_on() -> None:
    clock = Clock()
    b = CredentialsBreaker(threshold=1, cooldown=10, clock=clock)
    assert b.admit("k", "a") is None
    b.failure("k", "a", "401")
    clock.now += 10
    assert b.admit("k", "a") is None  # a probes, and its pass dies without a word
    assert b.admit("k", "b") is not None
    clock.now += 61
    assert b.admit("k", "b") is None


def test_the_triggers_told_to_wait_are_woken_when_a_first_call_ends() -> None:
    woken: list[set[str]] = []
    b = CredentialsBreaker(threshold=2, cooldown=60)
    # Called outside the breaker's lock: a wake that asks the breaker again must not deadlock.

    def wake(uids: set[str]) -> None:
        woken.append(set(uids))
        for u in sorted(uids):
            b.admit("k", u)

    b.wake = wake
    assert b.admit("k", "a") is None and b.admit("k", "b") is None
    assert b.admit("k", "c") is not None and b.admit("k", "d") is not None  # wait for a and b
    b.success("k", "a")  # proven: whoever waited may go now, and is told so at once
    assert woken == [{"c", "d"}]
    b.success("k", "b")
    assert woken == [{"c", "d"}]  # nobody waits any more: no wake-up


def test_a_waiter_is_woken_by_a_failure_or_an_unproven_end_and_told_the_verdict() -> None:
    woken: list[set[str]] = []
    b = CredentialsBreaker(threshold=2, cooldown=60)
    b.wake = lambda uids: woken.append(set(uids))
    assert b.admit("k", "a") is None and b.admit("k", "b") is None
    assert b.admit("k", "c") is not None
    b.done("k", "a")  # a's pass ended without an answer about the credentials (a timeout, say)
    assert woken == [{"c"}]
    assert b.admit("k", "c") is None  # in a's place
    b.failure("k", "b", "401")
    assert woken == [{"c"}]  # nobody was waiting
    assert b.admit("k", "d") is not None  # one failure and c in flight: the first wave is full
    b.failure("k", "c", "401")  # the second failure opens the circuit
    assert woken == [{"c"}, {"d"}]
    verdict = b.admit("k", "d")
    assert verdict is not None and verdict.open and "401" in verdict.message
    b.done("k", "c")  # its pass ends after the failure: nothing more to wake
    assert woken == [{"c"}, {"d"}]


def test_a_forgotten_trigger_is_not_woken() -> None:
    woken: list[set[str]] = []
    b = CredentialsBreaker(threshold=1)
    b.wake = lambda uids: woken.append(set(uids))
    assert b.admit("k", "a") is None and b.admit("k", "b") is not None and b.admit("k", "c") is not None
    b.forget("b")
    b.success("k", "a")
    assert woken == [{"c"}]


def test_new_triggers_sharing_credentials_go_on_as_soon_as_the_first_call_proves_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A burst of new Triggers of one account: the first `threshold` call the provider, the others
    # wait for them. Were they left to look again after `first_wait` (made a minute here), they would
    # not be Ready within the 20 s below; the breaker wakes them when the first call is answered.
    monkeypatch.setattr(CredentialsBreaker, "first_wait", 60.0)
    kit = KITS["gitlab"]
    w = new_world(kit, Settings(credentials_poll=0.5, breaker_threshold=1))
    try:
        w.start_operator()
        names = [f"t{i}" for i in range(6)]
        for name in names:
            w.create_trigger(trigger_obj(w, kit, name))
        for name in names:
            wait_goal(w, name, gone=False, timeout=20)
        assert len([c for c in kit_calls(w, kit) if c.method == "POST"]) == len(names)
    finally:
        w.stop()


# -- the operator ---------------------------------------------------------------------------------


BAD = {
    "gitlab": {"token": "glpat-" + "x" * 20},
    "ack": {"accessKeyId": "LTAI" + "x" * 20, "accessKeySecret": "x" * 30},
    "swr": {"accessKey": "X" * 20, "secretKey": "x" * 40},
}


@pytest.fixture(params=sorted(KITS))
def world(request: pytest.FixtureRequest) -> Iterator[tuple[LocalWorld, ProviderKit]]:
    kit = KITS[request.param]
    w = new_world(kit, Settings(credentials_poll=0.5, breaker_threshold=3, breaker_cooldown=1.0))
    try:
        yield w, kit
    finally:
        w.stop()


def test_bad_credentials_open_one_circuit_for_every_trigger(world: tuple[LocalWorld, ProviderKit]) -> None:
    w, kit = world
    good = {
        k: base64.b64decode(v).decode() for k, v in ((w.secret(NS, "creds") or {}).get("data") or {}).items()
    }
    w.apply_secret(NS, "creds", BAD[kit.name])
    w.start_operator()
    names = [f"t{i}" for i in range(10)]
    for name in names:
        w.create_trigger(trigger_obj(w, kit, name))

    def all_invalid() -> bool:
        return all(condition(w.trigger(NS, n)).get("reason") == "CredentialsInvalid" for n in names)

    wait_for(all_invalid, timeout=15, what="every Trigger CredentialsInvalid")
    calls = kit_calls(w, kit)
    # Before the first cool-down ends, only the first wave (at most `threshold` calls) went out.
    early = [c for c in calls if c.at < calls[0].at + 0.9]
    assert len(early) <= 3, [f"{c.method} {c.path} {c.status}" for c in calls]
    gauge = f'cloudtriggers_credentials_circuits_open{{provider="{kit.name}"}}'
    assert f"{gauge} 1.0" in render().decode()
    messages = {condition(w.trigger(NS, n)).get("message", "") for n in names}
    assert sum("request not sent" in m for m in messages) >= 1, messages
    # The cool-down (1 s, then 2 s, 4 s: doubling) lets one probe through at a time.
    first_wave = len(calls)
    time.sleep(4)
    probes = len(kit_calls(w, kit)) - first_wave
    assert probes <= 3, f"{probes} probe calls in 4 s"
    if kit.name == "swr":
        assert not w.swr.locked(BAD["swr"]["accessKey"])
    # Reported as the total for all ten Triggers: the point is that it does not grow with them.
    TALLY.add("bad credentials, 10 Triggers (total calls, all 10)", kit.name, len(kit_calls(w, kit)))
    # A fixed Secret closes the circuit at once: every Trigger becomes Ready.
    w.apply_secret(NS, "creds", good)
    for name in names:
        wait_goal(w, name, gone=False, timeout=20)
    assert f"{gauge} 0.0" in render().decode()


def kit_calls(w: LocalWorld, kit: ProviderKit) -> list[Any]:
    """The provider's API requests, oldest first (ACK's STS endpoint aside)."""
    return [c for c in getattr(w, kit.name).calls() if c.path != "/"]


# -- permanent errors on a simulated clock ----------------------------------------------------------


@dataclass
class Sim:
    sb: GitLabSandbox
    kube: FakeKube
    rec: Reconciler


@pytest.fixture
def sim() -> Iterator[Sim]:
    with GitLabSandbox() as sb:
        user = sb.add_user("bot")
        sb.add_project("group/web", {"bot": MAINTAINER})
        kube = FakeKube()
        kube.put_secret(NS, "gl", {"token": user.token})
        provider = GitLabProvider(
            policy=LOOPBACK, limiter=AccountLimiter(rate=1000, burst=1000), timeout=(2.0, 5.0)
        )
        yield Sim(sb, kube, Reconciler(kube, {"gitlab": provider}, Settings()))


def _simulate(sim: Sim, name: str, spec: dict[str, Any], hours: float) -> list[float]:
    """Run the reconcile passes the operator would run in `hours`; return when each called the provider."""
    sim.kube.apply(NS, name, spec)
    t, at = 0.0, []
    while t < hours * 3600:
        before = len(sim.sb.calls())
        out = sim.rec.reconcile(NS, name)
        if len(sim.sb.calls()) > before:
            at.append(t)
        assert out.requeue_after is not None and out.requeue_after > 0, out
        t += out.requeue_after
    return at


@pytest.mark.parametrize(
    "case, block",
    [
        ("missing project", {"project": "group/missing"}),
        ("forbidden project", {"project": "group/other"}),
    ],
)
def test_permanent_errors_cost_a_few_calls_an_hour(sim: Sim, case: str, block: dict[str, Any]) -> None:
    sim.sb.add_project("group/other", {})
    spec = {"gitlab": {"url": sim.sb.url, **block}, "credentialsSecretRef": {"name": "gl"}}
    at = _simulate(sim, "bad", spec, hours=3)
    cond = sim.kube.cond(NS, "bad")
    assert cond["status"] == "False" and cond["reason"] in {"TargetNotFound", "Forbidden"}, cond
    per_minute = max(sum(1 for x in at if s <= x < s + 60) for s in at)
    first_hour = sum(1 for x in at if x < 3600)
    later = [sum(1 for x in at if h * 3600 <= x < (h + 1) * 3600) for h in (1, 2)]
    calls = len(sim.sb.calls())
    print(f"{case}: {len(at)} attempts, {calls} calls in 3 h; first hour {first_hour}, then {later}")
    TALLY.add(f"permanent error, 3 simulated hours ({case})", "gitlab", calls)
    assert per_minute <= 5
    assert first_hour <= 10
    assert all(n <= 3 for n in later), later
