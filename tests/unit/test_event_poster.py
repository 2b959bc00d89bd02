"""Events from a thread of their own (event_poster.py), as client-go's EventBroadcaster posts them: the
pass that records an Event does not wait for the API server, the order is kept, memory is bounded
without losing an Event, Events wait (a bounded time) while the passes are busy, and shutdown posts
what is queued within a time limit."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import pytest
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from cloudtriggers import metrics
from cloudtriggers.event_poster import EventPoster
from cloudtriggers.kube import KubeApiError, KubeClient
from cloudtriggers.sandbox.kube import KubeServer, kube_client


def generate_latest_of(collector: Collector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


class Api:
    """The poster's post function: records each Event; blocks while the gate is closed."""

    def __init__(self, open_: bool = True) -> None:
        self.posted: list[bytes] = []
        self.gate = threading.Event()
        if open_:
            self.gate.set()
        self.entered = threading.Event()
        self.fail_first = False

    def post(self, path: str, data: bytes, what: str) -> None:
        self.entered.set()
        self.gate.wait(10)
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("the API server went away")
        self.posted.append(data)


def test_a_pass_does_not_wait_for_the_api_server_and_the_order_is_kept() -> None:
    api = Api(open_=False)
    poster = EventPoster(api.post)
    poster.start()
    try:
        started = time.monotonic()
        assert all(poster.put("/events", str(i).encode(), f"e{i}") for i in range(50))
        assert time.monotonic() - started < 1.0  # the API server answers nothing yet
        assert api.posted == []
        api.gate.set()
        assert poster.flush(5.0)
        assert api.posted == [str(i).encode() for i in range(50)]
    finally:
        poster.stop()


def test_beyond_the_limit_the_pass_posts_its_own_event_none_is_dropped() -> None:
    api = Api(open_=False)
    poster = EventPoster(api.post, limit=2)
    poster.start()
    try:
        assert poster.put("/events", b"0", "e0")
        assert api.entered.wait(5)  # the thread holds "0" while the API server is stuck
        assert poster.put("/events", b"1", "e1") and poster.put("/events", b"2", "e2")
        assert not poster.put("/events", b"3", "e3")  # the caller posts this one itself
        assert poster.queued() == 3
        gauge = metrics.EventQueue()
        gauge.source = poster.queued
        assert "cloudtriggers_events_queued 3.0" in generate_latest_of(gauge)
        api.gate.set()
        assert poster.flush(5.0) and api.posted == [b"0", b"1", b"2"]
    finally:
        poster.stop()


def test_not_running_the_caller_posts_itself() -> None:
    api = Api()
    poster = EventPoster(api.post)
    assert not poster.put("/events", b"x", "x")  # not started
    poster.start()
    assert poster.put("/events", b"y", "y")
    poster.stop()
    assert api.posted == [b"y"]
    assert not poster.put("/events", b"z", "z")  # stopped
    poster.start()  # a new leadership term starts it again
    assert poster.put("/events", b"w", "w") and poster.flush(5.0)
    poster.stop()
    assert api.posted == [b"y", b"w"]


def test_shutdown_posts_what_is_queued_then_gives_the_rest_up(caplog: pytest.LogCaptureFixture) -> None:
    api = Api()
    poster = EventPoster(api.post)
    poster.start()
    for i in range(20):
        poster.put("/events", str(i).encode(), f"e{i}")
    poster.stop(timeout=5.0)
    assert len(api.posted) == 20

    stuck = Api(open_=False)
    poster = EventPoster(stuck.post)
    poster.start()
    for i in range(5):
        poster.put("/events", str(i).encode(), f"e{i}")
    assert stuck.entered.wait(5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="cloudtriggers.event_poster"):
        poster.stop(timeout=0.2)
    assert time.monotonic() - started < 2.0  # a stuck API server does not hold the shutdown
    assert "4 Events were not posted before shutdown" in caplog.text
    stuck.gate.set()


def test_a_failed_post_does_not_stop_the_thread(caplog: pytest.LogCaptureFixture) -> None:
    api = Api()
    api.fail_first = True
    poster = EventPoster(api.post)
    poster.start()
    try:
        with caplog.at_level(logging.ERROR, logger="cloudtriggers.event_poster"):
            poster.put("/events", b"a", "Created for apps/web")
            poster.put("/events", b"b", "Synced for apps/web")
            assert poster.flush(5.0)
        assert api.posted == [b"b"]
        assert "Created for apps/web" in caplog.text
    finally:
        poster.stop()


