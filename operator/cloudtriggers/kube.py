"""The few Kubernetes API calls the reconciler makes itself: Trigger status, Secrets, Events.

kopf drives the watch; these calls run in worker threads through the synchronous `kubernetes`
client, so that a status write (the create intent above all) is persisted before the provider call.
"""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from .models import GROUP, KIND, PLURAL, VERSION

log = logging.getLogger(__name__)

MANAGED_BY = {"app.kubernetes.io/managed-by": "cloudtriggers"}


class SecretConflict(Exception):
    """The output Secret exists and belongs to something else; it is never overwritten."""


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube(Protocol):
    def get_trigger(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def patch_trigger_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]: ...
    def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None: ...
    def write_output_secret(self, owner: dict[str, Any], name: str, data: dict[str, str]) -> None: ...
    def emit_event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None: ...
    def namespace_terminating(self, namespace: str) -> bool: ...


class KubeClient:
    """Kube over the official client. Thread-safe: the underlying urllib3 pool is."""

    def __init__(self, api: k8s.ApiClient, component: str = "cloudtriggers") -> None:
        self.core = k8s.CoreV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)
        self.component = component

    def get_trigger(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            return cast(dict[str, Any], obj)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_trigger_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        # A JSON merge patch: keys set to None are removed.
        obj = self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status}
        )
        return cast(dict[str, Any], obj)

    def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        try:
            s = self.core.read_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        data = {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}
        data.update(s.string_data or {})
        return data, str(s.metadata.resource_version or "") if s.metadata else ""

    def write_output_secret(self, owner: dict[str, Any], name: str, data: dict[str, str]) -> None:
        meta = owner["metadata"]
        ns = meta["namespace"]
        owner_ref = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
        }
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": dict(MANAGED_BY),
                "ownerReferences": [owner_ref],
            },
            "data": encoded,
        }
        # Create first: the common case costs one request; an existing Secret is checked, then patched.
        try:
            self.core.create_namespaced_secret(ns, body)  # type: ignore[arg-type]
            return
        except ApiException as e:
            if e.status != 409:
                raise
        current = self.core.read_namespaced_secret(name, ns)
        refs = (current.metadata.owner_references if current.metadata else None) or []
        if not any(r.uid == meta["uid"] for r in refs):
            raise SecretConflict(
                f"Secret {name} exists and is not owned by this Trigger; it is left untouched"
            )
        self.core.patch_namespaced_secret(name, ns, {"data": encoded})

    def emit_event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = owner["metadata"]
        ts = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body)  # type: ignore[arg-type]
        except ApiException as e:  # events are best effort; status carries the truth
            log.warning(
                "could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], e.status
            )

    def namespace_terminating(self, namespace: str) -> bool:
        try:
            ns = self.core.read_namespace(namespace)
        except ApiException:
            return False
        deleting = bool(ns.metadata and ns.metadata.deletion_timestamp)
        return deleting or (ns.status is not None and ns.status.phase == "Terminating")
