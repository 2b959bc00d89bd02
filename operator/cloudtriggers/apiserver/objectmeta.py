"""The metadata checks every write goes through on a real API server, and the Secret's own.

k8s.io/apiserver registry/rest/create.go BeforeCreate and update.go validateCommonFields run
apimachinery's ValidateObjectMetaAccessor (api/validation/objectmeta.go) on every object, after the
kind's own strategy: name (and generateName), labels, annotations, owner references, finalizers;
an update adds ValidateObjectMetaAccessorUpdate (no new finalizer while deleting, immutable uid).
A core kind's strategy runs pkg/apis/core/validation ValidateObjectMeta first, with the kind's
name rule (a DNS subdomain for most) and validateKubeFinalizerName. The Secret strategy adds
ValidateSecret / ValidateSecretUpdate (data keys, 1 MiB, type and `immutable`), the Event strategy
legacyValidateEvent (namespaces; an eventTime Event's reporting fields), the Lease strategy
coordination's ValidateLeaseSpec.

The messages are apimachinery/pkg/util/validation's; a refusal is NewInvalid's 422 Status
(crd_validation.invalid, as every emulated check answers).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any, Final

from .crd_validation import (
    OMIT,
    FieldError,
    GoRepr,
    _forbidden,
    _go_quote,
    _invalid,
    _not_supported,
    _required,
)
from .names import (
    is_config_map_key,
    is_dns1035_label,
    is_dns1123_subdomain,
    is_qualified_name,
    is_valid_label_value,
)

TOTAL_ANNOTATION_SIZE: Final = 256 * 1024  # api/validation TotalAnnotationSizeLimitB
MAX_SECRET_SIZE: Final = 1024 * 1024  # core.MaxSecretSize
# pkg/apis/core/helper IsStandardFinalizerName: the only core finalizer names without a domain.
_STANDARD_FINALIZERS: Final = frozenset({"kubernetes", "orphan", "foregroundDeletion"})

NameFn = Callable[[str, bool], list[str]]


# -- name rules (a ValidateNameFunc: the name, and whether it is a generateName prefix) -----------


def _mask_trailing_dash(name: str) -> str:
    """api/validation maskTrailingDash: a generateName may end in '-'."""
    return name[:-2] + "a" if len(name) > 1 and name.endswith("-") else name


def name_is_dns_subdomain(name: str, prefix: bool) -> list[str]:
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def name_is_dns1035_label(name: str, prefix: bool) -> list[str]:
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


def path_segment_name(name: str, prefix: bool) -> list[str]:
    """api/validation/path ValidatePathSegmentName: what any object's name must be."""
    errs: list[str] = []
    if not prefix and name in (".", ".."):
        errs.append(f"may not be '{name}'")
    for bad in ("/", "%"):
        if bad in name:
            errs.append(f"may not contain '{bad}'")
    return errs


# Core kinds whose strategy names no DNS rule (legacyValidateEvent checks the namespace only).
_PATH_SEGMENT_ONLY: Final = frozenset({("", "events"), ("events.k8s.io", "events")})
_DNS1035: Final = frozenset({("", "services")})


def name_rule(group: str, plural: str) -> NameFn:
    """The name rule of a built-in kind (most kinds: a DNS subdomain)."""
    if (group, plural) in _PATH_SEGMENT_ONLY:
        return path_segment_name
    if (group, plural) in _DNS1035:
        return name_is_dns1035_label
    return name_is_dns_subdomain


# -- ObjectMeta -----------------------------------------------------------------------------------


def _labels(labels: Mapping[str, Any]) -> list[FieldError]:
    """meta/v1/validation ValidateLabels."""
    errs: list[FieldError] = []
    for k, v in labels.items():
        errs += [_invalid("metadata.labels", k, m) for m in is_qualified_name(k)]
        errs += [_invalid("metadata.labels", v, m) for m in is_valid_label_value(str(v))]
    return errs