def test_the_kube_client_posts_its_events_through_the_poster_with_the_time_they_were_recorded() -> None:
    server = KubeServer().start()
    try:
        api = kube_client(server.url)
        k8s.CoreV1Api(api).create_namespace({"metadata": {"name": "apps"}})  # type: ignore[arg-type]
        kube = KubeClient(api)
        owner = {"metadata": {"name": "web", "namespace": "apps", "uid": "u-1", "resourceVersion": "7"}}
        kube.emit_event(owner, "Normal", "Created", "without a poster: posted before it returns")
        assert len(server.list("v1/events", "apps")) == 1

        poster = kube.post_events_in_background()
        poster.start()
        try:
            kube.emit_event(owner, "Normal", "Synced", "through the poster")
            assert poster.flush(5.0)
        finally:
            poster.stop()
        events = sorted(server.list("v1/events", "apps"), key=lambda e: e["reason"])
        assert [e["reason"] for e in events] == ["Created", "Synced"]
        synced = events[1]
        assert synced["involvedObject"]["uid"] == "u-1" and synced["message"] == "through the poster"
        assert synced["firstTimestamp"] == synced["lastTimestamp"] and synced["count"] == 1
    finally:
        server.stop()


def test_an_event_refused_by_a_terminating_namespace_is_not_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Deleting a namespace finalizes its Triggers after the API server stopped taking new content
    there, Events included (403, cause NamespaceTerminating): as Kubernetes' own controllers treat
    that cause (the ReplicaSet controller's slowStartBatch), an expected refusal, not one warning per
    Trigger. Any other refusal still warns."""
    server = KubeServer().start()
    try:
        api = kube_client(server.url)
        core = k8s.CoreV1Api(api)
        for ns in ("apps", "going"):
            core.create_namespace({"metadata": {"name": ns}})  # type: ignore[arg-type]
        core.create_namespaced_secret(  # keeps "going" Terminating
            "going",
            {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}},  # type: ignore[arg-type]
        )
        core.delete_namespace("going")
        kube = KubeClient(api)
        with caplog.at_level(logging.DEBUG, logger="cloudtriggers.kube"):
            owner = {"metadata": {"name": "web", "namespace": "going", "uid": "u-1"}}
            kube.emit_event(owner, "Normal", "Deleted", "deleted gitlab trigger 7")
            assert [r.levelno for r in caplog.records if r.name == "cloudtriggers.kube"] == [logging.DEBUG]
            assert "being terminated" in caplog.text
            caplog.clear()
            rbac = {"kind": "Status", "code": 403, "reason": "Forbidden", "message": "events is forbidden"}

            def refused(*_: object, **__: object) -> None:
                raise KubeApiError(403, json.dumps(rbac))

            kube._request = refused  # type: ignore[method-assign]
            kube.emit_event({"metadata": {**owner["metadata"], "namespace": "apps"}}, "Normal", "Synced", "x")
            assert [r.levelno for r in caplog.records if r.name == "cloudtriggers.kube"] == [logging.WARNING]
        assert server.list("v1/events", "going") == []
    finally:
        server.stop()


def test_only_the_namespace_terminating_cause_marks_a_refusal_as_expected() -> None:
    terminating = {
        "kind": "Status",
        "code": 403,
        "reason": "Forbidden",
        "details": {"causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace"}]},
    }
    assert KubeApiError(403, json.dumps(terminating)).refused_terminating
    rbac = {"kind": "Status", "code": 403, "reason": "Forbidden", "details": {"kind": "events"}}
    assert not KubeApiError(403, json.dumps(rbac)).refused_terminating
    assert not KubeApiError(409, json.dumps(terminating)).refused_terminating
    assert not KubeApiError(403, "<html>forbidden by a proxy</html>").refused_terminating


def test_a_thread_stuck_past_shutdown_does_not_post_for_the_next_term() -> None:
    """Leadership lost while the API server hangs, then won again: the old thread, once its post
    returns, ends; only the new one posts, so the order stays one thread's."""
    others = set(threading.enumerate())  # threads of other tests are not this poster's

    def posters() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "events" and t not in others]

    api = Api(open_=False)
    poster = EventPoster(api.post)
    poster.start()
    poster.put("/events", b"old", "old")
    assert api.entered.wait(5)
    poster.stop(timeout=0.1)  # the post of "old" is still stuck
    poster.start()
    assert poster.put("/events", b"new", "new")
    assert len(posters()) == 2
    api.gate.set()
    assert poster.flush(5.0)
    deadline = time.monotonic() + 5
    while len(posters()) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(posters()) == 1  # the old one ended
    assert sorted(api.posted) == [b"new", b"old"]  # "old" was already on the wire; nothing twice
    poster.stop()


