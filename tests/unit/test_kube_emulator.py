"""The in-memory Kubernetes API (ClusterEmulator/KubeServer) with the kubernetes client and with kopf.

Plain synchronous tests: the server and the operator each run in their own thread and loop, so the
test thread may block and poll with time.sleep.
"""

from __future__ import annotations

import base64
import datetime
import json
import pathlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import kmock
import kopf
import kubernetes
import pytest
import requests
from kubernetes.client import ApiClient, CoreV1Api, CustomObjectsApi, V1Secret
from kubernetes.client.exceptions import ApiException

from cloudtriggers.sandbox.kopfthread import KopfThread, login_handler_for, test_settings
from cloudtriggers.sandbox.kube import TRIGGERS, ClusterEmulator, KubeServer, kube_client

T = TypeVar("T")
GROUP, VERSION, PLURAL = "cloudtriggers.io", "v1alpha1", "triggers"
NS = "default"
FINALIZER = "cloudtriggers.io/finalizer"


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout} s waiting for: {what}; last value: {value!r}")
        time.sleep(0.02)


def name_of(obj: V1Secret) -> str | None:
    assert obj.metadata is not None
    return obj.metadata.name


def raw(version: kmock.ObjectVersion | None) -> dict[str, Any]:
    assert version is not None, "a soft-deletion marker in the history"
    return version.raw


# kubernetes.config is not annotated: the client it builds, typed.
new_client_from_config = cast(Callable[..., ApiClient], kubernetes.config.new_client_from_config)


def must_get(kube: KubeServer, gvp: str, name: str) -> dict[str, Any]:
    obj = kube.get(gvp, NS, name)
    assert obj is not None, f"{gvp} {NS}/{name} does not exist"
    return obj


