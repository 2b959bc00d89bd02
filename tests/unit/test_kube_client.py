"""KubeClient against the emulated API: credentials Secrets read once for many Triggers."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from kubernetes.client import CoreV1Api, CustomObjectsApi, V1Secret

from cloudtriggers import kube as kube_module
from cloudtriggers.kube import SECRET_FINALIZER, KubeClient, SharedReads
from cloudtriggers.kube_http import Reply
from cloudtriggers.models import token_sha256
from cloudtriggers.sandbox.kube import ClusterEmulator, KubeServer, kube_client, reject_write, throttle


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
    core.create_namespaced_secret(
        "default", V1Secret.model_validate({"metadata": {"name": "gl"}, "stringData": {"token": "one"}})
    )
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
        "gl", "default", V1Secret.model_validate({"metadata": {"name": "gl"}, "stringData": {"token": "two"}})
    )
    held = shared.read_credentials("default", "gl")
    assert held is not None and held.data["token"] == "one"
    time.sleep(0.6)
    changed = shared.read_credentials("default", "gl")
    assert changed is not None and changed.data["token"] == "two"
    # No sharing: every read is a GET.
    plain = client(kube, 0, "plain")
    for _ in range(3):
        plain.read_credentials("default", "gl")
    assert gets(kube, "plain") == 3


def test_our_own_hold_is_never_hidden_by_a_shared_read(kube: KubeServer) -> None:
    core = CoreV1Api(kube_client(kube.url))
    core.create_namespaced_secret(
        "default", V1Secret.model_validate({"metadata": {"name": "gl"}, "stringData": {"token": "one"}})
    )
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
        assert reads.get(("ns", "x"), lambda: calls.append(1)) is None
    assert len(calls) == 1
    reads.forget(("ns", "x"))
    reads.get(("ns", "x"), lambda: calls.append(1))
    assert len(calls) == 2


class _Connections:
    """Records the Authorization header of every call; answers `status`."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.status = 200

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Reply:
        self.sent.append(headers.get("Authorization", ""))
        return Reply(self.status, b"{}")


