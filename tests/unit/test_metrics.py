"""The metrics the alerts and the dashboard are built on (deploy/helm/cloudtriggers/files): the
not-Ready Triggers by name, the scheduler's backlog, and requests per account without secrets."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from cloudtriggers.metrics import SchedulerStates, TriggerStates, render
from cloudtriggers.providers.base import AccountLimiter
from cloudtriggers.providers.gitlab import GitLabProvider
from cloudtriggers.providers.pacing import account_label
from cloudtriggers.sandbox import LOOPBACK
from cloudtriggers.sandbox.gitlab import MAINTAINER, GitLabSandbox
from cloudtriggers.scheduler import Scheduler


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def samples(collector: Any, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for f in collector.collect() for s in f.samples if s.name == name]


def body(name: str, ready: str | None, reason: str = "", since: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {"provider": "gitlab"}
    if ready is not None:
        cond = {"type": "Ready", "status": ready, "reason": reason, "lastTransitionTime": since}
        status["conditions"] = [cond]
    meta = {"name": name, "namespace": "apps", "creationTimestamp": "2026-12-01T00:00:00Z"}
    return {"metadata": meta, "spec": {"gitlab": {}}, "status": status}


def test_not_ready_triggers_are_named_with_their_reason_and_since_when() -> None:
    states = TriggerStates()
    states.update("1", body("web", "False", "CredentialsInvalid", "2026-12-02T10:00:00Z"))
    states.update("2", body("api", "True", "Available", "2026-12-02T09:00:00Z"))
    states.update("3", body("new", None))  # no condition yet: since it was created
    got = samples(states, "cloudtriggers_trigger_not_ready_since_timestamp_seconds")
    labels = {"namespace": "apps", "provider": "gitlab"}
    assert sorted(got, key=lambda s: s[0]["name"]) == [
        ({**labels, "name": "new", "reason": "Unknown"}, ts("2026-12-01T00:00:00+00:00")),
        ({**labels, "name": "web", "reason": "CredentialsInvalid"}, ts("2026-12-02T10:00:00+00:00")),
    ]
    states.update("1", body("web", "True", "Available", "2026-12-02T11:00:00Z"))  # Ready again: gone
    states.drop("3")
    assert samples(states, "cloudtriggers_trigger_not_ready_since_timestamp_seconds") == []
    counts = dict((s[0]["ready"], s[1]) for s in samples(states, "cloudtriggers_triggers"))
    assert counts == {"True": 2.0}


class _Rec:
    """Just enough of a Reconciler for Scheduler: a pass that blocks until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    def error_backoff(self, uid: str) -> float:
        return 1.0


def test_the_scheduler_reports_what_waits_for_a_worker_and_for_how_long() -> None:
    async def scenario() -> tuple[tuple[int, int, float], tuple[int, int, float]]:
        rec = _Rec()
        started = asyncio.Event()

        async def call(fn: Any, *args: Any) -> Any:
            started.set()
            await rec.release.wait()
            return None

        sched = Scheduler(rec, call, workers=1, credentials_poll=15.0)  # type: ignore[arg-type]
        sched._pass = lambda e: call(None)  # type: ignore[method-assign]
        loop_task = asyncio.get_running_loop().create_task(sched.run())
        await asyncio.sleep(0)
        for uid in ("a", "b", "c"):
            meta = {
                "uid": uid,
                "namespace": "apps",
                "name": uid,
                "finalizers": ["cloudtriggers.io/finalizer"],
            }
            sched.observe({"metadata": meta}, lambda: 0.0)
        await started.wait()
        await asyncio.sleep(0.3)
        busy = sched.stats()
        rec.release.set()
        for _ in range(50):
            await asyncio.sleep(0.01)
            if sched.stats()[:2] == (0, 0):
                break
        idle = sched.stats()
        loop_task.cancel()
        return busy, idle

    (queued, running, lag), idle = asyncio.run(scenario())
    assert (queued, running) == (2, 1) and 0.25 <= lag < 5
    assert idle == (0, 0, 0.0)
    gauges = SchedulerStates()
    gauges.source = lambda: (2, 1, 0.5)
    assert samples(gauges, "cloudtriggers_reconcile_queue") == [({}, 2.0)]
    assert samples(gauges, "cloudtriggers_reconcile_lag_seconds") == [({}, 0.5)]


def test_requests_are_counted_per_account_without_the_credentials() -> None:
    from cloudtriggers.models import GitLabSpec
    from cloudtriggers.providers import instrument
    from cloudtriggers.providers.base import Target, account_key

    with GitLabSandbox() as sb:
        user = sb.add_user("bot")
        sb.add_project("group/web", {"bot": MAINTAINER})
        provider = GitLabProvider(policy=LOOPBACK, limiter=AccountLimiter(rate=1000, burst=1000))
        instrument(provider.session, "gitlab")
        block = GitLabSpec(url=sb.url, project="group/web")
        target = Target("apps", "web", "uid", block, {"token": user.token})
        provider.create(target)
        label = account_label(account_key("gitlab", sb.url, {"token": user.token}))
        assert label.startswith(sb.url.split("://")[1] + "/") and len(label.rsplit("/", 1)[1]) == 8
        text = render().decode()
        assert user.token not in text
        got = {
            (s.labels["account"], s.labels["code"]): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "cloudtriggers_account_requests_total" and s.labels["provider"] == "gitlab"
        }
        assert got.get((label, "2xx"), 0) >= 2  # the project lookup and the create


def test_a_scheduler_entry_keeps_no_managed_fields_or_last_applied_copy() -> None:
    """Kept for each Trigger for its lifetime, so only what passes read: a real API server's
    managedFields and kubectl's last-applied annotation are often larger than the rest."""
    from cloudtriggers.packed import kept as _kept

    body: dict[str, Any] = {
        "metadata": {
            "name": "web",
            "uid": "u1",
            "resourceVersion": "7",
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "keep": "1"},
        },
        "spec": {"gitlab": {}},
        "status": {"externalId": "1"},
    }
    kept = _kept(body)
    assert kept["metadata"] == {
        "name": "web",
        "uid": "u1",
        "resourceVersion": "7",
        "annotations": {"keep": "1"},
    }
    assert kept["spec"] is body["spec"] and kept["status"] == {"externalId": "1"}
    assert "managedFields" in body["metadata"]  # the watched body itself is left as it is
