"""The output Secrets as one watch shows them, so that a drift check reads none.

A drift check must see an output Secret deleted or edited. Reading it at every check cost one
request per Trigger per resync period: all of the steady state's Kubernetes requests. One list and
watch of the Secrets we label (kube.MANAGED_BY, a server-side selector: no other Secret is sent)
keeps what a check needs of them here instead (OutputSecret: digests, not the tokens). Only a
Secret the view holds is answered from it; one it lacks (not listed yet, the watch down, our label
taken off) is read as before. So the view can hide nothing
but an edit of the last moment, which the next check sees, and a broken watch costs reads, not
correctness.

Watch semantics are the API server's (apiserver/pkg/storage/etcd3/watcher.go, the cacher's
cache_watcher.go): an object that stops matching the selector arrives as DELETED, one that starts
matching as ADDED; `410 Gone` (the version compacted away) means list again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, urlencode

import urllib3

from .models import token_sha256

if TYPE_CHECKING:
    from .kube import KubeClient

log = logging.getLogger(__name__)

Key = tuple[str, str]  # namespace, name
PAGE = 500
WATCH_SECONDS = 300  # the server ends each watch after this; it is resumed from the last version
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
GLOB = set("*?[!")


def decode_data(secret: dict[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def _key(namespace: str, name: str) -> Key:
    return sys.intern(namespace), name  # a namespace's name once, not once per Secret


def _digest(key: str, value: str) -> bytes:
    return hashlib.blake2b(f"{key}\0{value}".encode(), digest_size=16).digest()


class OutputSecret(NamedTuple):
    """An output Secret as a drift check needs it: the token's sha (status.tokenSha256's form) and
    whether it holds given outputs, not the values themselves. The view held each Secret's data, an
    ACK Trigger's token twice (also in its url): ~0.6 KiB a Trigger, and a copy of every token."""

    token_sha: str | None  # token_sha256 of its `token`; None without one
    digests: bytes  # 16 bytes for each key and value, sorted
    version: str  # resourceVersion

    @classmethod
    def of(cls, data: Mapping[str, str], version: str) -> OutputSecret:
        token = data.get("token")
        digests = b"".join(sorted(_digest(k, v) for k, v in data.items()))
        return cls(token_sha256(token) if token else None, digests, version)

    def holds(self, outputs: Mapping[str, str]) -> bool:
        """Every output is in the Secret with this value (keys of its own besides do not matter)."""
        have = {self.digests[i : i + 16] for i in range(0, len(self.digests), 16)}
        return all(_digest(k, v) in have for k, v in outputs.items())


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class OutputSecrets:
    """A list-and-watch view of the labelled Secrets: cluster-wide, or one watch per namespace.

    Namespace patterns (kopf's globs) get no watch: their Secrets are read as before, since the
    operator may not list outside the namespaces it was granted.
    """

    def __init__(self, kube: KubeClient, selector: str, namespaces: list[str] | None = None) -> None:
        self.kube = kube
        self.selector = selector
        literal = [ns for ns in namespaces or [] if not GLOB & set(ns)]
        self.scopes: list[str | None] = [None] if not namespaces else list(dict.fromkeys(literal))
        self._lock = threading.Lock()
        self._entries: dict[str | None, dict[Key, OutputSecret]] = {}  # only scopes whose watch is live
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._streams: dict[str | None, urllib3.BaseHTTPResponse] = {}
        self.synced = threading.Event()  # set once every scope has been listed (tests wait on it)
        self._listed: set[str | None] = set()

    # ---- what the reconciler asks ------------------------------------------------------------

    def _scope(self, namespace: str) -> str | None:
        return None if self.scopes == [None] else namespace

    def get(self, namespace: str, name: str) -> OutputSecret | None:
        """The Secret as the watch last showed it; None when the view cannot say (read it)."""
        with self._lock:
            entries = self._entries.get(self._scope(namespace))
            return None if entries is None else entries.get((namespace, name))

    def put(self, namespace: str, name: str, data: Mapping[str, str], version: str) -> None:
        """Our own write, so that a check right after it does not wait for the watch to bring it."""
        with self._lock:
            entries = self._entries.get(self._scope(namespace))
            if entries is not None:
                entries[_key(namespace, name)] = OutputSecret.of(data, version)

    # ---- the watch -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for scope in self.scopes:
            thread = threading.Thread(
                target=self._run, args=(scope,), name=f"output-secrets-{scope or 'all'}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if not self.scopes:
            self.synced.set()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            streams = list(self._streams.values())
        for stream in streams:
            stream.shutdown()
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()
        with self._lock:
            self._entries.clear()
            self._listed.clear()
        self.synced.clear()

    def _path(self, scope: str | None) -> str:
        return f"/api/v1/namespaces/{quote(scope)}/secrets" if scope else "/api/v1/secrets"

    def _run(self, scope: str | None) -> None:
        failures = 0
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list(scope)
                version = self._watch(scope, version)
                failures = 0
            except _Gone:  # events were missed: answer nothing from the view until listed again
                self._drop(scope)
                version = ""
            except Exception as e:  # the API server away or a broken stream: read, then try again
                self._drop(scope)
                version = ""
                if self._stop.is_set():
                    return
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                failures += 1
                log.warning("output Secrets' watch failed (%s); reading them, retrying in %.0f s", e, delay)
                self._stop.wait(delay)

    def _drop(self, scope: str | None) -> None:
        with self._lock:
            self._entries.pop(scope, None)

    def _list(self, scope: str | None) -> str:
        entries: dict[Key, OutputSecret] = {}
        params: dict[str, str] = {"labelSelector": self.selector, "limit": str(PAGE)}
        while True:
            got = self.kube.request_json("GET", f"{self._path(scope)}?{urlencode(params)}")
            if got is None:
                raise RuntimeError("the Secrets list answered 404")
            for item in got.get("items") or []:
                meta = item.get("metadata") or {}
                key = _key(str(meta.get("namespace")), str(meta.get("name")))
                entries[key] = OutputSecret.of(decode_data(item), str(meta.get("resourceVersion") or ""))
            meta = got.get("metadata") or {}
            if not meta.get("continue"):
                version = str(meta.get("resourceVersion") or "")
                break
            params["continue"] = str(meta["continue"])
        with self._lock:
            self._entries[scope] = entries
            self._listed.add(scope)
            if len(self._listed) == len(self.scopes):
                self.synced.set()
        return version

    def _watch(self, scope: str | None, version: str) -> str:
        params = {
            "watch": "true",
            "labelSelector": self.selector,
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        stream = self.kube.open_stream(f"{self._path(scope)}?{urlencode(params)}", WATCH_SECONDS + 30)
        with self._lock:
            self._streams[scope] = stream
        try:
            if stream.status == 410:
                raise _Gone
            if stream.status >= 400:
                raise RuntimeError(f"watch answered {stream.status}: {stream.data[:200]!r}")
            for line in stream:
                if self._stop.is_set():
                    break
                if line.strip():
                    version = self._apply(scope, json.loads(line), version)
        finally:
            with self._lock:
                self._streams.pop(scope, None)
            stream.release_conn()
        return version

    def _apply(self, scope: str | None, event: dict[str, Any], version: str) -> str:
        kind = event.get("type")
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone
            raise RuntimeError(f"watch error: {obj.get('message')}")
        version = str(meta.get("resourceVersion") or version)
        if kind == "BOOKMARK":
            return version
        key = _key(str(meta.get("namespace")), str(meta.get("name")))
        with self._lock:
            entries = self._entries.get(scope)
            if entries is None:
                return version
            if kind == "DELETED":
                entries.pop(key, None)
            elif kind in ("ADDED", "MODIFIED"):
                held = entries.get(key)
                if held is None or held.version != version:  # not our own write, put() has it already
                    entries[key] = OutputSecret.of(decode_data(obj), version)
        return version