def test_the_refreshed_token_is_reused_briefly_then_reread(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes import client as k8s

    from cloudtriggers import kube as kube_module

    config = k8s.Configuration(host="https://k8s.example")
    hooks = []

    def refresh(c: k8s.Configuration) -> None:
        hooks.append(1)
        c.api_key["BearerToken"] = f"Bearer t{len(hooks)}"

    config.api_key = {"BearerToken": "Bearer t0"}
    cast(Any, config).refresh_api_key_hook = refresh  # the client declares the hook as `= None`
    c = KubeClient(k8s.ApiClient(config))
    pool = _Connections()
    c.connections = pool  # type: ignore[assignment]
    now = [1000.0]
    monkeypatch.setattr("cloudtriggers.kube.time.monotonic", lambda: now[0])
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


def _owner(kube: KubeServer, name: str) -> dict[str, Any]:
    """A stored Trigger: the emulator's garbage collector removes Secrets whose owner is absent."""
    body = {
        "apiVersion": "cloudtriggers.io/v1alpha1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": {"gitlab": {"url": "https://gitlab.example.com", "project": "group/web"}},
    }
    api = CustomObjectsApi(kube_client(kube.url))
    created = api.create_namespaced_custom_object("cloudtriggers.io", "v1alpha1", "default", "triggers", body)
    return cast(dict[str, Any], created)


def _until(what: str, check: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _holds(c: KubeClient, name: str, outputs: dict[str, str]) -> bool:
    got = c.read_output("default", name)
    return got is not None and got.holds(outputs)


def test_output_secrets_are_read_from_the_watch_and_only_what_it_cannot_say_is_read(kube: KubeServer) -> None:
    """A drift check reads no output Secret the watch shows: edits and deletions by others arrive
    through it; a Secret that leaves the selection (our label taken off) is read again."""
    core = CoreV1Api(kube_client(kube.url))
    c = client(kube, 0, "ops")
    outputs = c.watch_outputs([])
    outputs.start()
    try:
        assert outputs.synced.wait(5)
        owner = _owner(kube, "web")
        c.write_output_secret(owner, "web-trigger", {"token": "t1"})
        before = gets(kube, "ops")  # the POST itself
        assert _holds(c, "web-trigger", {"token": "t1"})
        held = outputs.get("default", "web-trigger")
        assert held is not None and held.token_sha == token_sha256("t1") and held.holds({"token": "t1"})
        assert not held.holds({"token": "t2"}) and not held.holds({"token": "t1", "url": "u"})
        assert "t1" not in repr(held)  # the view keeps digests, not the token
        core.patch_namespaced_secret("web-trigger", "default", {"stringData": {"token": "t2"}})
        _until("the edit", lambda: _holds(c, "web-trigger", {"token": "t2"}))
        kube.disturb_watches()  # a watch that ends is resumed from its last version
        core.patch_namespaced_secret("web-trigger", "default", {"stringData": {"token": "t3"}})
        _until("the edit after", lambda: _holds(c, "web-trigger", {"token": "t3"}))
        assert gets(kube, "ops") == before + 1  # the resumed watch; no read

        core.patch_namespaced_secret("web-trigger", "default", {"metadata": {"labels": None}})
        _until("the Secret leaves the view", lambda: outputs.get("default", "web-trigger") is None)
        assert _holds(c, "web-trigger", {"token": "t3"})
        assert gets(kube, "ops") == before + 2  # read, since the view cannot say

        c.write_output_secret(owner, "other", {"token": "o"})
        core.delete_namespaced_secret("other", "default")
        _until("the deletion", lambda: outputs.get("default", "other") is None)
        assert c.read_output("default", "other") is None
    finally:
        outputs.stop()
    assert c.outputs is not None and c.outputs.get("default", "web-trigger") is None  # stopped: reads again


def test_a_namespaced_view_watches_its_namespaces_only(kube: KubeServer) -> None:
    c = client(kube, 0, "ops")
    outputs = c.watch_outputs(["default", "apps-*"])
    assert outputs.scopes == ["default"]  # a pattern cannot be listed: its Secrets are read
    outputs.start()
    try:
        assert outputs.synced.wait(5)
        c.write_output_secret(_owner(kube, "web"), "web-trigger", {"token": "t1"})
        held = outputs.get("default", "web-trigger")
        assert held is not None and held.holds({"token": "t1"})
        assert outputs.get("apps-1", "web-trigger") is None
    finally:
        outputs.stop()


@contextlib.contextmanager
def _view(emulator: ClusterEmulator) -> Iterator[tuple[KubeServer, CoreV1Api, KubeClient]]:
    """A client whose output-Secrets view is synced and holds web-trigger (token t1)."""
    with KubeServer(emulator) as kube:
        core = CoreV1Api(kube_client(kube.url))
        c = client(kube, 0, "ops")
        outputs = c.watch_outputs([])
        outputs.start()
        try:
            assert outputs.synced.wait(5)
            c.write_output_secret(_owner(kube, "web"), "web-trigger", {"token": "t1"})
            yield kube, core, c
        finally:
            outputs.stop()


def test_a_bookmark_carries_the_view_past_writes_it_does_not_watch() -> None:
    """The API server bookmarks a watch that allows it about once a minute (cache_watcher.go), with
    the version the watcher is up to date through. Writes the view does not select (other Secrets)
    move the event history on; resumed from the bookmark's version, the watch needs none of them,
    where a watch resumed from its last event's version would get 410 and list again."""
    with _view(ClusterEmulator(event_log_limit=3, bookmark_interval=0.2)) as (kube, core, c):
        for n in range(6):  # not ours: no label, so not in the view's selection
            core.create_namespaced_secret(
                "default", V1Secret.model_validate({"metadata": {"name": f"other-{n}"}})
            )
        time.sleep(0.5)  # a bookmark or two
        before = gets(kube, "ops")
        kube.disturb_watches()
        core.patch_namespaced_secret("web-trigger", "default", {"stringData": {"token": "t2"}})
        _until("the edit", lambda: _holds(c, "web-trigger", {"token": "t2"}))
        assert gets(kube, "ops") == before + 1  # resumed, not listed again


def test_a_view_whose_version_is_compacted_away_lists_again() -> None:
    """410 Gone on resumption (the API server's event history no longer reaches back): list again."""
    with _view(ClusterEmulator(event_log_limit=2)) as (kube, core, c):
        kube.disturb_watches(silence=True)  # open, but it hears nothing of what follows
        for token in ("t2", "t3", "t4"):
            core.patch_namespaced_secret("web-trigger", "default", {"stringData": {"token": token}})
        held = c.outputs.get("default", "web-trigger") if c.outputs else None
        assert held is not None and held.holds({"token": "t1"})  # nothing heard yet
        kube.disturb_watches()
        _until("the relist", lambda: _holds(c, "web-trigger", {"token": "t4"}))


# -- an API server that turns requests away (priority and fairness, max-inflight, shutdown) ----------


def test_a_request_turned_away_with_retry_after_is_sent_again_after_the_wait(
    kube: KubeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API server's filters answer 429 with Retry-After before any handler runs (nothing is
    written), and client-go's rest client retries any verb then. A create turned away twice is made
    once, after the waits asked."""
    waits: list[float] = []
    monkeypatch.setattr("cloudtriggers.kube.time.sleep", waits.append)
    turned_away = [3, 1]

    def before_write(request: Any) -> None:
        if turned_away:
            throttle(turned_away.pop(0))

    c = client(kube, 0, "ops")
    owner = _owner(kube, "web")
    kube.emulator.before_write = before_write
    c.write_output_secret(owner, "web-trigger", {"token": "t1"})
    assert waits == [3.0, 1.0]
    assert [s["metadata"]["name"] for s in kube.list("v1/secrets", "default")].count("web-trigger") == 1


def test_retries_stop_after_client_gos_ten_and_a_refusal_without_retry_after_is_not_retried(
    kube: KubeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    monkeypatch.setattr("cloudtriggers.kube.time.sleep", waits.append)
    seen: list[str] = []

    def always(request: Any) -> None:
        seen.append(str(request.method))
        throttle(1)

    c = client(kube, 0, "ops")
    owner = _owner(kube, "web")
    kube.emulator.before_write = always
    with pytest.raises(kube_module.KubeApiError) as refused:
        c.write_output_secret(owner, "web-trigger", {"token": "t1"})
    assert refused.value.status == 429 and "Too many requests" in str(refused.value)
    assert len(seen) == kube_module.RETRIES + 1 and waits == [1.0] * kube_module.RETRIES

    seen.clear()
    waits.clear()

    def unavailable(request: Any) -> None:
        seen.append(str(request.method))
        reject_write(503)  # a Status without Retry-After: for the caller's own backoff

    kube.emulator.before_write = unavailable
    with pytest.raises(kube_module.KubeApiError) as refused:
        c.write_output_secret(owner, "web-trigger", {"token": "t1"})
    assert refused.value.status == 503 and len(seen) == 1 and waits == []


@pytest.mark.parametrize(
    ("header", "wait"),
    [
        ("1", 1.0),
        ("0", 0.0),
        ("5", 5.0),
        ("3600", kube_module.RETRY_WAIT_CAP),  # a worker is not held for an hour
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),  # client-go reads whole seconds only
        ("1.5", None),
        ("-1", None),
        (" 2", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_client_go_reads_it(header: str | None, wait: float | None) -> None:
    for status in (429, 500, 503, 599):
        assert kube_module.retry_wait(status, header) == wait
    for status in (200, 201, 404, 409, 422):  # only a 429 or a 5xx is retried, whatever it says
        assert kube_module.retry_wait(status, header) is None
