"""The few Kubernetes API calls the reconciler makes itself: Trigger status, Secrets, Events.

kopf drives the watch; these calls run in worker threads through the synchronous `kubernetes`
client, so that a status write (the create intent above all) is persisted before the provider call.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime
from typing import Any, Protocol, cast
from urllib.parse import quote

import requests
import requests.adapters
from kubernetes import client as k8s

from . import __version__
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


class KubeApiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:300]}")
        self.status = status


class KubeClient:
    """Kube over plain JSON requests, configured exactly like the official client.

    The official client validates every call's arguments with pydantic and builds typed models for
    every answer, which cost more CPU than everything else the operator does per Trigger (measured
    with bench/). These few calls need neither: the configuration (server, TLS, client certificates,
    and the token with its refresh hook for exec plugins and in-cluster token rotation) is taken from
    the official client's Configuration. Thread-safe: one pooled Session for the worker threads.
    """

    def __init__(self, api: k8s.ApiClient, component: str = "cloudtriggers", pool: int = 32) -> None:
        self.config = api.configuration
        self.base = str(self.config.host).rstrip("/")
        self.component = component
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.verify = (self.config.ssl_ca_cert or True) if self.config.verify_ssl else False
        if self.config.cert_file:
            session.cert = (self.config.cert_file, self.config.key_file)
        if self.config.proxy:
            session.proxies = {"http": self.config.proxy, "https": self.config.proxy}
        session.trust_env = False  # exactly the kubeconfig's server, as the official client does
        session.headers["User-Agent"] = f"cloudtriggers/{__version__}"
        self.session = session

    def _request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any] | None:
        """The decoded answer; None for 404; KubeApiError for any other failure."""
        headers = {"Accept": "application/json"}
        auth = self.config.auth_settings().get("BearerToken")  # runs the refresh hook when there is one
        if auth and auth.get("value"):
            headers["Authorization"] = str(auth["value"])
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        resp = self.session.request(method, self.base + path, data=data, headers=headers, timeout=(5, 60))
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise KubeApiError(resp.status_code, resp.text)
        return cast(dict[str, Any], resp.json()) if resp.content else {}

    @staticmethod
    def _trigger_path(namespace: str, name: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}/{quote(name)}"

    @staticmethod
    def _secret_path(namespace: str, name: str = "") -> str:
        base = f"/api/v1/namespaces/{quote(namespace)}/secrets"
        return f"{base}/{quote(name)}" if name else base

    def get_trigger(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._request("GET", self._trigger_path(namespace, name))

    def patch_trigger_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        # A JSON merge patch: keys set to None are removed.
        path = self._trigger_path(namespace, name) + "/status"
        obj = self._request("PATCH", path, {"status": status}, "application/merge-patch+json")
        if obj is None:
            raise KubeApiError(404, f"Trigger {namespace}/{name} is gone")
        return obj

    def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        s = self._request("GET", self._secret_path(namespace, name))
        if s is None:
            return None
        data = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
        data.update(s.get("stringData") or {})
        return data, str((s.get("metadata") or {}).get("resourceVersion") or "")

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
            self._request("POST", self._secret_path(ns), body)
            return
        except KubeApiError as e:
            if e.status != 409:
                raise
        current = self._request("GET", self._secret_path(ns, name))
        if current is None:  # deleted in between (or the 409 was not AlreadyExists): try again later
            raise KubeApiError(409, f"Secret {name} could not be created and does not exist; retrying")
        refs = (current.get("metadata") or {}).get("ownerReferences") or []
        if not any(r.get("uid") == meta["uid"] for r in refs):
            raise SecretConflict(
                f"Secret {name} exists and is not owned by this Trigger; it is left untouched"
            )
        self._request("PATCH", self._secret_path(ns, name), {"data": encoded}, "application/merge-patch+json")

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
            self._request("POST", f"/api/v1/namespaces/{quote(meta['namespace'])}/events", body)
        except (KubeApiError, requests.RequestException) as e:  # best effort; status carries the truth
            log.warning("could not post event %s for %s/%s: %s", reason, meta["namespace"], meta["name"], e)

    def namespace_terminating(self, namespace: str) -> bool:
        try:
            ns = self._request("GET", f"/api/v1/namespaces/{quote(namespace)}")
        except (KubeApiError, requests.RequestException):
            return False
        if ns is None:
            return False
        deleting = bool((ns.get("metadata") or {}).get("deletionTimestamp"))
        return deleting or (ns.get("status") or {}).get("phase") == "Terminating"
