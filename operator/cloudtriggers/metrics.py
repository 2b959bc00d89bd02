"""Prometheus metrics (docs/metrics.md) and the operator's HTTP endpoint: /metrics, /healthz, /readyz."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .models import parse_time

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "cloudtriggers_reconciles_total",
    "Reconcile passes, by provider and result (the Ready/Synced reason they ended with).",
    ["provider", "result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "cloudtriggers_reconcile_duration_seconds",
    "Duration of one reconcile pass, provider calls included.",
    ["provider"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
PROVIDER_REQUESTS = Counter(
    "cloudtriggers_provider_requests_total",
    "HTTP requests to providers, by provider, operation and status code ('error' when none came back).",
    ["provider", "operation", "code"],
    registry=REGISTRY,
)
ACCOUNT_REQUESTS = Counter(
    "cloudtriggers_account_requests_total",
    "HTTP requests to providers by account (endpoint host and a hash of the credentials, never "
    "the credentials) and status class: 2xx, 3xx, 4xx, 5xx, error (no answer), refused (not sent).",
    ["provider", "account", "code"],
    registry=REGISTRY,
)
PROVIDER_SECONDS = Histogram(
    "cloudtriggers_provider_request_duration_seconds",
    "Latency of provider HTTP requests.",
    ["provider", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
DRIFT_REPAIRS = Counter(
    "cloudtriggers_drift_repairs_total",
    "Provider objects repaired after they drifted: recreated, updated or replaced.",
    ["provider", "action"],
    registry=REGISTRY,
)
LIMITER_WAIT = Counter(
    "cloudtriggers_rate_limiter_wait_seconds_total",
    "Seconds provider calls waited in the per-account limiter (in-flight cap, pacing, provider throttling).",
    ["provider"],
    registry=REGISTRY,
)
PROVIDER_THROTTLED = Counter(
    "cloudtriggers_provider_throttled_total",
    "Throttled provider answers (429, Throttling.*, APIG.0308), by provider.",
    ["provider"],
    registry=REGISTRY,
)


ORPHANED = Counter(
    "cloudtriggers_orphaned_total",
    "Provider triggers left in place when their Trigger went "
    "(reason: policy, invalid_spec, delete_timeout, endpoint_not_allowed).",
    ["provider", "reason"],
    registry=REGISTRY,
)
PERMA_DIFF_STOPS = Counter(
    "cloudtriggers_perma_diff_stops_total",
    "Passes that found a difference which came back after every repair and left it (the "
    "perpetual-diff guard), by Trigger: it grows at each resync while the Trigger stays stopped.",
    ["namespace", "name", "provider"],
    registry=REGISTRY,
)
ROTATIONS = Counter(
    "cloudtriggers_rotations_total",
    "Token rotations, by provider and result (success, failed).",
    ["provider", "result"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "cloudtriggers_leader",
    "1 while this replica acts (holds the leader Lease, or runs without leader election), else 0.",
    registry=REGISTRY,
)


class _State(NamedTuple):
    provider: str
    ready: str
    namespace: str  # the interned copies the watch's indexes share (ids.py), not a new "ns/name"
    name: str
    last_used: float | None  # GitLab: when a pipeline last ran through it
    reason: str  # while not Ready: the Ready condition's reason ...
    since: float | None  # ... and since when
    token_created: float | None = None  # when the token in its Secret was made


class TriggerStates(Collector):
    """Triggers by provider and Ready state, the not-Ready ones by name (for alerts), and GitLab
    triggers' last use, from the watch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}  # uid -> state

    def update(self, uid: str, body: Any) -> None:
        status = body.get("status") or {}
        spec = body.get("spec") or {}
        provider = status.get("provider") or next(
            (p for p in ("gitlab", "ack", "swr") if p in spec), "unknown"
        )
        cond: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        ready = str(cond.get("status") or "Unknown")
        meta = body.get("metadata", {})
        last_used = parse_time((status.get("atProvider") or {}).get("lastUsed"))
        reason, since = "", None
        if ready != "True":
            # Not Ready since the condition's transition; a Trigger with no condition yet, since it was made.
            reason = str(cond.get("reason") or "Unknown")
            since = parse_time(cond.get("lastTransitionTime")) or parse_time(meta.get("creationTimestamp"))
        token = parse_time(status.get("tokenCreatedAt"))
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        state = _State(
            sys.intern(provider),
            sys.intern(ready),
            namespace,
            name,
            last_used,
            sys.intern(reason),
            since,
            token,
        )
        with self._lock:
            self._states[uid] = state

    def drop(self, uid: str) -> None:
        with self._lock:
            self._states.pop(uid, None)

    def clear(self) -> None:
        with self._lock:
            self._states.clear()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            states = list(self._states.values())
        counts = GaugeMetricFamily(
            "cloudtriggers_triggers", "Triggers by provider and Ready state.", labels=["provider", "ready"]
        )
        tally: dict[tuple[str, str], int] = {}
        for provider, ready, *_ in states:
            tally[(provider, ready)] = tally.get((provider, ready), 0) + 1
        for (provider, ready), n in sorted(tally.items()):
            counts.add_metric([provider, ready], n)
        yield counts
        not_ready = GaugeMetricFamily(
            "cloudtriggers_trigger_not_ready_since_timestamp_seconds",
            "When each Trigger that is not Ready stopped being Ready (or was created), with its reason.",
            labels=["namespace", "name", "provider", "reason"],
        )
        for st in states:
            if st.since is not None:
                not_ready.add_metric([st.namespace, st.name, st.provider, st.reason], st.since)
        yield not_ready
        age = GaugeMetricFamily(
            "cloudtriggers_token_age_seconds",
            "Age of the oldest token in an output Secret, by provider (rotation keeps it below "
            "spec.rotation.every).",
            labels=["provider"],
        )
        now = time.time()
        oldest: dict[str, float] = {}
        for st in states:
            if st.token_created is not None:
                oldest[st.provider] = max(oldest.get(st.provider, 0.0), now - st.token_created)
        for provider, seconds in sorted(oldest.items()):
            age.add_metric([provider], seconds)
        yield age
        used = GaugeMetricFamily(
            "cloudtriggers_gitlab_trigger_last_used_timestamp_seconds",
            "When GitLab last ran a pipeline through the trigger (as of the last observation).",
            labels=["trigger"],
        )
        for st in states:
            if st.provider == "gitlab" and st.last_used is not None:
                used.add_metric([f"{st.namespace}/{st.name}"], st.last_used)
        yield used


