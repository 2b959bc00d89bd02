"""cloudtriggers.leader against the emulated API: what a real API server makes of its Lease writes,
and a leader that loses the API server stops acting instead of holding on without a Lease."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from cloudtriggers import leader
from cloudtriggers.leader import LeaseElector, lead
from cloudtriggers.sandbox.kube import KubeServer, kube_client

LEASES = "coordination.k8s.io/v1/leases"


@pytest.fixture()
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        yield server


def test_lease_times_at_a_whole_second_are_micro_times_a_real_server_decodes(
    kube: KubeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's typed models send a MicroTime as isoformat(), which has no fraction at a whole
    second; a real API server answers 400 (tests/unit/test_go_times.py). The elector writes plain
    JSON: acquiring, renewing and releasing at a whole second all land."""
    whole = datetime(2026, 12, 6, 23, 10, 0, tzinfo=UTC)
    monkeypatch.setattr(leader, "_now", lambda: whole)
    elector = LeaseElector(kube_client(kube.url), "lease", "default", "a", duration=10)
    assert elector.try_acquire_or_renew()
    assert elector.try_acquire_or_renew()  # a renewal keeps the acquireTime the server wrote
    stored = kube.get(LEASES, "default", "lease")
    assert stored is not None and stored["spec"]["holderIdentity"] == "a"
    elector.release()
    stored = kube.get(LEASES, "default", "lease")
    assert stored is not None and stored["spec"].get("holderIdentity") is None
    assert stored["spec"]["renewTime"] == stored["spec"]["acquireTime"] == "2026-12-06T23:10:00.000000Z"


def test_a_leader_that_cannot_reach_the_api_server_stops_acting(kube: KubeServer) -> None:
    """A failed request is a failed renewal, not an exception: the renewal thread used to die on the
    first unreachable API server, so the leader went on acting while its Lease expired and a standby
    took over."""
    elector = LeaseElector(kube_client(kube.url), "lease", "default", "a", duration=1.5)
    acting = threading.Event()
    outcome: list[bool] = []

    def run(flag: threading.Event) -> None:
        acting.set()
        flag.wait(30)

    thread = threading.Thread(target=lambda: outcome.append(lead(elector, run)), daemon=True)
    thread.start()
    assert acting.wait(10)
    kube.stop()
    started = time.monotonic()
    thread.join(10)
    assert outcome == [True], "the leader did not give up after it lost the API server"
    assert time.monotonic() - started < elector.duration + elector.retry_period + 1.0
    assert not elector.try_acquire_or_renew()  # and an attempt without a server is a plain False
