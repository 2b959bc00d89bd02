"""KubeClient against the emulated API: credentials Secrets read once for many Triggers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes.client import CoreV1Api

from cloudtriggers.kube import SECRET_FINALIZER, KubeClient, SharedReads
from cloudtriggers.sandbox.kube import KubeServer, kube_client


@pytest.fixture()
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        yield server


def gets(server: KubeServer, name: str) -> int:
    return server.emulator.requests_by_agent.get(name, 0)


def client(server: KubeServer, fresh: float, agent: str) -> KubeClient:
    c = KubeClient(kube_client(server.url), secret_reads=fresh)
    c.user_agent = agent
    return c


def test_one_read_serves_every_reader_while_fresh_and_a_change_is_seen_after(kube: KubeServer) -> None:
    core = CoreV1Api(kube_client(kube.url))
    core.create_namespaced_secret("default", {"metadata": {"name": "gl"}, "stringData": {"token": "one"}})
    shared = client(kube, 0.5, "shared")
    results = []

    def read() -> None:
        got = shared.read_credentials("default", "gl")
        results.append(got.data["token"] if got else None)

    threads = [threading.Thread(target=read) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["one"] * 20
    assert gets(kube, "shared") == 1  # concurrent readers waited for the one GET in flight
    core.replace_namespaced_secret(
        "gl", "default", {"metadata": {"name": "gl"}, "stringData": {"token": "two"}}
    )
    assert (shared.read_credentials("default", "gl") or None).data["token"] == "one"  # type: ignore[union-attr]
    time.sleep(0.6)
    assert (shared.read_credentials("default", "gl") or None).data["token"] == "two"  # type: ignore[union-attr]
    # No sharing: every read is a GET.
    plain = client(kube, 0, "plain")
    for _ in range(3):
        plain.read_credentials("default", "gl")
    assert gets(kube, "plain") == 3


def test_our_own_hold_is_never_hidden_by_a_shared_read(kube: KubeServer) -> None:
    core = CoreV1Api(kube_client(kube.url))
    core.create_namespaced_secret("default", {"metadata": {"name": "gl"}, "stringData": {"token": "one"}})
    c = client(kube, 60, "c")
    before = c.read_credentials("default", "gl")
    assert before is not None and not before.held
    assert c.hold_secret("default", "gl", before)
    after = c.read_credentials("default", "gl")
    assert after is not None and after.held and SECRET_FINALIZER in after.finalizers
    assert c.release_secret("default", "gl")
    released = c.read_credentials("default", "gl")
    assert released is not None and not released.held


def test_a_missing_secret_is_shared_too() -> None:
    calls = []
    reads = SharedReads(10)
    for _ in range(5):
        assert reads.get(("ns", "x"), lambda: calls.append(1)) is None  # type: ignore[func-returns-value]
    assert len(calls) == 1
    reads.forget(("ns", "x"))
    reads.get(("ns", "x"), lambda: calls.append(1))  # type: ignore[func-returns-value]
    assert len(calls) == 2


class _Pool:
    """Records the Authorization header of every call; answers `status`."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.status = 200

    def request(self, method: str, url: str, headers: dict[str, str], **_: object) -> object:
        self.sent.append(headers.get("Authorization", ""))
        return type("R", (), {"status": self.status, "data": b"{}"})()


def test_the_refreshed_token_is_reused_briefly_then_reread(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client as k8s

    from cloudtriggers import kube as kube_module

    config = k8s.Configuration(host="https://k8s.example")
    hooks = []

    def refresh(c: k8s.Configuration) -> None:
        hooks.append(1)
        c.api_key["BearerToken"] = f"Bearer t{len(hooks)}"

    config.api_key = {"BearerToken": "Bearer t0"}
    config.refresh_api_key_hook = refresh
    c = KubeClient(k8s.ApiClient(config))
    pool = _Pool()
    c.pool = pool  # type: ignore[assignment]
    now = [1000.0]
    monkeypatch.setattr(kube_module.time, "monotonic", lambda: now[0])
    for _ in range(5):
        c.get_trigger("ns", "a")
    assert pool.sent == ["Bearer t1"] * 5 and len(hooks) == 1
    now[0] += kube_module.AUTH_REUSE + 0.1
    c.get_trigger("ns", "a")
    assert pool.sent[-1] == "Bearer t2"
    pool.status = 401
    with pytest.raises(kube_module.KubeApiError):
        c.get_trigger("ns", "a")
    pool.status = 200
    c.get_trigger("ns", "a")  # within AUTH_REUSE, yet the 401 made it ask the hook again
    assert pool.sent[-1] == "Bearer t3"
