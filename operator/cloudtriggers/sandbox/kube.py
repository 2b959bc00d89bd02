"""An in-memory Kubernetes API for tests, the demo and the benchmark: kmock's emulator with its gaps
fixed, and a model of a real API server: where it accepts what a real one refuses, that is a bug.

kmock 0.8's stock ``KubernetesEmulator`` stores bodies exactly as posted, so kopf cannot run
against it end to end (gaps E2-E7 in /work/shared/reference/kopf-practice.md §2.5).
:class:`ClusterEmulator` takes over every state change and every read, keeping kmock only for
request parsing, discovery, the DSL dispatch (so ``emulator[...] << ...`` reactions still work)
and the ``objects`` store (so ``emulator.objects[...]`` still works for assertions).

It is pinned to kmock 0.8 internals: ``_handle``, ``_lock``, ``_objects``, ``_resources``,
``fallback``, ``_payloads`` and their ``K8sCriteria`` filters (for the dispatch fast path), and
``KubernetesScaffold``'s rendering of :class:`kmock.KubernetesError`.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import collections
import copy
import inspect
import json
import os
import random
import socket
import ssl
import string
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import kmock
import kubernetes.client
from kmock._internal import parsing
from kmock._internal.filtering import K8sCriteria

from ..apiserver import admission, objectmeta, typed
from ..apiserver.crd_validation import FieldError, invalid
from ..crd import build_crd
from . import collector, crds, namespaces, openapi
from .collector import Body, GarbageCollector, ObjKey, _meta
from .crds import CRDS, ApiError, group_resource
from .namespaces import NAMESPACES

if TYPE_CHECKING:  # only the TLS mode imports it (cryptography)
    from .pki import Pki

__all__ = [
    "TRIGGERS",
    "ClusterEmulator",
    "KubeServer",
    "declare_resources",
    "kube_client",
]

T = TypeVar("T")

TRIGGERS: Final = "cloudtriggers.io/v1alpha1/triggers"
LEASES: Final = kmock.resource("coordination.k8s.io/v1/leases")
VAPS: Final = kmock.resource("admissionregistration.k8s.io/v1/validatingadmissionpolicies")
VAP_BINDINGS: Final = kmock.resource("admissionregistration.k8s.io/v1/validatingadmissionpolicybindings")

# PATCH decides its patch type by the request's Content-Type, never by the body's shape
# (k8s.io/apimachinery/pkg/types/patch.go names them). Which ones a resource takes:
# apiserver/pkg/endpoints/installer.go (built-in kinds: the PATCH route's supportedTypes) and
# apiextensions-apiserver/pkg/apiserver/customresource_handler.go (ServeHTTP's supportedTypes for
# custom resources: no strategic merge patch, for there is no Go struct with patch strategies).
# application/apply-patch+cbor is only taken with the CBORServingAndStorage gate (alpha, off).
JSON_PATCH: Final = "application/json-patch+json"  # RFC 6902
MERGE_PATCH: Final = "application/merge-patch+json"  # RFC 7386
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"
APPLY_PATCH: Final = "application/apply-patch+yaml"  # server-side apply
_BUILTIN_PATCH_TYPES: Final = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)
_CUSTOM_PATCH_TYPES: Final = (JSON_PATCH, MERGE_PATCH, APPLY_PATCH)

# Fields that only the server sets; clients cannot change them through PATCH or PUT.
_SERVER_META: Final = (
    "uid",
    "name",
    "namespace",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
)


# Built-in kinds whose registry strategy gives them a metadata.generation (PrepareForCreate sets 1,
# PrepareForUpdate bumps it when the spec changes): the workload controllers (pkg/registry/apps,
# batch, core/replicationcontroller), policy's PodDisruptionBudget, networking's Ingress and
# NetworkPolicy, admissionregistration's webhook configurations and policies. Every other built-in
# kind (Secret, ConfigMap, Namespace, Event, Lease, ...) has none: its generation stays unset (0).
# Custom resources and CRDs have one too (_has_generation).
_GENERATION_KINDS: Final = frozenset(
    {
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("apps", "replicasets"),
        ("", "replicationcontrollers"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("policy", "poddisruptionbudgets"),
        ("networking.k8s.io", "ingresses"),
        ("networking.k8s.io", "networkpolicies"),
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
        ("admissionregistration.k8s.io", "validatingadmissionpolicies"),
        ("admissionregistration.k8s.io", "validatingadmissionpolicybindings"),
    }
)

_clock: tuple[int, str] = (-1, "")


def _now() -> str:
    """The time as metadata timestamps give it (whole seconds, UTC); formatted once a second."""
    global _clock
    second = int(time.time())
    if _clock[0] != second:
        _clock = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
    return _clock[1]


def _api_version(resource: kmock.resource) -> str:
    return f"{resource.group}/{resource.version}" if resource.group else str(resource.version)


def _error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    # Non-empty details keep kmock from attaching a server-side traceback to the Status body.
    return kmock.KubernetesError(
        status=status, reason=reason, message=message, details=details or {"causes": []}
    )


def _refusal(e: ApiError) -> kmock.KubernetesError:
    status = e.status
    return kmock.KubernetesError(
        status=status["code"],
        reason=status["reason"],
        message=status["message"],
        details=status.get("details") or {"causes": []},
    )


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock's parse_path, which fails (500) on /api/v1/namespaces and takes /api/v1/namespaces/<n>
    for a namespace prefix (E8): the namespace object, its /status and /finalize are resources here."""
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "api" and parts[2] == "namespaces":
        rest = parts[3:]
        if len(rest) <= 1 or (len(rest) == 2 and rest[1] in ("status", "finalize")):
            name = rest[0] if rest else None
            sub = rest[1] if len(rest) == 2 else None
            return parsing.ParsedPath("", parts[1], "namespaces", None, name, sub)
    return _kmock_parse_path(path)


_kmock_parse_path = parsing.parse_path
parsing.parse_path = _parse_path  # kmock's Request.parse looks it up on the module at each request


def reject_write(status: int = 503, message: str = "the write was rejected (fault injection)") -> None:
    """For ``ClusterEmulator.before_write``: answer the write with `status` and store nothing."""
    raise _error(status, "ServiceUnavailable" if status == 503 else "Conflict", message)


class FilterAnswer(Exception):
    """An answer of the API server's HTTP filters, before any handler: not a Status."""

    def __init__(self, status: int, text: str, headers: Mapping[str, str]) -> None:
        super().__init__(text)
        self.status, self.text, self.headers = status, text, dict(headers)


def throttle(retry_after: int = 1) -> None:
    """For ``ClusterEmulator.before_write``: answer as the API server's max-inflight and
    priority-and-fairness filters turn a request away (apiserver/pkg/server/filters/maxinflight.go
    tooManyRequests: Retry-After, then http.Error): 429, ``Retry-After`` in whole seconds, and a
    plain-text body, not a Status. Nothing is written."""
    raise FilterAnswer(429, "Too many requests, please try again later.\n", {"Retry-After": str(retry_after)})


