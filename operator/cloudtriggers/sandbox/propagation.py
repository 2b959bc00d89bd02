"""A DELETE's propagation policy, as the API server's store turns it into finalizers for the
garbage collector (k8s.io/apiserver registry/generic/registry/store.go: shouldOrphanDependents,
shouldDeleteDependents, deletionFinalizersForGarbageCollection).

`kubectl delete --cascade=foreground` (and Argo CD's default prune, foreground) sends
propagationPolicy Foreground: the object gets the `foregroundDeletion` finalizer, and the garbage
collector deletes its dependents before it lets the owner go; Orphan gives `orphan`, and the
collector strips the owner's references from the dependents instead. The collector's side is
ClusterEmulator._foreground / _orphan (kube.py), after pkg/controller/garbagecollector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

ORPHAN: Final = "orphan"  # metav1.FinalizerOrphanDependents
FOREGROUND: Final = "foregroundDeletion"  # metav1.FinalizerDeleteDependents
POLICIES: Final = ("Orphan", "Background", "Foreground")


def delete_options(body: Any, params: Mapping[str, str]) -> dict[str, Any]:
    """The DeleteOptions of a DELETE: its body, or its query parameters (both are accepted)."""
    options: dict[str, Any] = dict(body) if isinstance(body, dict) else {}
    if "propagationPolicy" in params:
        options["propagationPolicy"] = params["propagationPolicy"]
    if "orphanDependents" in params:
        options["orphanDependents"] = params["orphanDependents"] == "true"
    return options


def _should_orphan(finalizers: Sequence[str], options: Mapping[str, Any]) -> bool:
    if options.get("orphanDependents") is not None:
        return bool(options["orphanDependents"])
    policy = options.get("propagationPolicy")
    if policy in POLICIES:
        return bool(policy == "Orphan")
    for f in finalizers:  # a finalizer already set overrides the default
        if f == ORPHAN:
            return True
        if f == FOREGROUND:
            return False
    return False  # every kind the emulator serves defaults to background deletion


def _should_delete_dependents(finalizers: Sequence[str], options: Mapping[str, Any]) -> bool:
    if options.get("orphanDependents") is not None:
        return False
    policy = options.get("propagationPolicy")
    if policy in POLICIES:
        return bool(policy == "Foreground")
    for f in finalizers:
        if f == FOREGROUND:
            return True
        if f == ORPHAN:
            return False
    return False


def deletion_finalizers(finalizers: Sequence[str], options: Mapping[str, Any]) -> list[str]:
    """The object's finalizers once this DELETE's policy is applied: both GC finalizers removed,
    then the one the policy asks for appended."""
    out = [f for f in finalizers if f not in (ORPHAN, FOREGROUND)]
    if _should_orphan(finalizers, options):
        out.append(ORPHAN)
    if _should_delete_dependents(finalizers, options):
        out.append(FOREGROUND)
    return out if set(out) != set(finalizers) else list(finalizers)


def refused(options: Mapping[str, Any]) -> str | None:
    """meta/v1/validation ValidateDeleteOptions: the 422 message of a DELETE it refuses."""
    policy = options.get("propagationPolicy")
    errors = []
    if policy is not None and options.get("orphanDependents") is not None:
        errors.append(
            f'propagationPolicy: Invalid value: "{policy}": orphanDependents and deletionPropagation '
            "cannot be both set"
        )
    if policy is not None and policy not in POLICIES:
        errors.append(
            f'propagationPolicy: Unsupported value: "{policy}": supported values: "Foreground", '
            '"Background", "Orphan", "nil"'
        )
    if not errors:
        return None
    listed = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    return f'DeleteOptions.meta.k8s.io "" is invalid: {listed}'
