"""The OpenAPI v3 discovery that kubectl needs before it writes anything.

``kubectl apply`` (and ``create``, ``replace``) validate with ``--validate=strict`` by default: kubectl
asks the server's ``/openapi/v3`` whether the kind's PATCH operation takes the ``fieldValidation``
query parameter (k8s.io/cli-runtime resource.QueryParamVerifierV3: it looks for a PATCH whose
``x-kubernetes-group-version-kind`` names the kind, and that parameter ``in: query``); if so it sends
``fieldValidation=Strict`` and leaves the checking to the server, which is what a real API server
since 1.27 does. Without these documents kubectl refuses to apply ("failed to download openapi").

Only what that decision reads is served: paths and their PATCH operations, no schemas (so kubectl
computes apply patches from its built-in types, or as JSON merge patches for custom resources, as it
does when a kind's OpenAPI v3 does not list ``application/apply-patch+yaml``).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import kmock

_PARAMETERS = [
    {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    for name in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")
]


def _gv_path(resource: kmock.resource) -> str:
    return f"apis/{resource.group}/{resource.version}" if resource.group else f"api/{resource.version}"


def documents(resources: Iterable[tuple[kmock.resource, kmock.ResourceInfo]]) -> dict[str, dict[str, Any]]:
    """The OpenAPI v3 document of each group-version, by its path (``api/v1``, ``apis/g/v``)."""
    paths: dict[str, dict[str, Any]] = defaultdict(dict)
    for resource, info in resources:
        if not resource.plural or not info.kind:
            continue
        gv = _gv_path(resource)
        scope = "/namespaces/{namespace}" if info.namespaced else ""
        gvk = {"group": resource.group or "", "version": resource.version, "kind": info.kind}
        operation = {
            "operationId": f"patch{info.kind}",
            "parameters": _PARAMETERS,
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": gvk,
            "responses": {"200": {"description": "OK"}},
        }
        paths[gv][f"/{gv}{scope}/{resource.plural}/{{name}}"] = {"patch": operation}
    return {
        gv: {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.36.0"}, "paths": ops}
        for gv, ops in paths.items()
    }


def root(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``/openapi/v3``: where each group-version's document is, with a content hash for caching."""
    out = {}
    for gv, doc in sorted(docs.items()):
        digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest().upper()[:128]
        out[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
    return {"paths": out}