def _gvr(resource: kmock.resource) -> str:
    """``v1/secrets``, ``cloudtriggers.io/v1alpha1/triggers``: as the rest of this module names them."""
    return f"{_api_version(resource)}/{resource.plural}"


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (kmock's own merge refuses dict-vs-scalar replacements)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result: Body = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _undecodable(value: Any, go_type: str) -> str:
    """Go's encoding/json error for a patch body (None: not JSON) that does not fit `go_type`."""
    if value is None:
        return "the body is not valid JSON"
    kinds = ((dict, "object"), (list, "array"), (bool, "bool"), (str, "string"))
    kind = next((name for cls, name in kinds if isinstance(value, cls)), "number")
    return f"json: cannot unmarshal {kind} into Go value of type {go_type}"


def _parse_selector(text: str) -> list[tuple[str, str, set[str]]]:
    """Parse a label selector into (key, operator, values); supports =, ==, !=, in, notin, k, !k."""
    terms: list[tuple[str, str, set[str]]] = []
    # Split on commas that are not inside the parentheses of set-based terms.
    depth, start, parts = 0, 0, []
    for idx, char in enumerate(text):
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(text[start:idx])
            start = idx + 1
    parts.append(text[start:])
    for raw_part in parts:
        part = raw_part.strip()
        if not part:
            continue
        if " notin " in part or " in " in part:
            op = "notin" if " notin " in part else "in"
            key, _, values = part.partition(f" {op} ")
            terms.append((key.strip(), op, {v.strip() for v in values.strip(" ()").split(",")}))
        elif "!=" in part:
            key, _, value = part.partition("!=")
            terms.append((key.strip(), "notin", {value.strip()}))
        elif "=" in part:
            key, _, value = part.replace("==", "=").partition("=")
            terms.append((key.strip(), "in", {value.strip()}))
        elif part.startswith("!"):
            terms.append((part[1:].strip(), "absent", set()))
        else:
            terms.append((part, "present", set()))
    return terms


def _match_labels(labels: Mapping[str, str], terms: Iterable[tuple[str, str, set[str]]]) -> bool:
    for key, op, values in terms:
        if op == "in" and labels.get(key) not in values:
            return False
        if op == "notin" and labels.get(key) in values:
            return False
        if op == "present" and key not in labels:
            return False
        if op == "absent" and key in labels:
            return False
    return True


def _match_fields(body: Mapping[str, Any], selector: str) -> bool:
    """Equality field selectors over dotted paths, e.g. ``metadata.name=x,status.phase!=y``."""
    for raw_term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in raw_term
        path, _, expected = raw_term.replace("!=", "=").replace("==", "=").partition("=")
        value: Any = body
        for part in path.strip().split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if (str(value) == expected.strip() if value is not None else expected.strip() == "") == negate:
            return False
    return True


@attrs.frozen(eq=False)
class _Filter:
    """What a LIST or WATCH request selects: namespace, name and label/field selectors."""

    resource: kmock.resource
    namespace: str | None
    name: str | None
    labels: list[tuple[str, str, set[str]]]
    fields: str

    @classmethod
    def of(cls, request: kmock.Request) -> _Filter:
        assert request.resource is not None
        return cls(
            resource=request.resource,
            namespace=request.namespace,
            name=request.name,
            labels=_parse_selector(request.params.get("labelSelector", "")),
            fields=request.params.get("fieldSelector", ""),
        )

    def __call__(self, resource: kmock.resource, body: Mapping[str, Any]) -> bool:
        meta = body.get("metadata", {})
        return bool(
            resource == self.resource
            and (self.namespace is None or meta.get("namespace") == self.namespace)
            and (self.name is None or meta.get("name") == self.name)
            and _match_labels(meta.get("labels") or {}, self.labels)
            and _match_fields(body, self.fields)
        )


def _as_seen(matches: _Filter, resource: kmock.resource, event: Body, old: Body | None) -> Body | None:
    """The event as a watch with this filter gets it, as the API server's watchers send it
    (apiserver/pkg/storage/etcd3/watcher.go, transform; cacher/cache_watcher.go, convertToWatchEvent):
    a modified object that starts matching the selector arrives as ADDED, one that stops matching as
    DELETED with its previous content, one that matches neither before nor after not at all."""
    now = matches(resource, event["object"])
    if event["type"] != "MODIFIED" or old is None:
        return event if now else None
    before = matches(resource, old)
    if now and before:
        return event
    if now:
        return {"type": "ADDED", "object": event["object"]}
    if before:
        # The previous content at the new resourceVersion, so that a resumed watch starts after it.
        meta = {**old["metadata"], "resourceVersion": event["object"]["metadata"]["resourceVersion"]}
        return {"type": "DELETED", "object": {**old, "metadata": meta}}
    return None


_END_OF_STREAM: Body = {"type": "_END"}  # queued to a watcher: its stream ends (a dropped watch)


@attrs.define(eq=False)
class _Watcher:
    matches: _Filter
    queue: asyncio.Queue[Body] = attrs.field(factory=asyncio.Queue)
    muted: bool = False  # a silent watch: open, but receiving nothing


_REQUEST_ONLY: Final = inspect.Signature(
    [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
)


def _presign(response: Any) -> None:
    """kmock calls inspect.signature on a callable payload at every request, to know whether to pass
    the request; for a bound method that rebuilds the signature each time (9 us, ~2 % of the
    emulator's CPU at 1,000 Triggers). A function carrying its signature answers at once."""
    method = response.payload
    if not callable(method) or hasattr(method, "__signature__"):
        return

    def serve(request: kmock.Request) -> Any:
        return method(request)

    serve.__signature__ = _REQUEST_ONLY  # type: ignore[attr-defined]
    object.__setattr__(response, "payload", serve)  # kmock's Response is a frozen attrs class


@attrs.define(kw_only=True)
class ClusterEmulator(GarbageCollector, kmock.KubernetesEmulator):
    """kmock's KubernetesEmulator behaving like a real API server where kopf and the operator care.

    * Server-side metadata (E2, E3): a global ``resourceVersion`` counter bumped on every write
      (deletions too), ``uid``, ``namespace`` from the URL, ``creationTimestamp``,
      ``generation`` for the kinds that have one (1 on create, +1 when a main-endpoint PATCH/PUT
      changes a custom resource outside its metadata or a built-in's ``spec``, +1 when a deletion
      first marks it), a name from
      ``generateName``, ``apiVersion``/``kind``; a Secret's ``stringData`` is folded into ``data``.
    * PATCH takes its patch type from the Content-Type, as the API server does: JSON patch, JSON
      merge patch, strategic merge patch (built-in kinds only, approximated by a merge patch);
      anything else, or a strategic merge patch of a custom resource, is 415 (``_patch_type``).
    * Writes (E4): JSON patches are applied to a copy and stored only if every op succeeds, so a
      failing ``test`` op (or any other failing op) answers 422 ``Invalid`` with nothing applied, as
      the real API server does; ``metadata.resourceVersion`` in a merge patch or PUT body is an
      optimistic-lock precondition (409 ``Conflict``); no-op writes keep the resourceVersion and
      emit no event; PUT (replace) is supported; writes of undeclared resources answer 404.
    * Status subresource (E5), for resources declared with ``subresources={'status'}``: the main
      endpoint keeps the stored ``.status`` (also on create), ``/status`` changes only ``.status``.
      The patch is applied whole and then the other part is restored, which is what the API
      server's update strategies do.
    * Deletion: objects with finalizers get ``deletionTimestamp`` and are removed once the last
      finalizer goes; objects without finalizers are removed at once. A removed object's dependents
      (``metadata.ownerReferences`` naming its uid; same namespace, any namespace for a cluster-scoped
      owner) are deleted the same way, recursively, unless another owner is still alive (then only
      the dangling reference is dropped), as Kubernetes' garbage collector does in background mode.
      A DELETE's propagationPolicy (body or query) adds the collector's finalizer as store.go does,
      and the collector (sandbox/collector.py) acts on it: Foreground deletes the dependents first,
      holding the owner only for those with blockOwnerDeletion; Orphan strips the owner's
      references. A DELETE's preconditions are checked.
    * The API server's own rules, in their own modules: CRDs are validated, served and deleted as
      apiextensions-apiserver does it, and custom resources are pruned, defaulted and validated
      against their CRD (sandbox/crds.py); every write's metadata and a Secret's data are checked as
      apimachinery and the core strategies check them (apiserver/objectmeta.py); namespaces, their
      admission and their controller are sandbox/namespaces.py (``namespace_seed``,
      ``namespace_requeue``); an object being deleted takes no new finalizer; a dependent whose
      owners are all absent is collected; ``/openapi/v3`` tells kubectl that the server validates
      fields (sandbox/openapi.py). The namespaces every cluster has (default, kube-system,
      kube-public, kube-node-lease) exist from the start.
    * LIST (E6) returns the current resourceVersion, honours label/field selectors and
      ``limit``/``continue``.
    * WATCH (E6, E7): without ``resourceVersion`` (or with ``0``) it sends ADDED for the current
      objects, with ``resourceVersion=N`` it replays the logged events after N (``410 Gone`` if the
      log no longer reaches back to N). The watcher is registered under the same lock as the
      snapshot, so no event falls between them. ``timeoutSeconds`` ends the stream,
      ``sendInitialEvents=true`` ends the initial ADDED events with a BOOKMARK, and
      ``allowWatchBookmarks=true`` gets one every ``bookmark_interval`` (a minute, as the watch cache).
    """

    #: How many past versions each object keeps in ``objects[...].history`` (None: unlimited).
    history_limit: int | None = 100
    #: How many watch events are kept for ``?resourceVersion=N`` resumption.
    event_log_limit: int = 10_000
    #: Seconds between the BOOKMARK events of a watch that allows them (the watch cache's, about a
    #: minute: apiserver/pkg/storage/cacher, cache_watcher.go nextBookmarkTime).
    bookmark_interval: float = 60.0

    _rv: int = attrs.field(default=0, init=False)
    _event_log: collections.deque[tuple[int, kmock.resource, Body, Body | None]] = attrs.field(
        factory=collections.deque, init=False
    )
    _event_log_floor: int = attrs.field(default=0, init=False)  # events up to here were dropped
    _watchers: set[_Watcher] = attrs.field(factory=set, init=False)
    _results: dict[kmock.Request, Body] = attrs.field(factory=dict, init=False)
    #: kmock matches every request against every stub by re-filtering all recorded requests, which
    #: makes a long run quadratic; nothing here uses the old requests, so only the newest are kept.
    request_history_limit: int = 1
    #: Requests served, by User-Agent (what the benchmark counts once the history is trimmed).
    requests_by_agent: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)
    #: Called after each write is applied, before it is answered (request, resulting object): fault
    #: tests use it to kill the operator right after a given write reached the store.
    after_write: Callable[[kmock.Request, Body], None] | None = attrs.field(default=None, init=False)
    #: Called before each write; an exception it raises (``reject_write()``) is the answer instead.
    before_write: Callable[[kmock.Request], None] | None = attrs.field(default=None, init=False)

    #: The namespace controller's deletion order: None draws a seed per deletion (recorded in
    #: ``namespace_orders`` with the order, so a failing order can be replayed with that seed).
    namespace_seed: int | None = None
    #: Scales the namespace controller's requeue (8 s on a real cluster) while content remains.
    namespace_requeue: float = 1.0
    namespace_orders: builtins.list[tuple[str, int, builtins.list[str]]] = attrs.field(
        factory=list, init=False
    )
    #: What the emulated controllers (namespace, CRD cleanup, garbage collector) failed with.
    controller_errors: builtins.list[BaseException] = attrs.field(factory=list, init=False)

    _builtin: tuple[Any, ...] = attrs.field(default=(), init=False)
    _routes: dict[Any, Any] = attrs.field(factory=dict, init=False)
    _crds: dict[kmock.resource, ObjKey] = attrs.field(factory=dict, init=False)  # served -> its CRD
    # ValidatingAdmissionPolicyBindings ever stored (each looked up live when a request is admitted).
    _bindings: set[ObjKey] = attrs.field(factory=set, init=False)
    _tasks: set[asyncio.Task[None]] = attrs.field(factory=set, init=False)
    # Indexes of the live objects for the garbage collector: by uid, and dependents by owner uid.
    _by_uid: dict[str, ObjKey] = attrs.field(factory=dict, init=False)
    _dependents: dict[str, set[ObjKey]] = attrs.field(factory=dict, init=False)
    _indexed: dict[ObjKey, tuple[str, frozenset[str]]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock guesses no action for PUT, so without this a replace would fall through to 404.
        put = self.fallback[kmock.method.PUT] << self._serve_result
        # kmock finds a request's reaction by re-running every reaction's filter on it, which is
        # most of the emulator's time under load. While no reaction was added to these built-in
        # ones, a resource request's reaction is known from its action alone (the discovery
        # reactions before them only match paths without a resource plural).
        self._builtin = tuple(self._payloads)
        for reaction in self._builtin:
            criteria = getattr(reaction._source, "criteria", None)
            if isinstance(criteria, K8sCriteria) and criteria.action is not None:
                self._routes[criteria.action] = reaction
        self._routes[None] = put
        for reaction in {id(r): r for r in self._routes.values()}.values():
            _presign(reaction.response)

    # ---- request entry point ----------------------------------------------------------------

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        self.requests_by_agent[request.headers.get("User-Agent", "")] += 1
        if request.url.path.startswith("/openapi/v3"):
            return self._serve_openapi(request.url.path)
        if "protobuf" in request.headers.get("Content-Type", ""):
            # A real server takes protobuf too; this one says so rather than failing on the body.
            message = (
                "the emulated API server accepts JSON bodies only, not application/vnd.kubernetes.protobuf"
            )
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 415}
            return aiohttp.web.json_response(
                {**body, "reason": "UnsupportedMediaType", "message": message}, status=415
            )
        if len(self._requests) > 2 * self.request_history_limit:
            # The request being served is the newest and stays; ids are only informational.
            del self._requests[: -self.request_history_limit]
        # Apply every state change here, under one lock hold, and skip KubernetesEmulator._handle:
        # its check-then-apply spans two lock holds and it stores bodies as posted.
        if request.resource is not None and self._is_write(request):
            async with self._lock:
                if self.before_write is not None:
                    try:
                        self.before_write(request)
                    except FilterAnswer as e:
                        return aiohttp.web.Response(
                            status=e.status, text=e.text, headers=e.headers, content_type="text/plain"
                        )
                self._results[request] = await self._write(request)
                if self.after_write is not None:
                    self.after_write(request, self._results[request])
        try:
            route = self._route(request)
            response: aiohttp.web.StreamResponse
            if route is not None:
                response = await route.response(request)
            else:
                response = await super(kmock.KubernetesEmulator, self)._handle(request)
            result = self._results.get(request)
            if result is not None and response.status == 200 and not response.prepared:
                # The kubernetes client deserializes a create only from 201 (its response map has
                # no 200 there).
                if request.action == kmock.action.CREATE:
                    response.set_status(201)
                elif (
                    request.action == kmock.action.DELETE
                    and _meta(result).get("deletionTimestamp")
                    and collector.delete_options(request.data, request.params).get("orphanDependents")
                    is False
                ):
                    # endpoints/handlers/delete.go: 202 only for an object not deleted at once whose
                    # DELETE set orphanDependents=false (kept so for old clients); else 200.
                    response.set_status(202)
            return response
        finally:
            self._results.pop(request, None)

    def _serve_openapi(self, path: str) -> aiohttp.web.StreamResponse:
        docs = openapi.documents((r, self._resources[r]) for r in self._resources)
        gv = path.removeprefix("/openapi/v3").strip("/")
        if not gv:
            return aiohttp.web.json_response(openapi.root(docs))
        if gv not in docs:
            return aiohttp.web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 404,
                    "reason": "NotFound",
                },
                status=404,
            )
        return aiohttp.web.json_response(docs[gv])

    def _route(self, request: kmock.Request) -> Any:
        """The built-in reaction that kmock's dispatch would pick, when that is sure; else None."""
        resource = request.resource
        if resource is None or not resource.plural or not resource.version:
            return None  # discovery (/apis/<group>[/<version>]) is served by kmock's own reactions
        if len(self._payloads) != len(self._builtin):
            return None
        if any(a is not b for a, b in zip(self._payloads, self._builtin, strict=True)):
            return None
        if request.action is None:
            return self._routes[None] if request.method == kmock.method.PUT else None
        return self._routes.get(request.action)

    @staticmethod
    def _is_write(request: kmock.Request) -> bool:
        if request.action in (kmock.action.CREATE, kmock.action.UPDATE):
            return True
        if request.action == kmock.action.DELETE and request.name is not None:
            return True
        return request.method == kmock.method.PUT and request.name is not None

    async def _write(self, request: kmock.Request) -> Body:
        assert request.resource is not None
        resource = request.resource
        declared = self._declared(resource)
        if declared is None:
            raise kmock.KubernetesResourceNotFoundError()
        if request.subresource is not None and request.subresource not in declared.subresources:
            raise _error(404, "NotFound", f"the server could not find {request.url.path}")
        # PatchResource checks the Content-Type first, before it looks the object up (patch.go).
        patch_type = self._patch_type(request) if request.method == kmock.method.PATCH else None
        if request.method == kmock.method.PUT and isinstance(request.data, dict):
            self._decode(resource, request.data)  # UpdateResource decodes before it looks the object up
        try:
            if request.action == kmock.action.CREATE:
                return await self._create(request)
            key: ObjKey = (resource, self._namespace_of(resource, request.namespace), request.name or "")
            obj = self._live(key)
            if obj is None:
                raise _error(404, "NotFound", f'{group_resource(resource)} "{key[2]}" not found', name=key[2])
            if request.action == kmock.action.DELETE:
                options = collector.delete_options(request.data, request.params)
                if (refused := collector.refused(options)) is not None:
                    raise _error(422, "Invalid", refused)
                self._check_delete_preconditions(key, obj.raw, options.get("preconditions") or {})
                return await self._delete(key, options)
            old = obj.raw
            new = self._apply_write(request, key[2], old, patch_type)
            strict = request.params.get("fieldValidation") == "Strict"
            return await self._update(key, old, new, subresource=request.subresource, strict=strict)
        except ApiError as e:
            raise _refusal(e) from None

    def _patch_type(self, request: kmock.Request) -> str:
        """The patch type of a PATCH, as PatchResource reads it (kubernetes/kubernetes
        staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go): the Content-Type up to its
        first ``;`` (so ``; charset=utf-8`` is ignored), compared as it is with the types the
        resource takes; anything else, a missing Content-Type too, is 415 UnsupportedMediaType."""
        # aiohttp hands the names of known headers over in their canonical case, whatever was sent
        # (test_header_names_are_case_insensitive), so kmock's plain dict finds this one as is.
        content_type = request.headers.get("Content-Type", "")
        if (idx := content_type.find(";")) > 0:
            content_type = content_type[:idx]
        custom = request.resource in self._crds  # served from a CustomResourceDefinition
        accepted = _CUSTOM_PATCH_TYPES if custom else _BUILTIN_PATCH_TYPES
        if content_type in accepted:
            return content_type
        if custom:
            # PatchResource's own refusal: negotiation.NewUnsupportedMediaTypeError(patchTypes)
            # (apiserver/pkg/endpoints/handlers/negotiation/errors.go).
            message = (
                "the body of the request was in an unknown format - accepted media types include: "
                + ", ".join(accepted)
            )
        else:
            # A built-in kind's PATCH route is a go-restful route that Consumes() its supported
            # types, so go-restful refuses first with "415: Unsupported Media Type" (jsr311.go),
            # which the apiserver's serviceErrorHandler wraps in a Status
            # (apimachinery/pkg/api/errors NewGenericServerResponse keeps that message for 415).
            message = "415: Unsupported Media Type"
        raise _error(415, "UnsupportedMediaType", message)

    def _apply_write(self, request: kmock.Request, name: str, old: Body, patch_type: str | None) -> Body:
        """The object after a PUT (patch_type None) or a PATCH of `patch_type` (see _patch_type)."""
        assert request.resource is not None
        resource = request.resource
        data = request.data
        result: Body
        if request.method == kmock.method.PUT:
            if not isinstance(data, dict):
                raise _error(400, "BadRequest", "the body of a replace must be a JSON object")
            if data.get("metadata", {}).get("name", name) != name:
                raise _error(400, "BadRequest", "the name of the object does not match the URL", name=name)
            self._check_precondition(resource, data, name, old, replace=True)
            result = copy.deepcopy(data)
            return result
        if data is None and request.text.strip() == "null":
            # kmock parses a JSON `null` and a body that is not JSON alike (data None); Go decodes
            # `null` into an empty JSON patch and an empty strategic merge patch map, both no-ops.
            data = [] if patch_type == JSON_PATCH else {} if patch_type == STRATEGIC_MERGE_PATCH else None
        if patch_type in (APPLY_PATCH, None):
            # Server-side apply (field managers, conflicts, `force`, the required fieldManager) is
            # not modelled: a JSON body is applied by its shape, as before Content-Types counted here.
            if isinstance(data, list):
                patch_type = JSON_PATCH
            elif isinstance(data, dict):
                patch_type = MERGE_PATCH
            else:
                raise _error(
                    400, "BadRequest", "the patch must be a JSON list (JSON patch) or object (merge patch)"
                )
        if patch_type == JSON_PATCH:
            if not isinstance(data, list):
                # patch.go applyJSPatch: jsonpatch.DecodePatch fails -> errors.NewBadRequest.
                raise _error(400, "BadRequest", _undecodable(data, "jsonpatch.Patch"))
            try:
                # Applied to a copy: a failing op (e.g. kopf's `test` of resourceVersion) stores nothing.
                result = jsonpatch.JsonPatch(data).apply(old)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
                # kopf postpones the change on 422 but blindly retries a 5xx (E4).
                raise _error(422, "Invalid", f"the JSON patch cannot be applied: {exc}", name=name) from exc
            self._check_precondition(resource, result, name, old)  # a patched resourceVersion, too
            self._check_name(result, name, request.namespace)
            return result
        if patch_type == STRATEGIC_MERGE_PATCH:
            # Built-in kinds only (_patch_type refuses it for custom resources). Approximated by a
            # JSON merge patch, which shares the strategic merge patch's map semantics: keys merge
            # recursively and a `null` value deletes the key. Not modelled: lists merged by their
            # patchMergeKey / patchStrategy:"merge" (e.g. metadata.finalizers, ownerReferences,
            # containers; here a list replaces the old one, as in a merge patch) and the `$patch`,
            # `$retainKeys`, `$setElementOrder/...` and `$deleteFromPrimitiveList/...` directives.
            if not isinstance(data, dict):
                # patch.go strategicPatchObject: unmarshalling into a map fails -> NewBadRequest.
                raise _error(400, "BadRequest", _undecodable(data, "map[string]interface {}"))
        elif isinstance(data, list):
            # RFC 7386: a merge patch that is not an object replaces the whole target, so the result
            # is this array, which does not decode into an object (patch.go applyPatchToCurrentObject:
            # errors.NewInvalid with an empty GroupKind, hence the message's leading ` ""`).
            value = json.dumps(data, separators=(",", ":"))
            detail = f'Invalid value: "{value}": a merge patch that is not a JSON object replaces the object'
            raise _error(
                422,
                "Invalid",
                f' "" is invalid: patch: {detail}',
                name="",
                causes=[{"reason": "FieldValueInvalid", "message": detail, "field": "patch"}],
            )
        elif not isinstance(data, dict):
            # gopkg.in/evanphx/json-patch.v4 MergePatch: errBadJSONPatch -> errors.NewBadRequest.
            raise _error(400, "BadRequest", "Invalid JSON Patch")
        self._check_precondition(resource, data, name, old)
        result = _merge_patch(old, data)
        self._check_name(result, name, request.namespace)
        return result

    @staticmethod
    def _check_name(result: Body, name: str, namespace: str | None) -> None:
        """patch.go: a patch may not rename the object or move it (checkName, then
        EnsureObjectNamespaceMatchesRequestNamespace): 400."""
        meta = _meta(result)
        if meta.get("name", name) != name:
            message = (
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
            raise _error(400, "BadRequest", message, name=name)
        if namespace is not None and meta.get("namespace", namespace) != namespace:
            message = "the namespace of the provided object does not match the namespace sent on the request"
            raise _error(400, "BadRequest", message, name=name)

    def _check_precondition(
        self,
        resource: kmock.resource,
        data: Mapping[str, Any],
        name: str,
        old: Body,
        *,
        replace: bool = False,
    ) -> None:
        """store.go Update: the written object's resourceVersion is the precondition (409 when it is
        not the stored one); a replace without one is refused by the kinds whose strategy does not
        AllowUnconditionalUpdate (custom resources, CRDs, Leases): 422."""
        wanted = (data.get("metadata") or {}).get("resourceVersion")
        if replace and not wanted and (resource in self._crds or resource in (CRDS, LEASES)):
            # NewInvalid with the resource as the kind (store.go's TODO says why).
            error = FieldError(
                "Invalid value", "metadata.resourceVersion", "must be specified for an update", 0
            )
            raise ApiError(invalid(resource.group or "", str(resource.plural), name, [error]))
        if wanted and wanted != _meta(old).get("resourceVersion"):
            raise _error(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {group_resource(resource)} "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                name=name,
            )

    # ---- state changes (all called under self._lock) ----------------------------------------

    async def _create(self, request: kmock.Request) -> Body:
        assert request.resource is not None
        resource = request.resource
        info = self._info(resource)
        if not isinstance(request.data, dict):
            raise _error(400, "BadRequest", "the body of a create must be a JSON object")
        self._decode(resource, request.data)
        body: Body = copy.deepcopy(request.data)
        meta: Body = body.setdefault("metadata", {})
        if request.namespace is not None and meta.get("namespace", request.namespace) != request.namespace:
            raise _error(400, "BadRequest", "the namespace of the object does not match the URL")
        namespace = self._namespace_of(resource, request.namespace or meta.get("namespace"))
        if info.namespaced and namespace is None:
            raise _error(400, "BadRequest", "a namespace is required for a namespaced resource")
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise _error(422, "Invalid", "metadata.name or metadata.generateName is required")
            while True:
                alphabet = string.ascii_lowercase + string.digits
                name = objectmeta.generated_name(prefix, "".join(random.choices(alphabet, k=5)))
                if self._live((resource, namespace, name)) is None:
                    break
            meta["name"] = name
        key: ObjKey = (resource, namespace, meta["name"])
        if self._live(key) is not None:
            what = group_resource(resource)
            raise _error(409, "AlreadyExists", f'{what} "{key[2]}" already exists', name=key[2])

        for field in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        if namespace is None:
            meta.pop("namespace", None)
        else:
            meta["namespace"] = namespace
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if self._has_generation(resource):
            meta["generation"] = 1
        meta["resourceVersion"] = self._next_rv()
        body["apiVersion"] = _api_version(resource)
        body["kind"] = info.kind or body.get("kind") or str(resource.plural).capitalize()
        if "status" in info.subresources:
            body.pop("status", None)  # the API server ignores status on create with the subresource
        self._normalise(resource, body)
        if namespace is not None:
            namespaces.admit_create(resource, namespace, body, self._namespace(namespace))
        body = self._admit(resource, body, None, strict=request.params.get("fieldValidation") == "Strict")

        return self._add(key, body)

    def _add(self, key: ObjKey, body: Body) -> Body:
        """Store a new object whose server-side metadata is set: its history, ADDED, the indexes."""
        if key in self._objects:
            self._objects[key].create(body)  # re-creation after a deletion continues the history
        else:
            self._objects[key] = body
        self._emit(key[0], "ADDED", body)
        self._reindex(key, body)
        self._stored(key, body)
        return body

    async def _update(
        self, key: ObjKey, old: Body, new: Body, *, subresource: str | None, strict: bool = False
    ) -> Body:
        resource = key[0]
        info = self._info(resource)
        if not isinstance(new, dict):
            raise _error(422, "Invalid", "the patched object is not a JSON object", name=key[2])
        # A merge patch shares unchanged subtrees with the stored version. Stored bodies are never
        # changed in place, so only the levels changed below are copied (the top and metadata); a
        # custom resource's admission then builds a fresh tree of what it keeps. (Deep copies of the
        # new and the old object were about a seventh of the server's CPU on a Trigger write.)
        old_meta = _meta(old)
        if "status" in info.subresources and subresource == "status":
            new = dict(old, status=new.get("status"))
            if new["status"] is None:
                del new["status"]
        else:
            new = dict(new)
            if "status" in info.subresources:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = old["status"]
        if isinstance(new.get("metadata"), dict):
            new["metadata"] = dict(new["metadata"])
        new_meta: Body = new.setdefault("metadata", {})
        if not isinstance(new_meta, dict):
            raise _error(422, "Invalid", "metadata must be an object", name=key[2])
        for field in _SERVER_META:
            new_meta.pop(field, None)
            if field in old_meta:
                new_meta[field] = old_meta[field]
        for field in ("apiVersion", "kind"):
            if field in old:
                new[field] = old[field]
        self._normalise(resource, new)
        if resource == NAMESPACES:
            # The namespace strategies: spec.finalizers change only through /finalize, and only they.
            finalizers = (new.get("spec") or {}).get("finalizers") if subresource == "finalize" else None
            if subresource == "finalize":
                new = copy.deepcopy(old)
                new.setdefault("spec", {})["finalizers"] = list(finalizers or [])
                new_meta = new["metadata"]
            else:
                new["spec"] = dict(new.get("spec") or {})
                new["spec"]["finalizers"] = (old.get("spec") or {}).get("finalizers") or []
        _check_finalizers(info.kind or str(resource.plural), key[2], old_meta, new_meta)
        new = self._admit(resource, new, old, strict=strict, subresource=subresource)
        new_meta = new["metadata"]
        if new == old:
            return old  # a no-op write changes nothing, like in the real API server

        if subresource is None and self._has_generation(resource) and self._spec_changed(resource, old, new):
            new_meta["generation"] = old_meta.get("generation", 0) + 1
        new_meta["resourceVersion"] = self._next_rv()
        gone = resource != NAMESPACES or namespaces.finalized(new)
        if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers") and gone:
            return await self._remove(key, new)  # the last finalizer is gone
        self._store(key, new)
        self._emit(resource, "MODIFIED", new, old)
        self._reindex(key, new)
        self._stored(key, new)
        return new

    def _check_delete_preconditions(self, key: ObjKey, obj: Body, preconditions: Mapping[str, Any]) -> None:
        """DeleteOptions.preconditions (store.go Delete): uid and resourceVersion must match, else 409."""
        meta = _meta(obj)
        for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            want = preconditions.get(field)
            if want is not None and want != meta.get(field):
                what = group_resource(key[0])
                message = (
                    f'Operation cannot be fulfilled on {what} "{key[2]}": Precondition failed: '
                    f"{label} in precondition: {want}, {label} in object meta: {meta.get(field)}"
                )
                raise _error(409, "Conflict", message, name=key[2])

    async def _delete(self, key: ObjKey, options: Mapping[str, Any] | None = None) -> Body:
        """A DELETE: at once, or (finalizers left, the GC's included) marked as being deleted."""
        obj = self._live(key)
        assert obj is not None
        body = copy.deepcopy(obj.raw)
        resource = key[0]
        gc = resource not in (NAMESPACES, CRDS)  # both have deletions of their own
        if gc:
            before = _meta(body).get("finalizers") or []
            after = collector.deletion_finalizers(before, options or {})
            if after != before:
                body["metadata"]["finalizers"] = after
        if _meta(obj.raw).get("deletionTimestamp"):
            # Already being deleted: a custom resource or a Secret has no graceful deletion, so a
            # new policy still changes the GC's finalizers (updateForGracefulDeletionAndFinalizers).
            if body == obj.raw:
                return body
            body["metadata"]["resourceVersion"] = self._next_rv()
            self._store(key, body)
            self._emit(resource, "MODIFIED", body, obj.raw)
            self._reindex(key, body)
            self._propagate(key, body)
            return body
        if resource == NAMESPACES:
            namespaces.admit_delete(key[2])
            namespaces.mark_terminating(body)
        elif resource == CRDS:
            body["metadata"]["finalizers"] = [*_meta(body).get("finalizers", []), crds.CLEANUP_FINALIZER]
        if not _meta(body).get("finalizers") and not (
            resource == NAMESPACES and not namespaces.finalized(body)
        ):
            return await self._remove(key, body)
        # store.go markAsDeleting: the first deletionTimestamp bumps a generation the object has.
        if _meta(body).get("generation"):
            body["metadata"]["generation"] += 1
        body["metadata"]["deletionTimestamp"] = _now()
        body["metadata"]["deletionGracePeriodSeconds"] = 0
        if resource == CRDS:
            crds.set_crd_status(body, obj.raw, _now())
        body["metadata"]["resourceVersion"] = self._next_rv()
        self._store(key, body)
        self._emit(resource, "MODIFIED", body, obj.raw)
        if resource == NAMESPACES:
            self._spawn(self._finalize_namespace(key[2]))
        elif resource == CRDS:
            self._spawn(self._clean_up_crd(key))
        else:
            self._propagate(key, body)
        return body

    async def _remove(self, key: ObjKey, body: Body) -> Body:
        """Remove the object for good, then garbage-collect its dependents."""
        body = copy.deepcopy(body)
        body.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
        # Gone from storage, as from etcd: only the watch cache's DELETED event tells of it. (kmock's
        # soft delete kept every removed object and its versions: a long-running emulator grew and
        # its lists, watches and namespace passes slowed down with every object ever deleted.)
        del self._objects[key]
        self._emit(key[0], "DELETED", body)
        self._reindex(key, None)
        if key[0] == CRDS:
            for resource, _ in crds.served(body):
                self._crds.pop(resource, None)
                if resource in self._resources:
                    del self._resources[resource]
        if _meta(body).get("uid"):
            await self._collect_dependents(key[1], body["metadata"]["uid"])
        return body

    # ---- what the API server checks, and what its controllers do (sandbox/crds.py, namespaces.py) --

    def _namespace(self, name: str) -> Body | None:
        obj = self._live((NAMESPACES, None, name))
        return None if obj is None else obj.raw

    def _admit(
        self,
        resource: kmock.resource,
        body: Body,
        old: Body | None,
        *,
        strict: bool,
        subresource: str | None = None,
    ) -> Body:
        """The object to store after the API server's own checks of this kind, or ApiError."""
        if resource == NAMESPACES and old is None:
            namespaces.prepare_create(body)
        elif resource == CRDS:
            if subresource is None:
                crds.admit_crd(body, old)
            crds.set_crd_status(body, old, _now())
        elif resource in self._crds:
            crd = self._objects[self._crds[resource]].raw
            status_write = subresource == "status"
            body = crds.admit_custom_resource(
                crd, resource, body, old, strict=strict, status_write=status_write
            )
        self._validate_meta(resource, body, old)
        if subresource is None and self._bindings:
            self._validating_policies(resource, body, old)
        return body

    def _decode(self, resource: kmock.resource, body: Body) -> None:
        """A built-in kind's body decoded into its Go type: a time or a Secret's bytes that do not
        decode are a 400 (apiserver/typed.py); a custom resource is decoded as unstructured."""
        if resource in self._crds:
            return
        group, plural = str(resource.group or ""), str(resource.plural)
        if (message := typed.decode_error(group, plural, str(resource.version), body)) is not None:
            raise _error(400, "BadRequest", message)

    def _validate_meta(self, resource: kmock.resource, body: Body, old: Body | None) -> None:
        """The metadata rules of every write, and a Secret's own (apiserver/objectmeta.py). A custom
        resource's name rule is resources.admit's, a namespace's namespaces.prepare_create's; a CRD's
        metadata is crd_validation's."""
        if resource == CRDS:
            return
        group, plural = str(resource.group or ""), str(resource.plural)
        custom = resource in self._crds
        name_fn = (
            objectmeta.path_segment_name
            if custom or resource == NAMESPACES
            else objectmeta.name_rule(group, plural)
        )
        errors = objectmeta.validate_meta(body, old, name_fn, core=not group and not custom)
        if not group and plural == "secrets":
            errors += objectmeta.validate_secret(body, old)
        elif not group and plural == "events":
            errors += objectmeta.validate_event(body)
        elif group == "coordination.k8s.io" and plural == "leases":
            errors += objectmeta.validate_lease(body)
        if errors:
            kind = self._info(resource).kind or plural
            raise ApiError(invalid(group, kind, str(_meta(body).get("name") or ""), errors))

    def _validating_policies(self, resource: kmock.resource, body: Body, old: Body | None) -> None:
        """ValidatingAdmissionPolicies, after the object's own validation, as the API server runs
        them (apiserver/admission.py): the first denial answers, 403 Forbidden."""
        meta = _meta(body)
        ns = self._namespace(str(meta.get("namespace"))) if meta.get("namespace") else None
        operation = "CREATE" if old is None else "UPDATE"
        for key in sorted(self._bindings, key=lambda k: k[2]):
            binding = self._live(key)
            if binding is None:
                continue
            policy = self._live((VAPS, None, str((binding.raw.get("spec") or {}).get("policyName"))))
            if policy is None or "Deny" not in (
                (binding.raw.get("spec") or {}).get("validationActions") or []
            ):
                continue
            args = (str(resource.group or ""), str(resource.version), str(resource.plural), operation, ns)
            if not admission.applies(policy.raw, binding.raw, *args):
                continue
            denied = admission.denials(policy.raw, binding.raw, body, ns, old)
            if denied:
                what = f"{resource.plural}.{resource.group}" if resource.group else str(resource.plural)
                message = f"{what} {json.dumps(str(meta.get('name', '')))} is forbidden: {denied[0]}"
                details = {
                    "name": meta.get("name", ""),
                    "group": resource.group or "",
                    "kind": resource.plural,
                }
                raise ApiError(crds.status_body(403, "Forbidden", message, details))

    def _stored(self, key: ObjKey, body: Body) -> None:
        """After a create or update is stored: serve a CRD's resources; collect a dangling dependent."""
        if key[0] == CRDS:
            for resource, info in crds.served(body):
                self._resources[resource] = info
                self._crds[resource] = key
        elif key[0] == VAP_BINDINGS:
            self._bindings.add(key)
        refs = _meta(body).get("ownerReferences") or []
        dangling = not any(ref.get("uid") in self._by_uid for ref in refs)
        if refs and dangling and not _meta(body).get("deletionTimestamp"):
            # garbagecollector.attemptToDeleteItem: every owner is absent (by uid), so it goes.
            self._spawn(self._collect(key, _meta(body)["uid"]))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(self._guarded(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception as e:  # kept for the tests: a controller must never fail silently
            self.controller_errors.append(e)

    async def _finalize_namespace(self, name: str) -> None:
        """The namespace controller's deletion of a namespace's content (see sandbox/namespaces.py)."""
        seed = self.namespace_seed if self.namespace_seed is not None else random.randrange(2**32)
        rng = random.Random(seed)
        while True:
            async with self._lock:
                ns = self._namespace(name)
                if ns is None or not namespaces.terminating(ns):
                    return
                order = self._namespaced_resources()
                rng.shuffle(order)
                self.namespace_orders.append((name, seed, [_gvr(r) for r in order]))
            for resource in order:
                async with self._lock:
                    keys = [k for k in self._objects if k[0] == resource and k[1] == name and self._live(k)]
                for key in keys:
                    async with self._lock:
                        obj = self._live(key)
                        if obj is not None and not _meta(obj.raw).get("deletionTimestamp"):
                            await self._delete(key)
                    await asyncio.sleep(0)  # the operator's requests interleave with the controller's
            async with self._lock:
                left = [body for res, body in self._iter_live() if _meta(body).get("namespace") == name]
                ns = self._namespace(name)
                if ns is None:
                    return
                finalizers = {f for body in left for f in _meta(body).get("finalizers") or []}
                new = copy.deepcopy(ns)
                new["status"]["conditions"] = namespaces.content_conditions(len(left), finalizers)
                if not left:
                    new["spec"]["finalizers"] = [
                        f for f in new["spec"].get("finalizers") or [] if f != namespaces.FINALIZER
                    ]
                await self._update(
                    (NAMESPACES, None, name), ns, new, subresource="finalize" if not left else "status"
                )
                if not left:
                    return
            await asyncio.sleep(namespaces.REQUEUE_SECONDS * self.namespace_requeue)

    def _namespaced_resources(self) -> builtins.list[kmock.resource]:
        return sorted((r for r in self._resources if self._resources[r].namespaced), key=_gvr)

    def deletion_order(self, seed: int) -> builtins.list[str]:
        """The namespace controller's first pass over the resources with this seed (to pick seeds)."""
        order = self._namespaced_resources()
        random.Random(seed).shuffle(order)
        return [_gvr(r) for r in order]

    async def _clean_up_crd(self, key: ObjKey) -> None:
        """crd_finalizer.go: delete every instance, wait until none is left, then let the CRD go."""
        while True:
            async with self._lock:
                obj = self._live(key)
                if obj is None:
                    return
                served = {r for r, _ in crds.served(obj.raw)}
                left = [k for k in self._objects if k[0] in served and self._live(k)]
                for k in left:
                    live = self._live(k)
                    if live is not None and not _meta(live.raw).get("deletionTimestamp"):
                        await self._delete(k)
                left = [k for k in left if self._live(k)]
                if not left:
                    body = copy.deepcopy(obj.raw)
                    body["metadata"]["finalizers"] = [
                        f for f in body["metadata"].get("finalizers") or [] if f != crds.CLEANUP_FINALIZER
                    ]
                    await self._update(key, obj.raw, body, subresource=None)
                    return
            await asyncio.sleep(0.1)

    def install_crd(self, crd: Mapping[str, Any]) -> Body:
        """Store a CRD as ``POST /apis/apiextensions.k8s.io/v1/customresourcedefinitions`` would,
        before the server runs (no watcher exists yet, so nothing is emitted to anyone)."""
        return self._seed(CRDS, copy.deepcopy(dict(crd)))

    def create_namespace(self, name: str) -> None:
        """Store a namespace (before the server runs, like install_crd)."""
        self._seed(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def _has_generation(self, resource: kmock.resource) -> bool:
        """Whether objects of this resource carry metadata.generation (see _GENERATION_KINDS)."""
        if resource in self._crds or resource == CRDS:
            return True
        return (resource.group or "", resource.plural) in _GENERATION_KINDS

    def _spec_changed(self, resource: kmock.resource, old: Body, new: Body) -> bool:
        """What bumps the generation. A custom resource: any change outside metadata (its status is
        the stored one by then, with the status subresource); apiextensions-apiserver
        pkg/registry/customresource/strategy.go PrepareForUpdate compares copyNonMetadata of both.
        The built-in kinds (and CRDs): their spec."""
        if resource in self._crds:
            return {k: v for k, v in new.items() if k != "metadata"} != {
                k: v for k, v in old.items() if k != "metadata"
            }
        return new.get("spec") != old.get("spec")

    def _seed(self, resource: kmock.resource, body: Body) -> Body:
        """A cluster-scoped object stored through the same checks as a create, without a request."""
        try:
            body = self._admit(resource, body, None, strict=False)
        except ApiError as e:
            raise _refusal(e) from None
        meta = body.setdefault("metadata", {})
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), resourceVersion=self._next_rv())
        if self._has_generation(resource):
            meta["generation"] = 1
        return self._add((resource, None, meta["name"]), body)

    # ---- reads --------------------------------------------------------------------------------

    async def _serve_result(self, request: kmock.Request) -> Body:
        try:
            return self._results[request]
        except KeyError:
            raise kmock.KubernetesEndpointNotFoundError() from None

    _serve_create = _serve_update = _serve_delete = _serve_result

    async def _serve_version(self, request: Any) -> Any:
        # kmock names the core group-version "/v1"; kubectl then maps no core kind (Namespace, Secret).
        served = await super()._serve_version(request)
        if isinstance(served, dict) and served.get("groupVersion") == "/v1":
            served["groupVersion"] = "v1"
        return served

    async def _serve_fetch(self, request: kmock.Request) -> Body:
        assert request.resource is not None
        self._check_known(request.resource)
        key: ObjKey = (
            request.resource,
            self._namespace_of(request.resource, request.namespace),
            request.name or "",
        )
        async with self._lock:
            obj = self._live(key)
            if obj is None:
                what = group_resource(request.resource)
                raise _error(404, "NotFound", f'{what} "{request.name}" not found', name=request.name)
            return obj.raw

    async def _serve_list(self, request: kmock.Request) -> Body:
        assert request.resource is not None
        resource = request.resource
        self._check_known(resource)
        matches = _Filter.of(request)
        async with self._lock:
            items = [body for res, body in self._iter_live() if matches(res, body)]
            rv = str(self._rv)
        meta: Body = {"resourceVersion": rv}
        if request.params.get("limit"):
            offset = int(request.params.get("continue") or 0)
            limit = int(request.params["limit"])
            items, rest = items[offset : offset + limit], items[offset + limit :]
            meta["continue"] = str(offset + limit) if rest else ""
        kind = self._info(resource).kind or str(resource.plural).capitalize()
        return {"apiVersion": _api_version(resource), "kind": f"{kind}List", "metadata": meta, "items": items}

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Body | bytes]:
        assert request.resource is not None
        self._check_known(request.resource)
        # Send the headers at once: clients wait for them before they consider the watch open.
        yield b""

        params = request.params
        since = params.get("resourceVersion", "")
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        watcher = _Watcher(_Filter.of(request))
        initial: list[Body]
        async with self._lock:  # the snapshot and the subscription are atomic (E7)
            self._watchers.add(watcher)
            if since in ("", "0") or params.get("sendInitialEvents") == "true":
                initial = [
                    {"type": "ADDED", "object": body}
                    for res, body in self._iter_live()
                    if watcher.matches(res, body)
                ]
                if params.get("sendInitialEvents") == "true":
                    annotations = {"k8s.io/initial-events-end": "true"}
                    bookmark = {"resourceVersion": str(self._rv), "annotations": annotations}
                    initial.append({"type": "BOOKMARK", "object": {"metadata": bookmark}})
            elif not since.isdigit():
                initial = [self._status_event(400, "BadRequest", f"invalid resourceVersion {since!r}")]
            elif int(since) < self._event_log_floor:
                initial = [self._status_event(410, "Expired", f"too old resource version: {since}")]
            else:
                seen = (
                    _as_seen(watcher.matches, res, event, old)
                    for rv, res, event, old in self._event_log
                    if rv > int(since)
                )
                initial = [event for event in seen if event is not None]
        loop = asyncio.get_running_loop()
        bookmarks = params.get("allowWatchBookmarks") == "true"
        next_bookmark = loop.time() + self.bookmark_interval
        try:
            for event in initial:
                yield event
                if event["type"] == "ERROR":
                    return
            while True:
                wake = [t for t in (deadline, next_bookmark if bookmarks else None) if t is not None]
                try:
                    if not wake:
                        event = await watcher.queue.get()
                    else:
                        event = await asyncio.wait_for(watcher.queue.get(), max(0.0, min(wake) - loop.time()))
                except TimeoutError:
                    if deadline is not None and loop.time() >= deadline:
                        return
                    # Nothing is queued for this watcher, and every write enqueues its event in the
                    # step that takes its resourceVersion: the watcher has seen all up to this one.
                    next_bookmark = loop.time() + self.bookmark_interval
                    yield self._bookmark(request.resource)
                    continue
                if event is _END_OF_STREAM:
                    return
                yield event
        finally:
            self._watchers.discard(watcher)

    def _bookmark(self, resource: kmock.resource) -> Body:
        """A BOOKMARK: an object of the watched kind with only its resourceVersion."""
        obj = {"kind": self._info(resource).kind or "", "apiVersion": _api_version(resource)}
        return {"type": "BOOKMARK", "object": {**obj, "metadata": {"resourceVersion": str(self._rv)}}}

    # ---- helpers --------------------------------------------------------------------------------

    def _declared(self, resource: kmock.resource) -> kmock.ResourceInfo | None:
        """The resource's info, None when it is not served. kmock's ResourcesArray checks every key
        against a runtime Protocol before the lookup (~20 µs a call on Python 3.11, a tenth of the
        emulator's CPU under load); a resource key is looked up in its dict directly (kmock is
        pinned). Its __getitem__ would also auto-create (and so declare) a missing resource."""
        declared: dict[kmock.resource, kmock.ResourceInfo] = self._resources._resources
        return declared.get(resource)

    def _check_known(self, resource: kmock.resource) -> None:
        if self._declared(resource) is None:
            raise kmock.KubernetesResourceNotFoundError()

    def _info(self, resource: kmock.resource) -> kmock.ResourceInfo:
        return self._declared(resource) or kmock.ResourceInfo()

    def _namespace_of(self, resource: kmock.resource, namespace: str | None) -> str | None:
        return namespace if self._info(resource).namespaced is not False else None

    def _live(self, key: ObjKey) -> kmock.Object | None:
        if key not in self._objects:
            return None
        obj: kmock.Object = self._objects[key]
        return None if obj.deleted else obj

    def _iter_live(self) -> Iterator[tuple[kmock.resource, Body]]:
        for (resource, _, _), obj in self._objects.items():
            if not obj.deleted:
                yield resource, obj.raw

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _store(self, key: ObjKey, body: Body) -> None:
        history = self._objects[key].history
        history.append(body)
        if self.history_limit is not None and len(history) > self.history_limit:
            del history[: len(history) - self.history_limit]

    def _emit(self, resource: kmock.resource, event_type: str, body: Body, old: Body | None = None) -> None:
        # Bodies are never mutated after being stored (every write deep-copies), so sharing is safe.
        event: Body = {"type": event_type, "object": body}
        rv = int(body["metadata"]["resourceVersion"])
        if len(self._event_log) >= self.event_log_limit:
            self._event_log_floor = self._event_log.popleft()[0]
        self._event_log.append((rv, resource, event, old))
        for watcher in self._watchers:
            if not watcher.muted:
                seen = _as_seen(watcher.matches, resource, event, old)
                if seen is not None:
                    watcher.queue.put_nowait(seen)

    async def disturb_watches(self, *, silence: bool = False) -> int:
        """Fault injection: end every open watch stream, or (silence) keep them open but send nothing.

        A silenced watch stays silent until it is ended; its client then resumes from the last
        resourceVersion it saw, and the event log replays what the silence swallowed.
        """
        async with self._lock:
            for watcher in self._watchers:
                if silence:
                    watcher.muted = True
                else:
                    watcher.queue.put_nowait(_END_OF_STREAM)
            return len(self._watchers)

    @staticmethod
    def _status_event(code: int, reason: str, message: str) -> Body:
        status = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "metadata": {}}
        return {"type": "ERROR", "object": dict(status, code=code, reason=reason, message=message)}

    @staticmethod
    def _normalise(resource: kmock.resource, body: Body) -> None:
        """Per-kind server-side defaulting that the operator relies on."""
        if resource.group == "" and resource.plural == "secrets":
            body.setdefault("type", "Opaque")
            string_data = body.pop("stringData", None) or {}
            if string_data:
                data = dict(body.get("data") or {})
                for k, v in string_data.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
                body["data"] = data

    # ---- thread-safe reads for KubeServer ------------------------------------------------------

    def watch_count(self, resource: str) -> int:
        """How many watch streams of the resource are open (e.g. to know that kopf is watching)."""
        res = kmock.resource(resource)
        return sum(1 for watcher in self._watchers if watcher.matches.resource == res)

    async def read(self, resource: str, namespace: str | None, name: str) -> Body | None:
        """The current object, or None. Runs in the server's loop."""
        res = kmock.resource(resource)
        async with self._lock:
            obj = self._live((res, self._namespace_of(res, namespace), name))
            return None if obj is None else copy.deepcopy(obj.raw)

    async def read_all(self, resource: str, namespace: str | None = None) -> builtins.list[Body]:
        """All current objects of the resource, optionally in one namespace. Runs in the server's loop."""
        res = kmock.resource(resource)
        async with self._lock:
            return [
                copy.deepcopy(body)
                for r, body in self._iter_live()
                if r == res and (namespace is None or body["metadata"].get("namespace") == namespace)
            ]


