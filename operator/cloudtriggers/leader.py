"""Leader election on a coordination.k8s.io/v1 Lease, so that two replicas never both act.

kopf's peering only pauses operators that see each other; it is not leader election. This follows
client-go's leaderelection: the holder renews the Lease every duration/3; a candidate takes it over
only after it has seen the same record, unchanged, for a whole lease duration on its own clock (so
clock skew between nodes does not matter); every write is guarded by resourceVersion. A leader that
cannot renew within the duration stops acting before anyone else may start.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import urllib3

from .kube import KubeApiError, KubeClient
from .metrics import LEADER

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _micro(t: datetime) -> str:
    """A MicroTime as the API server decodes it (RFC3339Micro: exactly six digits of fraction)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """The Lease is read and written as plain JSON (kube.KubeClient), not through the client's typed
    models: those parse its MicroTimes into datetimes and send them back as `isoformat()`, which has
    no fraction at a whole second, and a real API server refuses that (`cannot parse "+00:00" as
    ".000000"`)."""

    def __init__(
        self,
        api_client: Any,
        name: str,
        namespace: str,
        identity: str = "",
        duration: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = KubeClient(api_client, pool=1)
        self.name = name
        self.namespace = namespace
        self.identity = identity or socket.gethostname()
        self.duration = duration
        self.clock = clock
        self._observed: tuple[Any, ...] | None = None  # (holder, renewTime, transitions) last seen
        self._observed_at = 0.0

    @property
    def retry_period(self) -> float:
        """How often the holder renews."""
        return max(self.duration / 3, 0.2)

    @property
    def poll_period(self) -> float:
        """How often a candidate looks: often, so that it notices a dead holder soon after expiry."""
        return max(self.duration / 10, 0.1)

    def _path(self, name: str = "") -> str:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{quote(self.namespace)}/leases"
        return f"{path}/{quote(name)}" if name else path

    def try_acquire_or_renew(self) -> bool:
        """One attempt. True when this replica holds the Lease afterwards; False on any failure, the
        API server unreachable included (the renewal loop then counts the time without a renewal)."""
        try:
            return self._attempt(_now())
        except KubeApiError as e:
            log.warning("leader election: lease %s/%s: %s", self.namespace, self.name, e.status)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            log.warning("leader election: lease %s/%s: %s", self.namespace, self.name, type(e).__name__)
        return False

    def _attempt(self, now: datetime) -> bool:
        lease = self.kube.request_json("GET", self._path(self.name))
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, acquire=True, transitions=0),
            }
            try:
                self.kube.request_json("POST", self._path(), body)
            except KubeApiError as e:
                if e.status != 409:
                    raise
                return False  # someone else created it first
            log.info("leader election: acquired lease %s/%s as %s", self.namespace, self.name, self.identity)
            return True

        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        transitions = int(spec.get("leaseTransitions") or 0)
        record = (holder, spec.get("renewTime"), transitions)
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        if holder and holder != self.identity:
            duration = spec.get("leaseDurationSeconds") or self.duration
            if self.clock() - self._observed_at < duration:
                return False  # held, and renewed within its duration as far as we have seen
            acquire, transitions = True, transitions + 1
        else:
            acquire = not holder
        lease["spec"] = self._spec(
            now, acquire=acquire, transitions=transitions, keep=None if acquire else spec
        )
        try:
            # A replace carries the resourceVersion read: a write in between makes it a 409.
            if self.kube.request_json("PUT", self._path(self.name), lease) is None:
                return False  # deleted in between
        except KubeApiError as e:
            if e.status != 409:
                raise
            return False
        if acquire:
            log.info("leader election: acquired lease %s/%s as %s", self.namespace, self.name, self.identity)
        return True

    def _spec(
        self, now: datetime, *, acquire: bool, transitions: int, keep: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        # Kept as the server wrote it: a MicroTime it marshalled itself.
        acquired = _micro(now) if acquire or keep is None else keep.get("acquireTime")
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "acquireTime": acquired,
            "renewTime": _micro(now),
            "leaseTransitions": transitions,
        }

    def release(self) -> None:
        """Give the Lease up on a clean shutdown so the standby need not wait for it to expire."""
        try:
            lease = self.kube.request_json("GET", self._path(self.name))
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.identity:
                return
            lease["spec"] = {**spec, "holderIdentity": None, "renewTime": _micro(_now())}
            self.kube.request_json("PUT", self._path(self.name), lease)
        except (KubeApiError, urllib3.exceptions.HTTPError, OSError) as e:
            log.warning("leader election: could not release lease %s/%s: %s", self.namespace, self.name, e)


def lead(
    elector: LeaseElector, run: Callable[[threading.Event], None], stop: threading.Event | None = None
) -> bool:
    """Wait for the Lease, then `run(flag)` while a thread keeps renewing it.

    If the Lease cannot be renewed within its duration, `flag` is set so that `run` returns before any
    other replica may take over. Returns True if leadership was lost (the caller exits non-zero and
    comes back as a standby), False after a normal stop.
    """
    stop = stop or threading.Event()
    log.info(
        "leader election: waiting for lease %s/%s as %s", elector.namespace, elector.name, elector.identity
    )
    while not elector.try_acquire_or_renew():
        if stop.wait(elector.poll_period):
            return False
    LEADER.set(1)
    flag = threading.Event()
    lost = threading.Event()

    def renew() -> None:
        last_ok = time.monotonic()
        while not flag.wait(elector.retry_period):
            if elector.try_acquire_or_renew():
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok >= elector.duration * 2 / 3:
                # Stop well before the others' clocks let them take over.
                log.error("leader election: lost lease %s/%s; stopping", elector.namespace, elector.name)
                lost.set()
                flag.set()

    def forward_stop() -> None:
        stop.wait()
        flag.set()

    threading.Thread(target=renew, name="lease-renew", daemon=True).start()
    threading.Thread(target=forward_stop, name="lease-stop", daemon=True).start()
    try:
        run(flag)
    finally:
        LEADER.set(0)
        flag.set()
        if not lost.is_set():
            elector.release()
    return lost.is_set()