class Busy:
    """The passes' state as the poster asks it (Scheduler.busy), set by the test."""

    def __init__(self) -> None:
        self.value = True
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.value


def _posted_within(api: Api, count: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while len(api.posted) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return len(api.posted) >= count


def test_events_wait_while_the_passes_are_busy_and_go_in_order_once_they_are_not() -> None:
    """In a burst of creates an Event's write would compete at the API server with the status
    writes of the Triggers still being made: it waits until the passes go quiet."""
    api, busy = Api(), Busy()
    poster = EventPoster(api.post, busy=busy, hold_max=30.0)
    poster.start()
    try:
        for i in range(3):
            assert poster.put("/events", str(i).encode(), f"e{i}")
        assert not _posted_within(api, 1, 0.4)
        assert busy.asked >= 2  # it looked again while holding, not once for ever
        assert poster.queued() == 3
        busy.value = False
        assert _posted_within(api, 3, 5.0)
        assert api.posted == [b"0", b"1", b"2"]
    finally:
        poster.stop()


def test_an_event_waits_for_busy_passes_at_most_hold_max() -> None:
    """Under load that does not end (ten thousand Triggers applied at once), Events still go, each
    at most hold_max after it was recorded: the queue does not only grow."""
    api, busy = Api(), Busy()
    poster = EventPoster(api.post, busy=busy, hold_max=0.3)
    poster.start()
    try:
        started = time.monotonic()
        poster.put("/events", b"first", "first")
        assert _posted_within(api, 1, 5.0)
        assert 0.25 <= time.monotonic() - started < 3.0
        started = time.monotonic()
        poster.put("/events", b"second", "second")
        assert _posted_within(api, 2, 5.0)
        assert 0.25 <= time.monotonic() - started < 3.0
    finally:
        poster.stop()


def test_flush_and_shutdown_do_not_wait_for_busy_passes() -> None:
    api, busy = Api(), Busy()
    poster = EventPoster(api.post, busy=busy, hold_max=60.0)
    poster.start()
    poster.put("/events", b"a", "a")
    started = time.monotonic()
    assert poster.flush(5.0) and api.posted == [b"a"]
    poster.put("/events", b"b", "b")
    poster.stop(timeout=5.0)
    assert api.posted == [b"a", b"b"]
    assert time.monotonic() - started < 3.0


def test_the_scheduler_is_busy_while_a_pass_runs_or_waits_and_quiet_soon_after() -> None:
    """Scheduler.busy, which the poster asks from its thread: a pass running or due is busy; QUIET
    seconds after the last one ended, quiet."""
    from cloudtriggers.scheduler import QUIET, Scheduler

    async def scenario() -> list[bool]:
        release = asyncio.Event()
        started = asyncio.Event()

        async def call(fn: Any, *args: Any) -> Any:
            started.set()
            await release.wait()

        class _Rec:
            def error_backoff(self, uid: str) -> float:
                return 1.0

        sched = Scheduler(_Rec(), call, workers=1, credentials_poll=15.0)  # type: ignore[arg-type]
        sched._pass = lambda e: call(None)  # type: ignore[method-assign]
        seen = [sched.busy()]  # nothing has run yet
        runner = asyncio.get_running_loop().create_task(sched.run())
        meta = {"uid": "a", "namespace": "apps", "name": "a", "finalizers": ["cloudtriggers.io/finalizer"]}
        sched.observe({"metadata": meta}, lambda: 0.0)
        await started.wait()
        await asyncio.sleep(QUIET * 3)
        seen.append(sched.busy())  # the pass still runs
        release.set()
        await asyncio.sleep(0.01)
        seen.append(sched.busy())  # just ended
        await asyncio.sleep(QUIET * 2)
        seen.append(sched.busy())
        runner.cancel()
        return seen

    assert asyncio.run(scenario()) == [False, True, True, False]
