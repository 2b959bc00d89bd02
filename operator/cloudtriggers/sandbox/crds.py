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
import json
import re
from collections.abc import Mapping
from typing import Any, Final

import kmock

from ..apiserver import cel
from ..apiserver.crd_validation import invalid_status, validate_crd

CRDS: Final = kmock.resource("apiextensions.k8s.io/v1/customresourcedefinitions")
CLEANUP_FINALIZER: Final = "customresourcecleanup.apiextensions.k8s.io"
_VERBS: Final = {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}

# k8s.io/apimachinery/pkg/util/validation IsDNS1123Subdomain: what metadata.name of a custom resource
# must be (apiextensions-apiserver pkg/registry/customresource/validator.go uses NameIsDNSSubdomain).
_DNS1123_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SUBDOMAIN_MESSAGE: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


class ApiError(Exception):
    """A refusal the emulator answers with: the HTTP code and the Status body."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(status.get("message", ""))
        self.status = status


def group_resource(resource: kmock.resource) -> str:
    """schema.GroupResource.String() ("secrets", "triggers.cloudtriggers.io"), as API errors name it."""
    return f"{resource.plural}.{resource.group}" if resource.group else str(resource.plural)


def status_body(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


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
    spec = crd.get("spec") or {}
    kind = (spec.get("names") or {}).get("kind", "")
    group = str(spec.get("group", ""))
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    if old is None and terminating(crd):
        raise ApiError(
            status_body(
                405, "MethodNotAllowed", "create not allowed while custom resource definition is terminating"
            )
        )
    errors: list[str] = []
    if old is None and not _DNS1123_SUBDOMAIN.fullmatch(name):
        errors.append(f"metadata.name: Invalid value: {json.dumps(name)}: {_SUBDOMAIN_MESSAGE}")
    if not errors:
        result = cel.admit(crd, body, old, str(resource.version), status_write=status_write)
        if strict and result.unknown:
            fields = ", ".join(f"unknown field {json.dumps(p)}" for p in result.unknown)
            raise ApiError(status_body(400, "BadRequest", f"strict decoding error: {fields}"))
        errors = result.errors
    if errors:
        raise ApiError(_invalid(kind, group, name, errors))
    stored = result.body
    stored["metadata"] = copy.deepcopy(meta)
    return stored


_CAUSE_REASONS: Final = {
    "Invalid value": "FieldValueInvalid",
    "Required value": "FieldValueRequired",
    "Forbidden": "FieldValueForbidden",
    "Unsupported value": "FieldValueNotSupported",
    "Duplicate value": "FieldValueDuplicate",
    "Too long": "FieldValueTooLong",
    "Too many": "FieldValueTooMany",
}


def _invalid(kind: str, group: str, name: str, errors: list[str]) -> dict[str, Any]:
    """apierrors.NewInvalid(schema.GroupKind{group, kind}, name, errs) as a Status."""
    unique = list(dict.fromkeys(errors))
    aggregate = unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"
    causes = []
    for e in unique:
        field, _, message = e.partition(": ")
        reason = next((r for t, r in _CAUSE_REASONS.items() if message.startswith(t)), "FieldValueInvalid")
        causes.append({"reason": reason, "message": message, "field": field})
    return status_body(
        422,
        "Invalid",
        f"{kind}.{group} {json.dumps(name)} is invalid: {aggregate}",
        {"name": name, "group": group, "kind": kind, "causes": causes},
    )