def declare_resources(emulator: ClusterEmulator, *, install_crd: bool = True) -> None:
    """Declare kmock's bundled core resources (kopf's backbone, E1), create the namespaces every
    cluster has, and (install_crd) install the Trigger CRD through the API server's checks."""
    emulator.resources.load_bundled()
    for name in namespaces.INITIAL:
        emulator.create_namespace(name)
    if install_crd:
        emulator.install_crd(build_crd())


def _check_finalizers(kind: str, name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """apimachinery ValidateObjectMetaUpdate: nothing may add a finalizer to an object being deleted."""
    if not old.get("deletionTimestamp"):
        return
    added = [f for f in new.get("finalizers") or [] if f not in (old.get("finalizers") or [])]
    if added:
        field = "metadata.finalizers"
        quoted = ", ".join(json.dumps(f) for f in added)
        detail = (
            "no new finalizers can be added if the object is being deleted, "
            f"found new finalizers []string{{{quoted}}}"
        )
        raise ApiError(
            crds.status_body(
                422,
                "Invalid",
                f"{kind} {json.dumps(name)} is invalid: {field}: Forbidden: {detail}",
                {
                    "name": name,
                    "kind": kind,
                    "causes": [
                        {"reason": "FieldValueForbidden", "message": f"Forbidden: {detail}", "field": field}
                    ],
                },
            )
        )


# apiserver/pkg/server/config.go: MaxRequestBodyBytes, 3 MiB (aiohttp's own default is 1 MiB, so
# a Secret near its 1 MiB data limit was a 413 here and a 422 or a 201 there).
MAX_REQUEST_BODY: Final = 3 * 1024 * 1024


def _request_factory(loop: asyncio.AbstractEventLoop) -> Callable[..., aiohttp.web.BaseRequest]:
    def make(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> aiohttp.web.BaseRequest:
        return aiohttp.web.BaseRequest(
            message, payload, protocol, writer, task, loop, client_max_size=MAX_REQUEST_BODY
        )

    return make


class KubeServer:
    """A ClusterEmulator served over loopback HTTP from a daemon thread with its own event loop.

    The server lives outside the test's thread so that synchronous tests (and kopf in its own
    thread, H1) can block freely. kmock.Server is not used: it patches aiohttp's resolver
    process-wide and requires strictly LIFO shutdowns, which breaks with several servers.

    `tls=True` serves HTTPS as a kind cluster does (sandbox/pki.py): a certificate from a CA of its
    own, and a client certificate required; write_kubeconfig then embeds the CA and the client's
    certificate and key. (A real server would also take a token and answer 401 without either; here
    the handshake itself refuses a client without the certificate, which is what the mode checks.)
    """

    def __init__(
        self,
        emulator: ClusterEmulator | None = None,
        *,
        declare: bool = True,
        install_crd: bool = True,
        tls: bool = False,
    ) -> None:
        self.emulator = emulator if emulator is not None else ClusterEmulator()
        self.pki: Pki | None = None  # the TLS mode's certificates
        if tls:
            from .pki import issue  # needs cryptography, a dev dependency

            self.pki = issue()
        if declare:
            declare_resources(self.emulator, install_crd=install_crd)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("The server is not started.")
        return f"{'https' if self.pki else 'http'}://127.0.0.1:{self._port}"

    def start(self, timeout: float = 10) -> KubeServer:
        if self._thread is not None:
            raise RuntimeError("The server can be started only once.")
        self._thread = threading.Thread(target=self._run, name=f"kube-server-{id(self):x}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout) or self._error is not None:
            raise RuntimeError("The emulated Kubernetes API did not start.") from self._error
        return self

    def stop(self, timeout: float = 10) -> None:
        if self._thread is None or self._loop is None or self._stopping is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"The emulated Kubernetes API did not stop in {timeout} s.")
        self._thread = None
        if self._error is not None:
            raise RuntimeError("The emulated Kubernetes API failed.") from self._error

    def __enter__(self) -> KubeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        # Bind the socket ourselves so that the random port is known without private attributes.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        # handler_cancellation: a client that closes a watch must cancel its server-side stream.
        server = aiohttp.web.Server(
            self.emulator, handler_cancellation=True, request_factory=_request_factory(self._loop)
        )
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1)
        async with self.emulator:  # starts kmock's stream feeder, accumulates request errors
            await runner.setup()
            try:
                await aiohttp.web.SockSite(runner, sock, ssl_context=self._ssl_context()).start()
                self._started.set()
                await self._stopping.wait()
            finally:
                await runner.cleanup()  # closes open watches before the emulator goes away

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.pki is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=self.pki.ca.decode())
        with tempfile.TemporaryDirectory() as d:  # load_cert_chain reads files only
            cert, key = os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")
            with open(cert, "wb") as f:
                f.write(self.pki.server_cert)
            with open(key, "wb") as f:
                f.write(self.pki.server_key)
            ctx.load_cert_chain(cert, key)
        return ctx

    def call(self, factory: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10) -> T:
        """Run a coroutine in the server's loop from any other thread and return its result."""
        if self._loop is None or self._thread is None:
            raise RuntimeError("The server is not started.")
        return asyncio.run_coroutine_threadsafe(factory(), self._loop).result(timeout)

    def get(self, group_version_plural: str, namespace: str | None, name: str) -> Body | None:
        """A deep copy of the current object (e.g. ``'v1/secrets'``), or None if it does not exist."""
        return self.call(lambda: self.emulator.read(group_version_plural, namespace, name))

    def list(self, gvp: str, namespace: str | None = None) -> builtins.list[Body]:
        """Deep copies of all current objects of the resource, optionally in one namespace."""
        return self.call(lambda: self.emulator.read_all(gvp, namespace))

    def wait_watched(self, group_version_plural: str, timeout: float = 10) -> None:
        """Block until a client (e.g. kopf) has a watch open on the resource."""
        deadline = time.monotonic() + timeout
        while not self.call(lambda: self._count_watches(group_version_plural)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Nobody watches {group_version_plural} after {timeout} s.")
            time.sleep(0.01)

    async def _count_watches(self, group_version_plural: str) -> int:
        return self.emulator.watch_count(group_version_plural)

    def disturb_watches(self, *, silence: bool = False) -> int:
        """End (or silence) every open watch; see ClusterEmulator.disturb_watches."""
        return self.call(lambda: self.emulator.disturb_watches(silence=silence))

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> None:
        """Write a kubeconfig for this server, namespace ``default``: plain HTTP and a dummy token, or
        in the TLS mode the CA, the client certificate and its key embedded, as kind writes them."""
        cluster: dict[str, Any] = {"server": self.url, "insecure-skip-tls-verify": True}
        user: dict[str, Any] = {"token": "dummy-token"}
        if self.pki is not None:
            cluster = {"server": self.url, "certificate-authority-data": _b64(self.pki.ca)}
            user = {
                "client-certificate-data": _b64(self.pki.client_cert),
                "client-key-data": _b64(self.pki.client_key),
            }
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": cluster}],
            "users": [{"name": "emulator", "user": user}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "emulator", "namespace": "default"},
                }
            ],
            "current-context": "emulator",
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)  # JSON is valid YAML, and needs no YAML writer


def _b64(pem: bytes) -> str:
    return base64.b64encode(pem).decode()


def kube_client(url: str) -> kubernetes.client.ApiClient:
    """A kubernetes ApiClient for the emulator at ``url``, independent of the global default config."""
    config = kubernetes.client.Configuration(host=url, verify_ssl=False)
    config.connection_pool_maxsize = 32  # the operator's worker threads share it
    return kubernetes.client.ApiClient(config)
