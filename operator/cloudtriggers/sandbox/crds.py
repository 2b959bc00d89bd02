"""CustomResourceDefinitions in the emulated API, as k8s.io/apiextensions-apiserver serves them.

* A CRD write is validated by :func:`cloudtriggers.apiserver.crd_validation.validate_crd` (the
  checks of ``pkg/apis/apiextensions/validation``) and refused with the server's 422 Status.
* A stored CRD is served: its resource is declared to kmock (kind, scope, verbs, ``/status``) and its
  status says what the naming and establishing controllers would (``acceptedNames``,
  ``NamesAccepted``, ``Established``; ``storedVersions`` as the registry's PrepareForCreate sets it).
* A custom resource write goes through the CRD's schema as ``pkg/apiserver/schema`` does it: unknown
  fields pruned (refused with 400 under ``fieldValidation=Strict``), defaults applied, the OpenAPI value
  validations and the CEL rules run (422 ``<Kind>.<group> "<name>" is invalid: ...``); the pruned,
  defaulted object is what is stored.
* Deleting a CRD is two-phase, as ``pkg/registry/customresourcedefinition/etcd.go`` Delete and
  ``pkg/controller/finalizer/crd_finalizer.go`` do it: the finalizer
  ``customresourcecleanup.apiextensions.k8s.io`` and a Terminating condition go on, new instances are
  refused (405), every instance is deleted (each keeping its own finalizers), then the CRD goes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

import kmock

from ..apiserver import resources
from ..apiserver.crd_validation import invalid_status, validate_crd
from ..apiserver.resources import status_body

__all__ = ["ApiError", "admit_crd", "admit_custom_resource", "status_body"]

CRDS: Final = kmock.resource("apiextensions.k8s.io/v1/customresourcedefinitions")
CLEANUP_FINALIZER: Final = "customresourcecleanup.apiextensions.k8s.io"
_VERBS: Final = {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}


class ApiError(Exception):
    """A refusal the emulator answers with: the HTTP code and the Status body."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(status.get("message", ""))
        self.status = status


def group_resource(resource: kmock.resource) -> str:
    """schema.GroupResource.String() ("secrets", "triggers.cloudtriggers.io"), as API errors name it."""
    return f"{resource.plural}.{resource.group}" if resource.group else str(resource.plural)


def admit_crd(new: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Refuse a CRD the real API server refuses (422, its message)."""
    errors = validate_crd(new, old)
    if errors:
        name = str((new.get("metadata") or {}).get("name") or "")
        raise ApiError(invalid_status(name, errors))


def set_crd_status(body: dict[str, Any], old: Mapping[str, Any] | None, now: str) -> None:
    """The status the naming and establishing controllers give a CRD whose names are free."""
    spec = body.get("spec") or {}
    status: dict[str, Any] = copy.deepcopy((old or {}).get("status") or body.get("status") or {})
    status["acceptedNames"] = {k: v for k, v in (spec.get("names") or {}).items() if k != "listKind"}
    status["acceptedNames"]["listKind"] = (spec.get("names") or {}).get("listKind") or (
        f"{(spec.get('names') or {}).get('kind', '')}List"
    )
    storage = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    stored = list(status.get("storedVersions") or [])
    for name in storage:
        if name not in stored:
            stored.append(name)
    status["storedVersions"] = stored
    wanted = [
        ("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
        ("Established", "True", "InitialNamesAccepted", "the initial names have been accepted"),
    ]
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        wanted.append(
            (
                "Terminating",
                "True",
                "InstanceDeletionPending",
                "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
            )
        )
    set_conditions(status, wanted, now)
    body["status"] = status


def set_conditions(status: dict[str, Any], wanted: list[tuple[str, str, str, str]], now: str) -> None:
    """Set conditions, keeping lastTransitionTime where the status did not change."""
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    for type_, value, reason, message in wanted:
        before = conditions.get(type_) or {}
        since = before.get("lastTransitionTime") if before.get("status") == value else now
        conditions[type_] = {
            "type": type_,
            "status": value,
            "lastTransitionTime": since or now,
            "reason": reason,
            "message": message,
        }
    status["conditions"] = list(conditions.values())


def served(crd: Mapping[str, Any]) -> list[tuple[kmock.resource, kmock.ResourceInfo]]:
    """The resources a stored CRD serves, one per served version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served"):
            continue
        resource = kmock.resource(f"{spec['group']}/{version['name']}/{names['plural']}")
        info = kmock.ResourceInfo(
            kind=names.get("kind"),
            singular=names.get("singular") or str(names.get("kind", "")).lower(),
            namespaced=spec.get("scope") == "Namespaced",
            verbs=set(_VERBS),
            shortnames=set(names.get("shortNames") or []),
            categories=set(names.get("categories") or []),
            subresources=set((version.get("subresources") or {}).keys()),
        )
        out.append((resource, info))
    return out


def terminating(crd: Mapping[str, Any]) -> bool:
    return bool((crd.get("metadata") or {}).get("deletionTimestamp"))


def admit_custom_resource(
    crd: dict[str, Any],
    resource: kmock.resource,
    body: dict[str, Any],
    old: dict[str, Any] | None,
    *,
    strict: bool,
    status_write: bool,
) -> dict[str, Any]:
    """The object to store for a custom resource write, or ApiError with the server's answer."""
    if old is None and terminating(crd):
        raise ApiError(
            status_body(
                405, "MethodNotAllowed", "create not allowed while custom resource definition is terminating"
            )
        )
    try:
        return resources.admit(
            crd, body, old, str(resource.version), strict=strict, status_write=status_write
        )
    except resources.Refused as e:
        raise ApiError(e.status) from None
