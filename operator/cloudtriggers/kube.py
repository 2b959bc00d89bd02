"""The few Kubernetes API calls the reconciler makes itself: Trigger status, Secrets, Events.

kopf drives the watch; these calls run in worker threads, synchronously, so that a status write
(the create intent above all) is persisted before the provider call.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s
from kubernetes.client.rest import RESTClientObject

from . import __version__
from .event_poster import EventPoster
from .ids import intern_ids
from .kube_http import Connections, Reply
from .models import FINALIZER, GROUP, KIND, PLURAL, VERSION
from .output_secrets import OutputSecret, OutputSecrets, decode_data

log = logging.getLogger(__name__)

MANAGED_BY = {"app.kubernetes.io/managed-by": "cloudtriggers"}
AUTH_REUSE = 10.0  # seconds one bearer token from the refresh hook is reused
# An answer that asks to be retried (429 or 5xx with Retry-After) is retried up to this many times,
# as client-go's rest client does by default (maxRetries 10), each wait at most RETRY_WAIT_CAP s.
RETRIES = 10
RETRY_WAIT_CAP = 10.0
_SECONDS = re.compile(r"[0-9]{1,9}")
# Held on a credentials Secret while a Trigger needs it (credentials.py says why); the label lets the
# sweep and `cloudtriggers release-credentials` find the Secrets without reading any other.
SECRET_FINALIZER = "cloudtriggers.io/credentials-in-use"
SECRET_LABEL = "cloudtriggers.io/credentials-in-use"


@dataclass(frozen=True)
class CredentialsSecret:
    """A credentials Secret as read: its data, and what the credentials guard needs of its metadata."""

    data: dict[str, str]
    resource_version: str
    held: bool  # carries our finalizer
    deleting: bool  # has a deletionTimestamp (readable until its finalizers go)
    finalizers: tuple[str, ...] = ()
    labelled: bool = False  # has any label (a JSON patch adds to the map, or creates it)


Body = dict[str, Any]
Strings = dict[str, str]


class SecretConflict(Exception):
    """The output Secret exists and belongs to something else; it is never overwritten."""


def retry_wait(status: int, retry_after: str | None) -> float | None:
    """Seconds to wait before sending again, or None: not to be retried. As client-go's checkWait
    (rest/request.go): 429 (the API server's max-inflight and priority-and-fairness filters, a
    graceful shutdown) or any 5xx, with a Retry-After in whole seconds (an HTTP date or a fraction is
    not retried)."""
    if status != 429 and not 500 <= status < 600:
        return None
    if retry_after is None or not _SECONDS.fullmatch(retry_after):
        return None
    return min(float(retry_after), RETRY_WAIT_CAP)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube(Protocol):
    def get_trigger(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def patch_trigger_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]: ...
    def read_output(self, namespace: str, name: str) -> OutputSecret | None: ...
    def read_credentials(self, namespace: str, name: str) -> CredentialsSecret | None: ...
    def hold_secret(self, namespace: str, name: str, secret: CredentialsSecret) -> bool: ...
    def set_trigger_finalizer(
        self, body: dict[str, Any], present: bool, annotations: Strings | None = None
    ) -> dict[str, Any] | None: ...
    def release_secret(self, namespace: str, name: str) -> bool: ...
    def list_triggers(self, namespace: str) -> list[dict[str, Any]]: ...
    def list_held_secrets(self, namespaces: list[str]) -> list[tuple[str, str]]: ...
    def write_output_secret(
        self, owner: Body, name: str, data: Strings, annotations: Strings | None = None
    ) -> None: ...
    def emit_event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None: ...
    def namespace_terminating(self, namespace: str) -> bool: ...


class SharedReads:
    """One GET of a credentials Secret answers every Trigger that reads it within `fresh` seconds:
    200 Triggers of one account cost one read, not 200. Readers that arrive while a read is in
    flight wait for it. The price is that a change of the Secret is seen up to `fresh` seconds late;
    our own writes to it (hold, release) drop the entry at once."""

    def __init__(self, fresh: float) -> None:
        self.fresh = fresh
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[float, CredentialsSecret | None]] = {}
        self._inflight: dict[tuple[str, str], threading.Event] = {}

    def get(
        self, key: tuple[str, str], read: Callable[[], CredentialsSecret | None]
    ) -> CredentialsSecret | None:
        if self.fresh <= 0:
            return read()
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None and time.monotonic() - entry[0] < self.fresh:
                    return entry[1]
                waiting = self._inflight.get(key)
                if waiting is None:
                    done = self._inflight[key] = threading.Event()
                    break
            waiting.wait(30)
        try:
            started = time.monotonic()
            got = read()
            with self._lock:
                if self._inflight.get(key) is done:  # not forgotten meanwhile
                    if len(self._entries) >= 1024:  # drop what is stale, so memory stays bounded
                        now = time.monotonic()
                        self._entries = {k: e for k, e in self._entries.items() if now - e[0] < self.fresh}
                    self._entries[key] = (started, got)
            return got
        finally:
            with self._lock:
                if self._inflight.get(key) is done:
                    del self._inflight[key]
            done.set()

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._inflight.pop(key, None)


class KubeApiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:300]}")
        self.status = status
        answer = _status(text)
        causes = (answer.get("details") or {}).get("causes") if answer else None
        # StatusCause.Type is `reason` in JSON.
        self.causes = tuple(str(c.get("reason") or "") for c in causes or () if isinstance(c, dict))
        self.message = str((answer or {}).get("message") or text)[:500]  # the Status's own, for a condition

    @property
    def refused_terminating(self) -> bool:
        """The namespace's lifecycle admission refused a create in a namespace being deleted
        (plugin/pkg/admission/namespace/lifecycle: 403 with the cause NamespaceTerminating)."""
        return self.status == 403 and NAMESPACE_TERMINATING in self.causes


NAMESPACE_TERMINATING = "NamespaceTerminating"  # corev1.NamespaceTerminatingCause


def _status(text: str) -> dict[str, Any] | None:
    """A Status answer as a dict; None when the text is not one (a proxy's page, plain text)."""
    try:
        got = json.loads(text)
    except ValueError:
        return None
    return got if isinstance(got, dict) else None


class KubeClient:
    """Kube over plain JSON, on the official client's own connection pool.

    The official client validates every call's arguments with pydantic and builds typed models for
    every answer, which cost more CPU than everything else the operator does per Trigger (measured
    with bench/). These few calls need neither. The pool is the one the official client builds from
    its Configuration (server, TLS and client certificates, proxy); the token comes from the same
    Configuration with its refresh hook (exec plugins, in-cluster token rotation). The requests go
    over that pool's connections as http.client makes them (kube_http.py: half urllib3's CPU per
    call), through urllib3 itself behind a proxy and for the output Secrets' watch stream.
    Thread-safe: the worker threads share the connections.
    """

    def __init__(
        self,
        api: k8s.ApiClient,
        component: str = "cloudtriggers",
        pool: int | None = None,
        secret_reads: float = 0.0,
    ) -> None:
        """`pool`: connections kept per host (default: the Configuration's, at least 16), one per
        worker thread, or urllib3 discards and reopens them under load. `secret_reads`: for how many
        seconds one read of a credentials Secret answers every Trigger using it (0: no sharing)."""
        self.secret_reads = SharedReads(secret_reads)
        self.config = api.configuration
        self.base = str(self.config.host).rstrip("/")
        self.component = component
        config = copy.copy(self.config)
        config.connection_pool_maxsize = pool or max(self.config.connection_pool_maxsize or 0, 16)
        self.pool = RESTClientObject(config).pool_manager
        # The pool's connections without its per-call overhead (kube_http.py); None behind a proxy.
        self.connections = Connections.of(self.pool, self.base, config.connection_pool_maxsize)
        self.timeout = urllib3.Timeout(connect=5, read=60)
        self.user_agent = f"cloudtriggers/{__version__}"
        self._auth: tuple[str, float] = ("", 0.0)  # the bearer token and when it was read
        self.outputs: OutputSecrets | None = None  # the watched output Secrets (watch_outputs)
        self._stream_pool = self.pool
        self.events: EventPoster | None = None  # Events posted in the background (post_events_in_background)

    def _token(self) -> str:
        """The bearer token, from the Configuration's refresh hook at most every AUTH_REUSE seconds:
        the hook reloads the whole kubeconfig (a quarter of a small call's CPU), and the tokens it
        serves are renewed minutes before they expire (exec plugins: 5 min; in-cluster: each minute)."""
        value, at = self._auth
        now = time.monotonic()
        if at and now - at < AUTH_REUSE:
            return value
        auth = self.config.auth_settings().get("BearerToken")  # runs the refresh hook when there is one
        value = str(auth["value"]) if auth and auth.get("value") else ""
        self._auth = (value, now)
        return value

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> dict[str, Any] | None:
        """The decoded answer; None for 404; KubeApiError for any other answer that is a failure
        (urllib3.exceptions.HTTPError when there is no answer). `raw`: a body encoded already."""
        headers = self._headers(headers)
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(RETRIES + 1):
            status, answer, retry_after = self._send(method, path, data, headers)
            wait = retry_wait(status, retry_after) if attempt < RETRIES else None
            if wait is None:
                break
            # Turned away before it was handled (client-go retries any verb so): wait as asked.
            log.debug("%s %s answered %d; retrying in %.0f s as asked", method, path, status, wait)
            time.sleep(wait)
        if status == 401:
            self._auth = ("", 0.0)  # the next call asks the refresh hook again
        if status == 404:
            return None
        if status >= 400:
            raise KubeApiError(status, answer.decode(errors="replace"))
        return cast(dict[str, Any], json.loads(answer)) if answer else {}

    def _send(self, method: str, path: str, data: bytes | None, headers: dict[str, str]) -> Reply:
        if self.connections is not None:
            return self.connections.request(method, path, data, headers)
        resp = self.pool.request(
            method, self.base + path, body=data, headers=headers, timeout=self.timeout, retries=False
        )
        return Reply(resp.status, resp.data, resp.headers.get("Retry-After"))

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json", **(extra or {}), "User-Agent": self.user_agent}
        token = self._token()
        if token:
            headers["Authorization"] = token
        return headers

    request_json = _request  # for output_secrets.py's list

    def watch_outputs(self, namespaces: list[str]) -> OutputSecrets:
        """Answer output Secret reads from a watch (started and stopped by its owner), on a pool of
        its own: each watch holds a connection for as long as it runs."""
        self.outputs = OutputSecrets(self, ",".join(f"{k}={v}" for k, v in MANAGED_BY.items()), namespaces)
        config = copy.copy(self.config)
        config.connection_pool_maxsize = max(1, len(self.outputs.scopes))
        self._stream_pool = RESTClientObject(config).pool_manager
        return self.outputs

    def open_stream(self, path: str, read_timeout: float) -> urllib3.BaseHTTPResponse:
        """A streamed GET (a watch): the answer's lines are read as they come."""
        resp = self._stream_pool.request(
            "GET",
            self.base + path,
            headers=self._headers(),
            timeout=urllib3.Timeout(connect=5, read=read_timeout),
            retries=False,
            preload_content=False,
        )
        if resp.status == 401:
            self._auth = ("", 0.0)
        return resp

    @staticmethod
    def _trigger_path(namespace: str, name: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}/{quote(name)}"

    @staticmethod
    def _secret_path(namespace: str, name: str = "") -> str:
        base = f"/api/v1/namespaces/{quote(namespace)}/secrets"
        return f"{base}/{quote(name)}" if name else base

    def get_trigger(self, namespace: str, name: str) -> dict[str, Any] | None:
        return intern_ids(self._request("GET", self._trigger_path(namespace, name)))

    def patch_trigger_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        # A JSON merge patch: keys set to None are removed.
        path = self._trigger_path(namespace, name) + "/status"
        obj = self._request("PATCH", path, {"status": status}, "application/merge-patch+json")
        if obj is None:
            raise KubeApiError(404, f"Trigger {namespace}/{name} is gone")
        return intern_ids(obj)

    def read_output(self, namespace: str, name: str) -> OutputSecret | None:
        """An output Secret: as the watch shows it (output_secrets.py), else as it is now."""
        if self.outputs is not None:
            seen = self.outputs.get(namespace, name)
            if seen is not None:
                return seen
        got = self._read_credentials(namespace, name)
        return None if got is None else OutputSecret.of(got.data, got.resource_version)

    def read_credentials(self, namespace: str, name: str) -> CredentialsSecret | None:
        return self.secret_reads.get((namespace, name), lambda: self._read_credentials(namespace, name))

    def _read_credentials(self, namespace: str, name: str) -> CredentialsSecret | None:
        s = self._request("GET", self._secret_path(namespace, name))
        if s is None:
            return None
        data = decode_data(s)
        meta = s.get("metadata") or {}
        finalizers = tuple(meta.get("finalizers") or ())
        return CredentialsSecret(
            data=data,
            resource_version=str(meta.get("resourceVersion") or ""),
            held=SECRET_FINALIZER in finalizers,
            deleting=bool(meta.get("deletionTimestamp")),
            finalizers=finalizers,
            labelled=bool(meta.get("labels")),
        )

    def set_trigger_finalizer(
        self, body: dict[str, Any], present: bool, annotations: Strings | None = None
    ) -> dict[str, Any] | None:
        """Add (present) or remove our finalizer on the Trigger as it was read, with `annotations` set
        in the same write: one JSON patch with a resourceVersion test. Returns the Trigger as stored
        after it, or None when it is gone; KubeApiError 409/422 when it changed in between (the
        caller reads it again)."""
        meta = body.get("metadata") or {}
        finalizers = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        if present:
            finalizers.append(FINALIZER)
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
            {"op": "add", "path": "/metadata/finalizers", "value": finalizers},
        ]
        if annotations and meta.get("annotations"):
            ops += [
                {"op": "add", "path": "/metadata/annotations/" + _pointer(k), "value": v}
                for k, v in annotations.items()
            ]
        elif annotations:
            ops.append({"op": "add", "path": "/metadata/annotations", "value": dict(annotations)})
        path = self._trigger_path(str(meta.get("namespace")), str(meta.get("name")))
        return intern_ids(self._request("PATCH", path, ops, "application/json-patch+json"))

    def hold_secret(self, namespace: str, name: str, secret: CredentialsSecret) -> bool:
        """Add our finalizer and label to the Secret as it was read, if it is still at that
        resourceVersion. False when it changed or went in between (the caller reads it again)."""
        if secret.held:
            return True
        finalizers = [*secret.finalizers, SECRET_FINALIZER]
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": secret.resource_version},
            {"op": "add", "path": "/metadata/finalizers", "value": finalizers},
        ]
        if secret.labelled:
            ops.append({"op": "add", "path": "/metadata/labels/" + _pointer(SECRET_LABEL), "value": "true"})
        else:
            ops.append({"op": "add", "path": "/metadata/labels", "value": {SECRET_LABEL: "true"}})
        self.secret_reads.forget((namespace, name))  # whatever happens, the Secret read before is old
        try:
            return self._json_patch(self._secret_path(namespace, name), ops)
        except KubeApiError as e:
            if e.status == 404:
                return False
            raise

    def release_secret(self, namespace: str, name: str) -> bool:
        """Remove our finalizer and label (with a resourceVersion test). False when the Secret
        changed in between (the caller decides again); True when released or already free."""
        path = self._secret_path(namespace, name)
        self.secret_reads.forget((namespace, name))
        current = self._request("GET", path)
        if current is None:
            return True
        meta = current.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        labels = meta.get("labels") or {}
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")}
        ]
        if SECRET_LABEL in labels:
            ops.append({"op": "remove", "path": "/metadata/labels/" + _pointer(SECRET_LABEL)})
        if SECRET_FINALIZER in finalizers:
            ops.append({"op": "remove", "path": f"/metadata/finalizers/{finalizers.index(SECRET_FINALIZER)}"})
        if len(ops) == 1:
            return True
        return self._json_patch(path, ops)

    def _json_patch(self, path: str, ops: list[dict[str, Any]]) -> bool:
        try:
            self._request("PATCH", path, ops, "application/json-patch+json")
        except KubeApiError as e:
            if e.status in (409, 422):  # the resourceVersion test failed: changed in between
                return False
            raise
        return True

    def list_triggers(self, namespace: str) -> list[dict[str, Any]]:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}"
        got = self._request("GET", path)
        return list((got or {}).get("items") or [])

    def list_all_triggers(self) -> list[dict[str, Any]]:
        """Every Trigger of the cluster (cloudtriggers plan; needs list on triggers cluster-wide)."""
        got = self._request("GET", f"/apis/{GROUP}/{VERSION}/{PLURAL}")
        return list((got or {}).get("items") or [])

    def list_held_secrets(self, namespaces: list[str]) -> list[tuple[str, str]]:
        """(namespace, name) of the Secrets carrying our label, metadata only (no Secret data read)."""
        headers = {
            "Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
        }
        query = "?labelSelector=" + quote(SECRET_LABEL)
        paths = [self._secret_path(ns) + query for ns in namespaces] or ["/api/v1/secrets" + query]
        held: list[tuple[str, str]] = []
        for path in paths:
            got = self._request("GET", path, headers=headers) or {}
            for item in got.get("items") or []:
                meta = item.get("metadata") or {}
                held.append((str(meta.get("namespace")), str(meta.get("name"))))
        return held

    def write_output_secret(
        self, owner: Body, name: str, data: Strings, annotations: Strings | None = None
    ) -> None:
        """`annotations` go on the Secret too (the rotation time, for tools that restart its users)."""
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
                **({"annotations": dict(annotations)} if annotations else {}),
            },
            "data": encoded,
        }
        # Create first: the common case costs one request; an existing Secret is checked, then patched.
        try:
            self._wrote(self._request("POST", self._secret_path(ns), body))
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
        patch: dict[str, Any] = {"data": encoded}
        if annotations:
            patch["metadata"] = {"annotations": dict(annotations)}
        merge = "application/merge-patch+json"
        self._wrote(self._request("PATCH", self._secret_path(ns, name), patch, merge))

    def _wrote(self, secret: Body | None) -> None:
        """Our write, into the watched view at once: the answer is the Secret as stored."""
        if self.outputs is not None and secret:
            meta = secret.get("metadata") or {}
            version = str(meta.get("resourceVersion") or "")
            self.outputs.put(str(meta.get("namespace")), str(meta.get("name")), decode_data(secret), version)

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
        path = f"/api/v1/namespaces/{quote(meta['namespace'])}/events"
        data = json.dumps(body).encode()
        what = f"{reason} for {meta['namespace']}/{meta['name']}"
        if self.events is None or not self.events.put(path, data, what):
            self._post_event(path, data, what)

    def _post_event(self, path: str, data: bytes, what: str) -> None:
        try:
            self._request("POST", path, raw=data)
        except KubeApiError as e:  # best effort; status carries the truth
            if e.refused_terminating:
                # Expected while a namespace is deleted: its Triggers are finalized after the API
                # server stopped taking new content there (as Kubernetes' own controllers, not a warning).
                log.debug("event %s not posted: its namespace is being terminated", what)
                return
            log.warning("could not post event %s: %s", what, e)
        except urllib3.exceptions.HTTPError as e:
            log.warning("could not post event %s: %s", what, e)

    def post_events_in_background(self) -> EventPoster:
        """Post Events from a thread of their own (event_poster.py), started and stopped by its owner."""
        self.events = EventPoster(self._post_event)
        return self.events

    def namespace_terminating(self, namespace: str) -> bool:
        try:
            ns = self._request("GET", f"/api/v1/namespaces/{quote(namespace)}")
        except (KubeApiError, urllib3.exceptions.HTTPError):
            return False
        if ns is None:
            return False
        deleting = bool((ns.get("metadata") or {}).get("deletionTimestamp"))
        return deleting or (ns.get("status") or {}).get("phase") == "Terminating"


def _pointer(key: str) -> str:
    """A map key as a JSON pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")
