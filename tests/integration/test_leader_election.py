"""Two replicas with --leader-election: one acts, the other waits, and takes over when the first dies.

The scenario runs `cloudtriggers run` twice, as a Deployment with two replicas does, against the API
server of a kubeconfig: here the emulated one; tests/e2e runs it against a real one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from kubernetes import client as k8s

from cloudtriggers.leader import LeaseElector
from cloudtriggers.sandbox.gitlab import MAINTAINER
from cloudtriggers.sandbox.kube import kube_client
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for
from cloudtriggers.settings import Settings
from integration.test_gitlab_operator import World

DURATION = 3.0
LEASE = "cloudtriggers"


@pytest.fixture
def world() -> Iterator[World]:
    with prepared(World(Settings())) as w:
        yield w


@contextlib.contextmanager
def prepared(w: World) -> Iterator[World]:
    """The world started with the GitLab user, project and credentials, and no operator: the
    scenario starts its replicas (tests/e2e passes a world on a real cluster)."""
    w.start()
    try:
        w.user = w.gitlab.add_user("bot")
        w.pid = w.gitlab.add_project("group/web", {"bot": MAINTAINER})
        w.gitlab_tokens = []
        w.apply_secret(w.ns, "gl", {"token": w.user.token})
        yield w
    finally:
        w.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _leader_gauge(port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return float(next(ln for ln in text.splitlines() if ln.startswith("cloudtriggers_leader ")).split()[1])


def _replica(
    kubeconfig: Path, namespace: str, identity: str, log: Path, port: int = 0
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "CLOUDTRIGGERS_NAMESPACES": namespace,  # confined to the scenario's namespace, its Lease there
        "CLOUDTRIGGERS_IDENTITY": identity,
        "CLOUDTRIGGERS_HTTP_PORT": str(port),
        "CLOUDTRIGGERS_ALLOWED_ENDPOINTS": "http://127.0.0.1",  # the sandboxes
    }
    args = [
        "run",
        "--leader-election",
        "--lease-duration",
        f"{DURATION:.0f}s",
        "--lease-namespace",
        namespace,
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "cloudtriggers.cli", *args, "--log-level", "info"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _holder(world: World) -> str | None:
    try:
        lease = k8s.CoordinationV1Api(world.api).read_namespaced_lease(LEASE, world.ns)
    except k8s.ApiException as e:
        if e.status == 404:
            return None
        raise
    return lease.spec.holder_identity if lease.spec is not None else None


def _available(world: World, name: str) -> bool:
    return condition(world.trigger(world.ns, name)).get("reason") == "Available"


def standby_takes_over_when_the_leader_dies(world: World, kubeconfig: Path, tmp_path: Path) -> None:
    ns = world.ns
    a = _replica(kubeconfig, ns, "replica-a", tmp_path / "a.log")
    b: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: _holder(world) == "replica-a", timeout=30, what="replica-a to lead")
        b_port = _free_port()
        b = _replica(kubeconfig, ns, "replica-b", tmp_path / "b.log", b_port)
        world.create_trigger(world.trigger_obj("one"))
        wait_for(lambda: _available(world, "one"), timeout=30, what="Trigger one to be Available")
        time.sleep(DURATION)  # the standby has been watching the Lease for a whole duration
        assert _holder(world) == "replica-a"
        standby_log = (tmp_path / "b.log").read_text()
        assert "waiting for lease" in standby_log and f"{ns}/one" not in standby_log
        # The standby answers its probes (or the kubelet would kill it) and says it is not leading.
        assert requests.get(f"http://127.0.0.1:{b_port}/healthz", timeout=5).status_code == 200
        assert requests.get(f"http://127.0.0.1:{b_port}/readyz", timeout=5).status_code == 200
        assert _leader_gauge(b_port) == 0

        a.send_signal(signal.SIGKILL)
        a.wait(10)
        killed = time.monotonic()
        wait_for(lambda: _holder(world) == "replica-b", timeout=4 * DURATION, what="replica-b to take over")
        takeover = time.monotonic() - killed
        print(f"takeover after the leader died: {takeover:.2f} s (lease duration {DURATION:.0f} s)")
        assert takeover <= 2 * DURATION
        wait_for(lambda: _leader_gauge(b_port) == 1, timeout=5, what="the leader gauge")

        world.create_trigger(world.trigger_obj("two"))
        wait_for(lambda: _available(world, "two"), timeout=30, what="Trigger two to be Available")
        assert len(world.gitlab.triggers(world.pid)) == 2
        assert len(world.gitlab.calls("POST", "/triggers")) == 2  # nothing was done twice

        # The new leader finalizes too: both Triggers go, and their provider triggers with them.
        for name in ("one", "two"):
            world.delete_trigger(ns, name)
        wait_for(
            lambda: world.trigger(ns, "one") is None and world.trigger(ns, "two") is None,
            timeout=30,
            what="the Triggers to be deleted",
        )
        assert world.gitlab.triggers(world.pid) == []

        b.send_signal(signal.SIGTERM)  # a clean stop gives the Lease up at once
        assert b.wait(20) == 0
        assert _holder(world) is None
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_standby_takes_over_when_the_leader_dies(world: World, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    world.kube.write_kubeconfig(kubeconfig)
    standby_takes_over_when_the_leader_dies(world, kubeconfig, tmp_path)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lease_is_taken_over_only_after_a_full_unrenewed_duration(world: LocalWorld) -> None:
    clock = _Clock()
    api = kube_client(world.kube.url)
    a = LeaseElector(api, "lease", "default", "a", duration=10, clock=clock)
    b = LeaseElector(api, "lease", "default", "b", duration=10, clock=clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.now = 9
    assert a.try_acquire_or_renew()  # renewed: b's observation restarts
    clock.now = 15
    assert not b.try_acquire_or_renew()
    clock.now = 26  # a has not renewed for more than a duration on b's clock
    assert b.try_acquire_or_renew()
    lease = k8s.CoordinationV1Api(api).read_namespaced_lease("lease", "default")
    assert lease.spec is not None
    assert lease.spec.holder_identity == "b" and lease.spec.lease_transitions == 1
    assert not a.try_acquire_or_renew()  # the old leader now sees another holder
