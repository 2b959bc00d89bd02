"""Namespaces in the emulated API, as kube-apiserver and kube-controller-manager handle them.

* Registry (``pkg/registry/core/namespace``): a new namespace gets ``spec.finalizers: [kubernetes]``
  and ``status.phase: Active``; DELETE sets ``deletionTimestamp`` and ``phase: Terminating`` and the
  namespace stays until ``spec.finalizers`` (``/finalize``) and ``metadata.finalizers`` are empty.
* Admission (``plugin/pkg/admission/namespace/lifecycle``): creating anything in a namespace that does
  not exist is 404 ``namespaces "x" not found``; in a terminating one, 403 ``... is forbidden: unable
  to create new content in namespace x because it is being terminated`` (Events too); ``default``,
  ``kube-system`` and ``kube-public`` cannot be deleted.
* The namespace controller (``pkg/controller/namespace/deletion/namespaced_resources_deleter.go``):
  deletes every namespaced resource's objects, resource by resource in an order it does not choose
  (Go map iteration: here a seeded shuffle, recorded so a failure can be replayed), each object keeping
  its own finalizers; while anything is left it looks again after ``finalizerEstimateSeconds / 2 + 1``
  (8 s, scaled by ``ClusterEmulator.namespace_requeue``); when nothing is left it removes the
  ``kubernetes`` finalizer and the namespace goes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import kmock

from ..apiserver.crd_validation import FieldError, invalid
from ..apiserver.names import is_dns1123_label
from .crds import ApiError, group_resource, status_body

NAMESPACES: Final = kmock.resource("v1/namespaces")
FINALIZER: Final = "kubernetes"
INITIAL: Final = ("default", "kube-system", "kube-public", "kube-node-lease")
IMMORTAL: Final = frozenset({"default", "kube-system", "kube-public"})
#: namespace_controller.go: ``t := estimate.Estimate/2 + 1`` with finalizerEstimateSeconds = 15.
REQUEUE_SECONDS: Final = 15 // 2 + 1


def prepare_create(body: dict[str, Any]) -> None:
    """PrepareForCreate and ValidateNamespace for a new namespace."""
    name = str((body.get("metadata") or {}).get("name") or "")
    # core ValidateNamespace: ValidateNamespaceName, a DNS label.
    errors = [FieldError("Invalid value", "metadata.name", m, name) for m in is_dns1123_label(name)]
    if errors:
        raise ApiError(invalid("", "Namespace", name, errors))
    # The NamespaceDefaultLabelName defaulting (always on since 1.22).
    body["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    spec = body.setdefault("spec", {})
    finalizers = list(spec.get("finalizers") or [])
    if FINALIZER not in finalizers:
        finalizers.append(FINALIZER)
    spec["finalizers"] = finalizers
    body["status"] = {"phase": "Active"}


def terminating(namespace: Mapping[str, Any]) -> bool:
    return bool((namespace.get("metadata") or {}).get("deletionTimestamp"))


def finalized(namespace: Mapping[str, Any]) -> bool:
    """Nothing keeps a terminating namespace any more."""
    return not ((namespace.get("spec") or {}).get("finalizers")) and not (
        (namespace.get("metadata") or {}).get("finalizers")
    )


def admit_create(
    resource: kmock.resource, namespace: str, body: Mapping[str, Any], ns: Mapping[str, Any] | None
) -> None:
    """The NamespaceLifecycle admission plugin, for a create in ``namespace`` (``ns``: its object)."""
    if ns is None:
        raise ApiError(
            status_body(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        )
    if not terminating(ns):
        return
    meta = body.get("metadata") or {}
    name = meta.get("name") or meta.get("generateName") or "Unknown"
    qualified = group_resource(resource)
    raise ApiError(
        status_body(
            403,
            "Forbidden",
            f"{qualified} {json.dumps(name)} is forbidden: unable to create new content in namespace "
            f"{namespace} because it is being terminated",
            {
                "name": name,
                "group": resource.group or "",
                "kind": resource.plural,
                "causes": [
                    {
                        "reason": "NamespaceTerminating",
                        "message": f"namespace {namespace} is being terminated",
                        "field": "metadata.namespace",
                    }
                ],
            },
        )
    )


def admit_delete(name: str) -> None:
    if name in IMMORTAL:
        raise ApiError(
            status_body(
                403,
                "Forbidden",
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                {"name": name, "kind": "namespaces"},
            )
        )


def mark_terminating(body: dict[str, Any]) -> None:
    body["status"] = {**(body.get("status") or {}), "phase": "Terminating"}


def content_conditions(left: int, finalizers: set[str]) -> list[dict[str, Any]]:
    """The namespace controller's status conditions while content remains (a subset of its five)."""
    out = [
        {
            "type": "NamespaceContentRemaining",
            "status": "True" if left else "False",
            "reason": "SomeResourcesRemain" if left else "ContentDeleted",
            "message": f"Some resources are remaining: {left} objects"
            if left
            else "All content successfully removed",
        },
        {
            "type": "NamespaceFinalizersRemaining",
            "status": "True" if finalizers else "False",
            "reason": "SomeFinalizersRemain" if finalizers else "ContentHasNoFinalizers",
            "message": (
                "Some content in the namespace has finalizers remaining: " + ", ".join(sorted(finalizers))
                if finalizers
                else "All content-preserving finalizers finished"
            ),
        },
    ]
    return out
