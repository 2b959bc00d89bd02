"""Two replicas with --leader-election: one acts, the other waits, and takes over when the first dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client as k8s

from cloudtriggers.leader import LeaseElector
from cloudtriggers.sandbox.gitlab import MAINTAINER
from cloudtriggers.sandbox.kube import kube_client
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for

DURATION = 3.0


@pytest.fixture
def world() -> Iterator[LocalWorld]:
    with LocalWorld() as w:
        yield w


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _leader_gauge(port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return float(next(ln for ln in text.splitlines() if ln.startswith("cloudtriggers_leader ")).split()[1])


def _replica(kubeconfig: Path, identity: str, log: Path, port: int = 0) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
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
        "default",
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "cloudtriggers.cli", *args, "--log-level", "info"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _holder(world: LocalWorld) -> Any:
    lease = world.kube.get("coordination.k8s.io/v1/leases", "default", "cloudtriggers")
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


def _trigger(world: LocalWorld, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "cloudtriggers.io/v1alpha1",
        "kind": "Trigger",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {
            "gitlab": {"url": world.gitlab.url, "project": "group/web"},
            "credentialsSecretRef": {"name": "gl"},
        },
    }


def test_standby_takes_over_when_the_leader_dies(world: LocalWorld, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    world.kube.write_kubeconfig(kubeconfig)
    user = world.gitlab.add_user("bot")
    pid = world.gitlab.add_project("group/web", {"bot": MAINTAINER})
    world.apply_secret("apps", "gl", {"token": user.token})
    a = _replica(kubeconfig, "replica-a", tmp_path / "a.log")
    b: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: _holder(world) == "replica-a", timeout=20, what="replica-a to lead")
        b_port = _free_port()
        b = _replica(kubeconfig, "replica-b", tmp_path / "b.log", b_port)
        world.create_trigger(_trigger(world, "one"))
        wait_for(lambda: condition(world.trigger("apps", "one")).get("reason") == "Available", timeout=20)
        time.sleep(DURATION)  # the standby has been watching the Lease for a whole duration
        assert _holder(world) == "replica-a"
        standby_log = (tmp_path / "b.log").read_text()
        assert "waiting for lease" in standby_log and "apps/one" not in standby_log
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

        world.create_trigger(_trigger(world, "two"))
        wait_for(lambda: condition(world.trigger("apps", "two")).get("reason") == "Available", timeout=20)
        assert len(world.gitlab.triggers(pid)) == 2
        assert len(world.gitlab.calls("POST", "/triggers")) == 2  # nothing was done twice

        b.send_signal(signal.SIGTERM)  # a clean stop gives the Lease up at once
        assert b.wait(20) == 0
        assert _holder(world) is None
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


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