def _annotations(annotations: Mapping[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    for k in annotations:
        errs += [_invalid("metadata.annotations", k, m) for m in is_qualified_name(k.lower())]
    if sum(len(k.encode()) + len(str(v).encode()) for k, v in annotations.items()) > TOTAL_ANNOTATION_SIZE:
        errs.append(
            FieldError(
                "Too long",
                "metadata.annotations",
                f"may not be more than {TOTAL_ANNOTATION_SIZE} bytes",
                OMIT,
            )
        )
    return errs


def _owner_references(refs: list[Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    path = "metadata.ownerReferences"
    controller = ""
    for ref in refs:
        api_version = str(ref.get("apiVersion") or "")
        version = api_version.rpartition("/")[2]
        if not version:
            errs.append(_invalid(f"{path}.apiVersion", api_version, "version must not be empty"))
        for field in ("kind", "name", "uid"):
            if not ref.get(field):
                errs.append(
                    _invalid(f"{path}.{field}", str(ref.get(field) or ""), f"{field} must not be empty")
                )
        if api_version == "v1" and ref.get("kind") == "Event":
            errs.append(
                _invalid(
                    path,
                    GoRepr("metav1.OwnerReference{...}"),
                    "/v1, Kind=Event is disallowed from being an owner",
                )
            )
        if ref.get("controller") is True:
            current = f"{ref.get('kind')}/{ref.get('name')}"
            if controller:
                detail = (
                    'Only one reference can have Controller set to true. Found "true" in references for '
                    f"{controller} and {current}"
                )
                errs.append(_invalid(path, GoRepr("[]v1.OwnerReference{...}"), detail))
            else:
                controller = current
    return errs


def _finalizers(finalizers: list[Any], core: bool) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, name in enumerate(finalizers):
        errs += [_invalid("metadata.finalizers", name, m) for m in is_qualified_name(str(name))]
        if core and "/" not in str(name) and name not in _STANDARD_FINALIZERS:
            detail = "name is neither a standard finalizer name nor is it fully qualified"
            errs.append(_invalid(f"metadata.finalizers[{i}]", name, detail))
    if "orphan" in finalizers and "foregroundDeletion" in finalizers:
        detail = "finalizer orphan and foregroundDeletion cannot be both set"
        errs.append(_invalid("metadata.finalizers", GoRepr(_go_strings(finalizers)), detail))
    return errs


def _go_strings(values: list[Any]) -> str:
    return "[]string{" + ", ".join(_go_quote(str(v)) for v in values) + "}"


def validate_meta(
    body: Mapping[str, Any], old: Mapping[str, Any] | None, name_fn: NameFn, *, core: bool
) -> list[FieldError]:
    """ValidateObjectMetaAccessor (create; on update too, from validateCommonFields) and, for an
    update, what ValidateObjectMetaAccessorUpdate adds that the emulator does not already enforce.
    `core`: a core/v1 kind, whose finalizer names without a domain must be standard ones."""
    meta = body.get("metadata") or {}
    errs: list[FieldError] = []
    generate = str(meta.get("generateName") or "")
    if generate and old is None:
        errs += [_invalid("metadata.generateName", generate, m) for m in name_fn(generate, True)]
    name = str(meta.get("name") or "")
    if not name:
        errs.append(_required("metadata.name", "name or generateName is required"))
    else:
        check = name_fn if old is None else path_segment_name
        errs += [_invalid("metadata.name", name, m) for m in check(name, False)]
    errs += _labels(meta.get("labels") or {})
    errs += _annotations(meta.get("annotations") or {})
    errs += _owner_references(list(meta.get("ownerReferences") or []))
    errs += _finalizers(list(meta.get("finalizers") or []), core)
    if old is not None:
        old_uid, uid = (old.get("metadata") or {}).get("uid"), meta.get("uid")
        if uid and old_uid and uid != old_uid:
            errs.append(_invalid("metadata.uid", uid, "field is immutable"))
    return errs


def generated_name(generate_name: str, suffix: str) -> str:
    """storage/names SimpleNameGenerator: the prefix cut to 58 characters, then 5 random ones."""
    return generate_name[:58] + suffix


# -- Secret ---------------------------------------------------------------------------------------


def validate_secret(body: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    """ValidateSecret, and ValidateSecretUpdate's own rules for an update (the metadata rules are
    validate_meta's). `data` as stored: base64 text, as in the v1 JSON."""
    errs: list[FieldError] = []
    data = body.get("data") or {}
    total = 0
    for key, value in data.items():
        errs += [_invalid(f"data[{key}]", key, m) for m in is_config_map_key(key)]
        total += _decoded_size(value)
    if total > MAX_SECRET_SIZE:
        errs.append(FieldError("Too long", "data", f"may not be more than {MAX_SECRET_SIZE} bytes", OMIT))
    if old is not None:
        if body.get("type") != old.get("type"):
            errs.append(_invalid("type", body.get("type"), "field is immutable"))
        if old.get("immutable") is True:
            if body.get("immutable") is not True:
                errs.append(_forbidden("immutable", "field is immutable when `immutable` is set"))
            if (body.get("data") or {}) != (old.get("data") or {}):
                errs.append(_forbidden("data", "field is immutable when `immutable` is set"))
    return errs


def _decoded_size(value: Any) -> int:
    try:
        return len(base64.b64decode(str(value), validate=True))
    except (binascii.Error, ValueError):
        return len(str(value))


# -- Event ----------------------------------------------------------------------------------------

_EVENT_LIMITS: Final = (("reportingInstance", 128), ("action", 128), ("reason", 128), ("message", 1024))


def validate_event(body: Mapping[str, Any]) -> list[FieldError]:
    """pkg/apis/core/validation/events.go legacyValidateEvent, for a core/v1 Event: without an
    eventTime only the namespaces are checked; with one (the events.k8s.io shape) the reporting
    fields are required and the texts limited (in bytes, as Go's len counts)."""
    errs: list[FieldError] = []
    namespace = str((body.get("metadata") or {}).get("namespace") or "")
    involved = str((body.get("involvedObject") or {}).get("namespace") or "")
    mismatch = "does not match event.namespace"
    if not body.get("eventTime"):
        if (not involved and namespace not in ("", "default")) or (involved and involved != namespace):
            errs.append(_invalid("involvedObject.namespace", involved, mismatch))
    else:
        if not involved and namespace not in ("default", "kube-system"):
            errs.append(_invalid("involvedObject.namespace", involved, mismatch))
        controller = str(body.get("reportingComponent") or "")
        if not controller:
            errs.append(_required("reportingController"))
        errs += [_invalid("reportingController", controller, m) for m in is_qualified_name(controller)]
        for field, limit in _EVENT_LIMITS:
            text = str(body.get(field) or "")
            if not text and field != "message":
                errs.append(_required(field))
            if len(text.encode()) > limit:
                errs.append(_invalid(field, "", f"can have at most {limit} characters"))
    errs += [_invalid("namespace", namespace, m) for m in is_dns1123_subdomain(namespace)]
    return errs


# -- Lease ----------------------------------------------------------------------------------------

_LEASE_STRATEGIES: Final = ["OldestEmulationVersion"]  # coordination validLeaseStrategies


def validate_lease(body: Mapping[str, Any]) -> list[FieldError]:
    """pkg/apis/coordination/validation ValidateLeaseSpec (a create's and an update's alike). Its
    times were checked by the decode (typed.py): "a MicroTime and doesn't need further validation"."""
    spec = body.get("spec") or {}
    errs: list[FieldError] = []
    duration, transitions = spec.get("leaseDurationSeconds"), spec.get("leaseTransitions")
    if duration is not None and duration <= 0:
        errs.append(_invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
    if transitions is not None and transitions < 0:
        errs.append(_invalid("spec.leaseTransitions", transitions, "must be greater than or equal to 0"))
    strategy = spec.get("strategy")
    if strategy is not None:
        # ValidateCoordinatedLeaseStrategy is given spec.strategy and names its child strategy again.
        path = "spec.strategy.strategy"
        if "/" not in strategy:
            if strategy not in _LEASE_STRATEGIES:
                errs.append(_not_supported(path, strategy, _LEASE_STRATEGIES))
        else:
            errs += [_invalid(path, strategy, m) for m in is_qualified_name(strategy)]
    if spec.get("preferredHolder") and not strategy:
        errs.append(_forbidden("spec.preferredHolder", "may only be specified if `strategy` is defined"))
    return errs