def trigger(name: str, project: str = "group/web") -> dict[str, Any]:
    """A Trigger the CRD accepts: the emulator validates custom resources against it."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": {"gitlab": {"url": "https://gitlab.example.com", "project": project}},
    }


@pytest.fixture()
def kube() -> Iterator[KubeServer]:
    with KubeServer() as server:
        yield server


@pytest.fixture()
def api(kube: KubeServer) -> Iterator[kubernetes.client.ApiClient]:
    with kube_client(kube.url) as client:
        yield client


class ToyOperator:
    """A minimal Trigger operator: status on create, an owned Secret, a finalizer, a delete handler."""

    def __init__(self, url: str) -> None:
        self.registry = kopf.OperatorRegistry()
        self.settings = test_settings()
        self.settings.persistence.finalizer = FINALIZER
        self.settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="kopf.cloudtriggers.io"
        )
        self.settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="kopf.cloudtriggers.io", key="last-handled-configuration"
        )
        self.updated: list[Any] = []
        self.deleted: list[str] = []
        self.lock = threading.Lock()

        kopf.on.login(registry=self.registry)(login_handler_for(url))

        @kopf.on.create(GROUP, VERSION, PLURAL, registry=self.registry)
        def create_fn(name: str, namespace: str | None, patch: kopf.Patch, **_: Any) -> None:
            secret: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-out"},
                "stringData": {"token": f"for-{name}"},
            }
            kopf.adopt(secret)  # needs apiVersion/kind/uid filled in server-side
            with kube_client(url) as client:
                CoreV1Api(client).create_namespaced_secret(namespace or NS, V1Secret.model_validate(secret))
            patch.status["secretName"] = f"{name}-out"

        @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=self.registry)
        def update_fn(diff: kopf.Diff, **_: Any) -> None:
            with self.lock:
                self.updated.append(list(diff))

        @kopf.on.delete(GROUP, VERSION, PLURAL, registry=self.registry)
        def delete_fn(name: str, **_: Any) -> None:
            with self.lock:
                self.deleted.append(name)

    def run(self, namespaces: list[str] | None = None) -> KopfThread:
        return KopfThread(self.registry, self.settings, namespaces=namespaces)


def test_secrets_and_events_with_the_kubernetes_client(
    kube: KubeServer, api: kubernetes.client.ApiClient, tmp_path: pathlib.Path
) -> None:
    core = CoreV1Api(api)
    body = kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(name="s1", labels={"app": "a"}),
        string_data={"token": "t0"},
    )
    created = core.create_namespaced_secret(NS, body)
    assert created.metadata is not None
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp
    assert created.metadata.namespace == NS and created.type == "Opaque"
    assert created.data == {"token": base64.b64encode(b"t0").decode()}  # stringData folded into data

    with pytest.raises(ApiException) as conflict:
        core.create_namespaced_secret(NS, body)
    assert conflict.value.status == 409

    patched = core.patch_namespaced_secret("s1", NS, {"metadata": {"labels": {"extra": "x"}}})
    assert patched.metadata is not None and patched.metadata.resource_version is not None
    assert patched.metadata.labels == {"app": "a", "extra": "x"}
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    read = core.read_namespaced_secret("s1", NS).metadata
    assert read is not None and read.labels is not None and read.labels["extra"] == "x"
    assert [name_of(s) for s in core.list_namespaced_secret(NS, label_selector="app=a").items] == ["s1"]
    assert core.list_namespaced_secret(NS, label_selector="app=b").items == []

    # PUT replaces the object, with metadata.resourceVersion as an optimistic lock.
    patched.string_data, patched.data = {"token": "t1"}, None
    replaced = core.replace_namespaced_secret("s1", NS, patched)
    assert replaced.data == {"token": base64.b64encode(b"t1").decode()}
    assert replaced.metadata is not None and replaced.metadata.uid == created.metadata.uid
    with pytest.raises(ApiException) as stale:
        core.replace_namespaced_secret("s1", NS, patched)
    assert stale.value.status == 409

    # The kubernetes client logs in through a kubeconfig written for the server.
    kubeconfig = tmp_path / "kubeconfig"
    kube.write_kubeconfig(kubeconfig)
    with new_client_from_config(config_file=str(kubeconfig)) as via_config:
        assert [name_of(s) for s in CoreV1Api(via_config).list_secret_for_all_namespaces().items] == ["s1"]

    core.delete_namespaced_secret("s1", NS)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_secret("s1", NS)
    assert missing.value.status == 404
    assert kube.get("v1/secrets", NS, "s1") is None

    # Events as kopf posts them (generateName) and through the events.k8s.io API.
    ref = kubernetes.client.V1ObjectReference(kind="Trigger", name="t1", namespace=NS)
    for _ in range(2):
        core.create_namespaced_event(
            NS,
            kubernetes.client.CoreV1Event(
                metadata=kubernetes.client.V1ObjectMeta(generate_name="kopf-event-"),
                involved_object=ref,
                reason="Testing",
                message="hello",
            ),
        )
    names = [e["metadata"]["name"] for e in kube.list("v1/events", NS)]
    assert len(set(names)) == 2 and all(n.startswith("kopf-event-") for n in names)
    kubernetes.client.EventsV1Api(api).create_namespaced_event(
        NS,
        kubernetes.client.EventsV1Event(
            metadata=kubernetes.client.V1ObjectMeta(name="ev1"),
            event_time=datetime.datetime.now(datetime.UTC),
            reason="Testing",
            note="hello",
        ),
    )
    assert kube.get("events.k8s.io/v1/events", NS, "ev1") is not None


def test_json_patch_with_a_failing_test_op_gets_422_and_changes_nothing(
    kube: KubeServer, api: kubernetes.client.ApiClient
) -> None:
    custom = CustomObjectsApi(api)
    created = cast(
        dict[str, Any], custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, trigger("t1"))
    )
    rv = created["metadata"]["resourceVersion"]
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "999"},
        {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
    ]
    json_patch = "application/json-patch+json"  # the client sends merge patch unless told
    with pytest.raises(ApiException) as error:
        custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "t1", ops, _content_type=json_patch)
    assert error.value.status == 422
    assert error.value.body is not None and json.loads(error.value.body)["reason"] == "Invalid"
    assert kube.get(TRIGGERS, NS, "t1") == created

    ops[0]["value"] = rv
    patched = cast(
        dict[str, Any],
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "t1", ops, _content_type=json_patch
        ),
    )
    assert patched["metadata"]["finalizers"] == [FINALIZER]
    assert int(patched["metadata"]["resourceVersion"]) > int(rv)


def test_watch_resumes_from_a_resource_version(kube: KubeServer, api: kubernetes.client.ApiClient) -> None:
    core = CoreV1Api(api)
    for name in ("s1", "s2"):
        core.create_namespaced_secret(NS, V1Secret.model_validate({"metadata": {"name": name}}))
    listed = requests.get(f"{kube.url}/api/v1/namespaces/{NS}/secrets", timeout=5).json()
    since = listed["metadata"]["resourceVersion"]
    assert len(listed["items"]) == 2 and since.isdigit()

    core.create_namespaced_secret(NS, V1Secret.model_validate({"metadata": {"name": "s3"}}))
    core.patch_namespaced_secret("s1", NS, {"metadata": {"labels": {"x": "y"}}})
    core.delete_namespaced_secret("s2", NS)

    def watch(**params: str) -> list[tuple[str, str]]:
        url = f"{kube.url}/api/v1/namespaces/{NS}/secrets"
        params = {"watch": "true", "timeoutSeconds": "0.5", **params}
        with requests.get(url, params=params, stream=True, timeout=5) as rsp:
            events = [json.loads(line) for line in rsp.iter_lines() if line]
        return [(e["type"], e["object"]["metadata"].get("name", e["object"].get("code"))) for e in events]

    # Only what happened after the listed version, in order, then the stream ends on timeoutSeconds.
    assert watch(resourceVersion=since) == [("ADDED", "s3"), ("MODIFIED", "s1"), ("DELETED", "s2")]
    assert sorted(watch()) == [("ADDED", "s1"), ("ADDED", "s3")]

    # Too old for the kept event log: 410 Gone, upon which kopf re-lists.
    with KubeServer(ClusterEmulator(event_log_limit=2)) as small:
        with kube_client(small.url) as client:
            for name in ("a", "b", "c", "d"):  # rv 1..4; the log keeps only rv 3 and 4
                CoreV1Api(client).create_namespaced_secret(
                    NS, V1Secret.model_validate({"metadata": {"name": name}})
                )
        url = f"{small.url}/api/v1/namespaces/{NS}/secrets"
        rsp = requests.get(url, params={"watch": "true", "resourceVersion": "0"}, stream=True, timeout=5)
        rsp.close()  # a watch from "0" sends the current state; dropping it must not break the server
        with requests.get(
            url, params={"watch": "true", "resourceVersion": "1"}, stream=True, timeout=5
        ) as rsp:
            events = [json.loads(line) for line in rsp.iter_lines() if line]
        assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]


def test_a_removed_object_is_forgotten_as_etcd_forgets_it(
    kube: KubeServer, api: kubernetes.client.ApiClient
) -> None:
    """A real API server deletes a removed object's key from etcd: a GET is 404, a list does not
    walk it, and the same name makes a new object. Only the watch cache still tells of it (a DELETED
    event for a watch from an older resourceVersion). kmock's soft delete kept every removed object
    with its versions, so a long-running emulator (the demo, bench.apiserver) grew and slowed down
    with every object it had ever deleted."""
    core = CoreV1Api(api)
    before = len(kube.emulator.objects)
    since = requests.get(f"{kube.url}/api/v1/namespaces/{NS}/secrets", timeout=5).json()["metadata"]
    for round_ in range(3):
        for i in range(50):
            core.create_namespaced_secret(NS, V1Secret.model_validate({"metadata": {"name": f"s{i}"}}))
        for i in range(50):
            core.delete_namespaced_secret(f"s{i}", NS)
        assert len(kube.emulator.objects) == before, f"round {round_}: removed objects kept"
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_secret("s0", NS)
    assert gone.value.status == 404
    again = core.create_namespaced_secret(NS, V1Secret.model_validate({"metadata": {"name": "s0"}}))
    assert again.metadata is not None
    assert again.metadata.uid and again.metadata.resource_version
    url = f"{kube.url}/api/v1/namespaces/{NS}/secrets"
    params = {"watch": "true", "timeoutSeconds": "0.5", "resourceVersion": since["resourceVersion"]}
    with requests.get(url, params=params, stream=True, timeout=5) as rsp:
        events = [json.loads(line) for line in rsp.iter_lines() if line]
    assert [e["type"] for e in events].count("DELETED") == 150
    assert events[-1]["type"] == "ADDED" and events[-1]["object"]["metadata"]["uid"] == again.metadata.uid


def test_no_write_changes_a_stored_version_in_place(
    kube: KubeServer, api: kubernetes.client.ApiClient
) -> None:
    """A write shares what it leaves unchanged with the version before it (as stored versions are
    never changed in place, it copies only the levels it writes): every earlier version, as the watch
    sent it, stays as it was through merge patches, JSON patches, stringData, status and finalizer
    writes and a removal."""
    core = CoreV1Api(api)
    custom = CustomObjectsApi(api)
    core.create_namespaced_secret(
        NS,
        V1Secret.model_validate(
            {
                "metadata": {"name": "s", "labels": {"a": "1"}, "annotations": {"x": "y"}},
                "data": {"k": "dg=="},
            }
        ),
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, trigger("web"))
    keys = [(kmock.resource("v1/secrets"), NS, "s"), (kmock.resource(TRIGGERS), NS, "web")]

    def versions() -> dict[tuple[kmock.resource, str, str], list[str]]:
        return {
            k: [json.dumps(raw(v), sort_keys=True) for v in kube.emulator.objects[k].history]
            for k in keys
            if k in kube.emulator.objects
        }

    writes: list[Callable[[], object]] = [
        lambda: core.patch_namespaced_secret("s", NS, {"metadata": {"labels": {"b": "2"}}}),
        lambda: core.patch_namespaced_secret("s", NS, {"stringData": {"k2": "v"}}),
        lambda: core.patch_namespaced_secret("s", NS, [{"op": "add", "path": "/data/k3", "value": "dw=="}]),
        lambda: custom.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "web", {"metadata": {"finalizers": [FINALIZER], "labels": {"l": "1"}}}
        ),
        lambda: custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, NS, PLURAL, "web", {"status": {"provider": "gitlab", "externalId": "7"}}
        ),
        lambda: custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, NS, PLURAL, "web", {"status": {"atProvider": {"projectId": 1}}}
        ),
        lambda: custom.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "web", {"spec": {"gitlab": {"project": "group/api"}}}
        ),
        lambda: custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "web"),
    ]
    for write in writes:
        before = versions()
        write()
        after = versions()
        for key, kept in before.items():
            assert after[key][: len(kept)] == kept, f"{key}: an earlier version changed"
            assert len(after[key]) >= len(kept)
    assert [len(v) for v in versions().values()] == [4, 6]  # every write above made a version


def test_a_watch_that_allows_bookmarks_gets_them_with_the_current_version() -> None:
    # apiserver/pkg/storage/cacher cache_watcher.go: a watch with allowWatchBookmarks=true gets a
    # BOOKMARK about every minute (here bookmark_interval): an object of the watched kind with only
    # the resourceVersion the watcher is up to date through; none without the parameter.
    with KubeServer(ClusterEmulator(bookmark_interval=0.1)) as kube:
        core = CoreV1Api(kube_client(kube.url))
        core.create_namespaced_secret(NS, V1Secret.model_validate({"metadata": {"name": "s"}}))
        url = f"{kube.url}/api/v1/namespaces/{NS}/secrets"
        with requests.get(
            url,
            params={"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": "1"},
            stream=True,
            timeout=5,
        ) as rsp:
            events = [json.loads(line) for line in rsp.iter_lines() if line]
        marks = [e for e in events if e["type"] == "BOOKMARK"]
        assert events[0]["type"] == "ADDED" and len(marks) >= 5
        assert marks[-1]["object"]["kind"] == "Secret" and marks[-1]["object"]["apiVersion"] == "v1"
        assert marks[-1]["object"]["metadata"] == {
            "resourceVersion": must_get(kube, "v1/secrets", "s")["metadata"]["resourceVersion"]
        }
        with requests.get(
            url, params={"watch": "true", "timeoutSeconds": "1"}, stream=True, timeout=5
        ) as rsp:
            assert [json.loads(line)["type"] for line in rsp.iter_lines() if line] == ["ADDED"]


def test_a_selector_watch_sees_objects_enter_and_leave_the_selection(
    kube: KubeServer, api: kubernetes.client.ApiClient
) -> None:
    """As the API server's watchers send it (apiserver/pkg/storage/etcd3/watcher.go, transform): a
    label added makes the object ADDED to a selector's watch, a label removed makes it DELETED (with
    its previous content at the new resourceVersion), and a change outside the selection is not
    sent; a resumed watch replays the same."""
    core = CoreV1Api(api)
    listed = requests.get(f"{kube.url}/api/v1/namespaces/{NS}/secrets", timeout=5).json()
    since = listed["metadata"]["resourceVersion"]
    core.create_namespaced_secret(
        NS, V1Secret.model_validate({"metadata": {"name": "s1"}, "stringData": {"k": "1"}})
    )
    core.patch_namespaced_secret("s1", NS, {"metadata": {"labels": {"mine": "yes"}}})
    core.patch_namespaced_secret("s1", NS, {"stringData": {"k": "2"}})
    removed = core.patch_namespaced_secret("s1", NS, {"metadata": {"labels": {"mine": None}}})
    core.patch_namespaced_secret("s1", NS, {"stringData": {"k": "3"}})

    url = f"{kube.url}/api/v1/namespaces/{NS}/secrets"
    params = {"watch": "true", "timeoutSeconds": "0.5", "labelSelector": "mine=yes", "resourceVersion": since}
    with requests.get(url, params=params, stream=True, timeout=5) as rsp:
        events = [json.loads(line) for line in rsp.iter_lines() if line]
    seen = [(e["type"], base64.b64decode(e["object"]["data"]["k"]).decode()) for e in events]
    assert seen == [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")]
    gone = events[-1]["object"]["metadata"]
    assert removed.metadata is not None
    assert gone["labels"] == {"mine": "yes"} and gone["resourceVersion"] == removed.metadata.resource_version


def test_operator_runs_a_trigger_through_its_lifecycle(
    kube: KubeServer, api: kubernetes.client.ApiClient
) -> None:
    toy = ToyOperator(kube.url)
    custom = CustomObjectsApi(api)
    with toy.run():
        kube.wait_watched(TRIGGERS)  # the steady state: the watch is open before the object appears
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, trigger("t1"))

        # The create handler's status patch lands through /status; it does not bump the generation.
        obj = wait_for("status", lambda: (o := kube.get(TRIGGERS, NS, "t1")) and o.get("status") and o)
        assert obj["status"]["secretName"] == "t1-out"
        assert obj["metadata"]["generation"] == 1
        assert FINALIZER in obj["metadata"]["finalizers"]
        assert "kopf.cloudtriggers.io/last-handled-configuration" in obj["metadata"]["annotations"]
        secret = must_get(kube, "v1/secrets", "t1-out")
        assert secret["data"]["token"] == base64.b64encode(b"for-t1").decode()
        assert [ref["uid"] for ref in secret["metadata"]["ownerReferences"]] == [obj["metadata"]["uid"]]

        # A spec patch bumps the generation and reaches the update handler.
        change = {"spec": {"gitlab": {"project": "group/api"}}}
        custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "t1", change)
        assert wait_for("update handler", lambda: toy.updated) == [
            [("change", ("gitlab", "project"), "group/web", "group/api")]
        ]
        assert must_get(kube, TRIGGERS, "t1")["metadata"]["generation"] == 2

        # The status endpoint changes only .status; the main endpoint never changes .status.
        custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            NS,
            PLURAL,
            "t1",
            {"status": {"secretName": "odd"}, "spec": {"gitlab": {"project": "x/y"}}},
        )
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "t1", {"status": {"secretName": "lost"}}
        )
        obj = must_get(kube, TRIGGERS, "t1")
        assert obj["status"]["secretName"] == "odd" and obj["spec"]["gitlab"]["project"] == "group/api"
        assert obj["metadata"]["generation"] == 2

        # Deletion waits for the finalizer; then the object and its owned Secret are gone.
        custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "t1")
        wait_for("delete handler", lambda: toy.deleted)
        wait_for("trigger gone", lambda: kube.get(TRIGGERS, NS, "t1") is None)
        assert kube.get("v1/secrets", NS, "t1-out") is None
    assert toy.deleted == ["t1"]


def test_generation_is_kept_where_the_api_server_keeps_it(
    kube: KubeServer, api: kubernetes.client.ApiClient
) -> None:
    """metadata.generation as the real registry strategies keep it: a custom resource has one (1 on
    create, +1 for a change outside metadata: apiextensions-apiserver customresource/strategy.go
    PrepareForUpdate), a Secret has none, and the first deletionTimestamp of an object with
    finalizers bumps it (apiserver registry/generic/registry/store.go markAsDeleting)."""
    custom, core = CustomObjectsApi(api), CoreV1Api(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, trigger("t1"))
    meta = {"finalizers": [FINALIZER], "labels": {"a": "b"}, "annotations": {"c": "d"}}
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "t1", {"metadata": meta})
    assert must_get(kube, TRIGGERS, "t1")["metadata"]["generation"] == 1  # metadata only
    change = {"spec": {"gitlab": {"project": "group/api"}}}
    custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "t1", change)
    assert must_get(kube, TRIGGERS, "t1")["metadata"]["generation"] == 2

    core.create_namespaced_secret(
        NS, V1Secret.model_validate({"metadata": {"name": "s", "finalizers": [FINALIZER]}, "data": {}})
    )
    core.patch_namespaced_secret("s", NS, {"data": {"k": base64.b64encode(b"v").decode()}})
    assert "generation" not in must_get(kube, "v1/secrets", "s")["metadata"]

    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "t1")
    core.delete_namespaced_secret("s", NS)
    deleting = must_get(kube, TRIGGERS, "t1")["metadata"]
    assert deleting["deletionTimestamp"] and deleting["generation"] == 3
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "t1")  # already being deleted
    assert must_get(kube, TRIGGERS, "t1")["metadata"]["generation"] == 3
    secret = must_get(kube, "v1/secrets", "s")["metadata"]
    assert secret["deletionTimestamp"] and "generation" not in secret


@pytest.mark.parametrize("namespaces", [None, [NS]], ids=["clusterwide", "namespaced"])
def test_operator_handles_triggers_created_before_it_started(
    kube: KubeServer, api: kubernetes.client.ApiClient, namespaces: list[str] | None
) -> None:
    # The E6/E7 case: kopf LISTs, patches the finalizer and opens the WATCH concurrently.
    custom = CustomObjectsApi(api)
    names = [f"early-{i}" for i in range(3)]
    for name in names:
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, trigger(name))
    toy = ToyOperator(kube.url)
    with toy.run(namespaces):
        for name in names:

            def handled(name: str = name) -> Any:
                return ((kube.get(TRIGGERS, NS, name) or {}).get("status") or {}).get("secretName")

            wait_for(f"{name} handled", handled)
    assert sorted(s["metadata"]["name"] for s in kube.list("v1/secrets", NS)) == [f"{n}-out" for n in names]


def test_kopf_thread_reraises_why_the_operator_could_not_start(kube: KubeServer) -> None:
    # About 5 s: after a failure, kopf gives its leftover "stop-flag waiter" task 5 s to finish.
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login_handler_for(kube.url))

    @kopf.on.startup(registry=registry)
    def refuse(**_: Any) -> None:
        raise kopf.PermanentError("refusing to start")

    with pytest.raises(Exception) as failure, KopfThread(registry, test_settings()):
        pass
    assert failure.typename == "ActivityError"  # kopf's own, not exported
    assert "refusing to start" in repr(failure.value.__cause__ or failure.value.outcomes)  # type: ignore[attr-defined]
