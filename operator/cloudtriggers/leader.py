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

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from .metrics import LEADER

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class LeaseElector:
    def __init__(
        self,
        api_client: Any,
        name: str,
        namespace: str,
        identity: str = "",
        duration: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = k8s.CoordinationV1Api(api_client)
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

    def try_acquire_or_renew(self) -> bool:
        """One attempt. True when this replica holds the Lease afterwards."""
        now = _now()
        try:
            # Typed as Any: the client's models make every field Optional, and the fields are checked here.
            lease: Any = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                log.warning(
                    "leader election: cannot read lease %s/%s: %s", self.namespace, self.name, e.status
                )
                return False
            body = {
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, acquire=True, transitions=0),
            }
            try:
                self.api.create_namespaced_lease(self.namespace, body)  # type: ignore[arg-type]
            except ApiException:
                return False  # someone else created it first
            log.info("leader election: acquired lease %s/%s as %s", self.namespace, self.name, self.identity)
            return True

        spec = lease.spec
        record = (spec.holder_identity, spec.renew_time, spec.lease_transitions)
        if record != self._observed:
            self._observed, self._observed_at = record, self.clock()
        holder = spec.holder_identity
        transitions = spec.lease_transitions or 0
        if holder and holder != self.identity:
            duration = spec.lease_duration_seconds or self.duration
            if self.clock() - self._observed_at < duration:
                return False  # held, and renewed within its duration as far as we have seen
            acquire, transitions = True, transitions + 1
        else:
            acquire = not holder
        lease.spec = self._spec(now, acquire=acquire, transitions=transitions, keep=None if acquire else spec)
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)  # guarded by resourceVersion
        except ApiException as e:
            if e.status != 409:
                log.warning("leader election: cannot update lease: %s", e.status)
            return False
        if acquire:
            log.info("leader election: acquired lease %s/%s as %s", self.namespace, self.name, self.identity)
        return True

    def _spec(self, now: datetime, *, acquire: bool, transitions: int, keep: Any = None) -> dict[str, Any]:
        acquired = now if acquire or keep is None else keep.acquire_time
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "acquireTime": acquired.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if acquired else None,
            "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "leaseTransitions": transitions,
        }

    def release(self) -> None:
        """Give the Lease up on a clean shutdown so the standby need not wait for it to expire."""
        try:
            lease: Any = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.renew_time = _now()
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException:
            pass


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
