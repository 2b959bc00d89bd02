"""Custom resource writes, as k8s.io/apiextensions-apiserver admits them (pkg/registry/customresource,
pkg/apiserver/schema): metadata.name a DNS subdomain on create; unknown fields pruned, or refused with
400 under fieldValidation=Strict; defaults applied; the OpenAPI value validations and the CEL rules
(cel.py); a refusal is the server's Status, 422 `<Kind>.<group> "<name>" is invalid: ...`.

The emulated API (sandbox/crds.py) and `cloudtriggers validate` (review/validate.py) both use it, so
what validate reports is what the emulated server answers.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from . import cel
from .crd_validation import FieldError, invalid
from .names import is_dns1123_subdomain


class Refused(Exception):
    """The API server's answer to a refused write: `status` is its Status body."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(status.get("message", ""))
        self.status = status


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


def admit(
    crd: dict[str, Any],
    body: dict[str, Any],
    old: dict[str, Any] | None,
    version: str,
    *,
    strict: bool,
    status_write: bool = False,
) -> dict[str, Any]:
    """The object to store for a custom resource write, or Refused with the server's Status."""
    spec = crd.get("spec") or {}
    kind = (spec.get("names") or {}).get("kind", "")
    group = str(spec.get("group", ""))
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    errors: list[str] = []
    if old is None:
        # customresource/validator.go: metadata.name is a DNS subdomain (NameIsDNSSubdomain).
        errors += [
            f"metadata.name: Invalid value: {json.dumps(name)}: {m}" for m in is_dns1123_subdomain(name)
        ]
    if not errors:
        result = cel.admit(crd, body, old, version, status_write=status_write)
        if strict and result.unknown:
            fields = ", ".join(f"unknown field {json.dumps(p)}" for p in result.unknown)
            raise Refused(status_body(400, "BadRequest", f"strict decoding error: {fields}"))
        errors = result.errors
    if errors:
        raise Refused(invalid(group, kind, name, [FieldError.parse(e) for e in errors]))
    stored = result.body
    stored["metadata"] = copy.deepcopy(meta)
    return stored