TRIGGERS = TriggerStates()
REGISTRY.register(TRIGGERS)


class SchedulerStates(Collector):
    """How far behind the scheduler is: passes due but not started, and the oldest one's wait."""

    def __init__(self) -> None:
        self.source: Callable[[], tuple[int, int, float]] | None = None  # queued, running, lag

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queued, running, lag = self.source() if self.source is not None else (0, 0, 0.0)
        yield GaugeMetricFamily(
            "cloudtriggers_reconcile_queue",
            "Reconcile passes that are due and wait for a worker.",
            value=queued,
        )
        yield GaugeMetricFamily(
            "cloudtriggers_reconciles_in_flight", "Reconcile passes running now.", value=running
        )
        yield GaugeMetricFamily(
            "cloudtriggers_reconcile_lag_seconds",
            "How long the most overdue pass has been due without starting (0: none waits).",
            value=lag,
        )


SCHEDULER = SchedulerStates()
REGISTRY.register(SCHEDULER)


class EventQueue(Collector):
    """Events recorded and not posted yet (event_poster.py): a backlog that only grows means the API
    server refuses or cannot keep up with them."""

    def __init__(self) -> None:
        self.source: Callable[[], int] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "cloudtriggers_events_queued",
            "Kubernetes Events recorded and waiting to be posted.",
            value=self.source() if self.source is not None else 0,
        )


EVENTS_QUEUED = EventQueue()
REGISTRY.register(EVENTS_QUEUED)


class CircuitStates(Collector):
    """Open credential circuits (accounts whose calls are paused after authentication failures)."""

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, int]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "cloudtriggers_credentials_circuits_open",
            "Accounts (provider, endpoint, credentials) whose circuit is open after repeated "
            "authentication failures: their Triggers say CredentialsInvalid without calling the provider.",
            labels=["provider"],
        )
        counts = self.source() if self.source is not None else {}
        for provider in ("ack", "gitlab", "swr"):
            gauge.add_metric([provider], counts.get(provider, 0))
        yield gauge


CIRCUITS = CircuitStates()
REGISTRY.register(CIRCUITS)


class Paces(Collector):
    """The current pace of provider accounts (providers/pacing.py), slowest account per provider."""

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, float]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "cloudtriggers_provider_pace_requests_per_second",
            "Requests per second the slowest account of each provider may send now (adaptive pacing: "
            "starts at the provider's documented rate, rises while accepted, drops on a throttle).",
            labels=["provider"],
        )
        paces = self.source() if self.source is not None else {}
        for provider, pace in sorted(paces.items()):
            gauge.add_metric([provider], pace)
        yield gauge


PACES = Paces()
REGISTRY.register(PACES)


# SWR paths carry organization, repository and trigger names: one operation each, not one per name.
_SWR = re.compile(r"/v2/manage/namespaces/[^/]+/repos/[^/]+/triggers(/[^/]+)?/?$")
_SWR_OPS = {
    ("POST", False): "CreateTrigger",
    ("GET", False): "ListTriggersDetails",
    ("GET", True): "ShowTrigger",
    ("PATCH", True): "UpdateTrigger",
    ("DELETE", True): "DeleteTrigger",
}
_ID = re.compile(r"/(\d+|[0-9a-f]{16,}|[^/]*%2F[^/]*)(?=/|$)", re.I)


def operation_of(method: str, url: str, headers: Any) -> str:
    """A low-cardinality operation name: ACK's x-acs-action, else method and path with ids collapsed."""
    action = headers.get("x-acs-action") if headers is not None else None
    if action:
        return str(action)
    raw = urlsplit(url).path
    swr = _SWR.search(raw)
    if swr:
        return _SWR_OPS.get((method.upper(), swr.group(1) is not None), f"{method.upper()} swr-triggers")
    path = _ID.sub("/{id}", raw)
    return f"{method} {path}"


def render() -> bytes:
    return generate_latest(REGISTRY)


class Timer:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def seconds(self) -> float:
        return time.monotonic() - self.start
