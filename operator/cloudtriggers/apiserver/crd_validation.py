"""What a real kube-apiserver checks when a CustomResourceDefinition is created or updated.

A Python port of the apiextensions-apiserver validation, with the server's own error messages, so that the
emulated API (:mod:`cloudtriggers.sandbox.kube`), the demo and the tests refuse the CRDs a cluster refuses.
Sources (kubernetes/kubernetes, staging/src/k8s.io/...):

* apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go --
  ``ValidateCustomResourceDefinition`` (+``Update``): names, group, scope, versions, subresources, printer
  columns, conversion, the OpenAPI schema walk (``ValidateCustomResourceDefinitionOpenAPISchema``,
  ``specStandardValidatorV3``), list/map types, CEL rules and their cost (``getExpressionCost``,
  ``getCostErrorMessage``); cel_validation.go (cardinality);
* apiextensions-apiserver/pkg/apis/apiextensions/v1/conversion.go -- the v1 object is converted to the
  internal version first: a schema (subresources, printer columns) shared by every version moves to
  ``spec.validation`` (``spec.subresources``, ``spec.additionalPrinterColumns``), which is why errors then
  say ``spec.validation.openAPIV3Schema...``;
* apiextensions-apiserver/pkg/apiserver/schema/ -- convert.go (``NewStructural``), validation.go and
  complete.go (``ValidateStructural``), defaulting/validation.go (``ValidateDefaults``),
  pruning/algorithm.go (``Prune``); schema/cel/compilation.go and validation.go (compiling rules,
  evaluating rules on defaults);
* apiserver/pkg/cel/ -- see :mod:`.celcost` for the cost estimate;
* apimachinery/pkg/util/validation/field/errors.go -- :class:`FieldError` and its ``Error()`` text;
  apimachinery/pkg/api/errors/errors.go ``NewInvalid`` -- :func:`invalid_status`.

Left out on purpose (not needed for the CRDs this project writes, or not portable exactly):

* CEL type-check *wording*: rules are parsed and type-checked by cel-python plus the checker in :mod:`.cel`,
  not by cel-go's checker, so the text after ``compilation failed: `` is ours, not cel-go's ``ERROR: <input>:
  line:col`` issue listing (the error, its field and its type are the server's);
* Go ``%#v`` dumps of Go structs as bad values (the whole schema for the root "only ... fields are allowed"
  error, ``spec.versions`` for the storage-version errors, non-nil pointers in a ``ValidationRule``): rendered
  in the same shape, with ``0xc000000000`` for pointer addresses, which differ on every real run;
* the order of errors coming from different properties: Go iterates maps in random order; we use the
  schema's order (``ValidateStructural``'s own sort by message is reproduced);
* kube-openapi's value validation of defaults is ported for type, enum, required, lengths, pattern, bounds,
  multipleOf, item and property counts; ``format`` checks and allOf/anyOf/oneOf/not of a default are not;
* ``objectmeta.Coerce``/``Validate`` of defaults of embedded resources, and defaults below top-level or
  embedded metadata (validated against a surrounding object by the server) are not checked;
* webhook conversion ``url``/``service``/``caBundle`` checks, the API-approval annotation of ``*.k8s.io``
  groups, ``metadata`` beyond name/namespace (labels, annotations, finalizers...), ``selectableFields`` and
  the ratcheting of rules on update beyond "unchanged schemas skip the per-rule cost limit";
* the ``jsonPath`` of printer columns: the server only runs ``validateSimpleJSONPath`` (must start with a
  dot) on it -- the client-go JSONPath parser is not used at CRD validation time, so neither is it here.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import celpy.celtypes as ct
import re2

from . import celcost
from .cel import _OPTIONAL_NS as _CEL_OPTIONAL
from .cel import _SETS as _CEL_SETS
from .cel import _Checker, _compile, _evaluate, _Optional, _schema_type, _to_cel
from .names import is_dns1035_label, is_dns1123_subdomain

Schema = dict[str, Any]

__all__ = ["OMIT", "FieldError", "GoRepr", "invalid_status", "validate_crd"]

# validation.go
STATIC_ESTIMATED_COST_LIMIT = 10_000_000
STATIC_ESTIMATED_CRD_COST_LIMIT = 100_000_000
# k8s.io/apiserver/pkg/apis/cel/config.go
PER_CALL_LIMIT = 1_000_000
RUNTIME_CEL_COST_BUDGET = 10_000_000

# --------------------------------------------------------------------------------------------------
# field.Error
# --------------------------------------------------------------------------------------------------


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT = _Omit()  # field.OmitValueType{}: no bad value in the message


@dataclass(frozen=True)
class GoRepr:
    """A bad value that Go prints with ``%#v``/``%s`` (already rendered)."""

    text: str


_REASONS = {
    "Not found": "FieldValueNotFound",
    "Required value": "FieldValueRequired",
    "Duplicate value": "FieldValueDuplicate",
    "Invalid value": "FieldValueInvalid",
    "Unsupported value": "FieldValueNotSupported",
    "Forbidden": "FieldValueForbidden",
    "Too long": "FieldValueTooLong",
    "Too many": "FieldValueTooMany",
    "Internal error": "InternalError",
}


@dataclass(frozen=True)
class FieldError:
    """k8s.io/apimachinery/pkg/util/validation/field.Error.

    ``type`` is the ``ErrorType.String()`` text ("Invalid value", "Forbidden", ...); ``reason`` is the machine
    form a Status cause carries ("FieldValueInvalid", ...). A ``type_invalid`` error prints as "Invalid
    value" but is ``FieldValueTypeInvalid`` in a cause.
    """

    type: str
    field: str
    detail: str = ""
    bad_value: Any = None
    type_invalid: bool = False

    @property
    def reason(self) -> str:
        return "FieldValueTypeInvalid" if self.type_invalid else _REASONS[self.type]

    def body(self) -> str:
        """``ErrorBody()``: the message without the field."""
        if (
            self.type in ("Required value", "Forbidden", "Too long", "Internal error")
            or self.bad_value is OMIT
        ):
            s = self.type
        else:
            s = f"{self.type}: {_go_value(self.bad_value)}"
        if self.detail:
            s += f": {self.detail}"
        return s

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    @classmethod
    def parse(cls, text: str) -> FieldError:
        """Back from its ``Error()`` text (``<field>: <type>[: ...]``), for errors known only as text
        (cel.py's): the same text and cause again, the bad value kept as rendered."""
        field, _, body = text.partition(": ")
        type_ = next((t for t in _REASONS if body == t or body.startswith(t + ": ")), None)
        if type_ is None:
            raise ValueError(f"not a field error: {text!r}")
        return cls(type_, field, body[len(type_) + 2 :], OMIT)


def _required(path: str, detail: str = "") -> FieldError:
    return FieldError("Required value", path, detail, "")


def _forbidden(path: str, detail: str) -> FieldError:
    return FieldError("Forbidden", path, detail, "")


def _invalid(path: str, value: Any, detail: str) -> FieldError:
    return FieldError("Invalid value", path, detail, value)


def _not_supported(path: str, value: Any, valid: list[str]) -> FieldError:
    detail = "supported values: " + ", ".join(_go_quote(v) for v in valid) if valid else ""
    return FieldError("Unsupported value", path, detail, value)


def _internal(path: str, detail: str) -> FieldError:
    return FieldError("Internal error", path, detail, None)


def _too_many(path: str, actual: int, maximum: int) -> FieldError:
    msg = f"must have at most {maximum} items" if maximum >= 0 else "has too many items"
    return FieldError("Too many", path, msg, actual if actual >= 0 else OMIT)


def _go_quote(s: str) -> str:
    """strconv.Quote."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append(
                {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}[
                    ch
                ]
            )
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif not ch.isprintable() and o > 0x7F:
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _go_float(f: float) -> str:
    """fmt %v of a float64: shortest digits, exponent form when the exponent is < -4 or >= 6 (strconv 'g')."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, f) < 0 else ""
    if f == 0:
        return sign + "0"
    text = repr(abs(f))
    mant, _, exp_text = text.partition("e")
    whole, _, frac = mant.partition(".")
    raw = whole + frac
    leading = len(raw) - len(raw.lstrip("0"))
    digits = raw.lstrip("0").rstrip("0") or "0"
    dp = len(whole) + (int(exp_text) if exp_text else 0) - leading
    x = dp - 1
    if x < -4 or x >= 6:
        m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{m}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return sign + digits + "0" * (dp - len(digits))
    return f"{sign}{digits[:dp]}.{digits[dp:]}"


def _go_value(v: Any) -> str:
    """How ErrorBody prints a bad value (%v for simple types, %q for strings, %#v otherwise)."""
    if v is None:
        return "null"
    if isinstance(v, GoRepr):
        return v.text
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, str):
        return _go_quote(v)
    return _go_repr(v)


def _go_repr(v: Any, top: bool = True) -> str:
    """fmt %#v of a decoded JSON value (map[string]interface {}, []interface {}, ...)."""
    if isinstance(v, dict):
        inner = ", ".join(f"{_go_quote(str(k))}:{_go_repr(v[k], False)}" for k in sorted(v))
        return "map[string]interface {}{" + inner + "}"
    if isinstance(v, list):
        if all(isinstance(x, str) for x in v) and top:
            return "[]string{" + ", ".join(_go_quote(x) for x in v) + "}"
        return "[]interface {}{" + ", ".join(_go_repr(x, False) for x in v) + "}"
    if v is None:
        return "interface {}(nil)"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, str):
        return _go_quote(v)
    return repr(v)


def _string_slice(v: list[str]) -> GoRepr:
    return GoRepr("[]string{" + ", ".join(_go_quote(x) for x in v) + "}")


def _aggregate(errors: list[FieldError]) -> str:
    """ErrorList.ToAggregate().Error(): duplicates dropped, one as-is, several as [e1, e2]."""
    seen: list[str] = []
    for e in errors:
        if str(e) not in seen:
            seen.append(str(e))
    if len(seen) == 1:
        return seen[0]
    return "[" + ", ".join(seen) + "]"


def invalid(group: str, kind: str, name: str, errors: list[FieldError]) -> dict[str, Any]:
    """apierrors.NewInvalid as the Status a real API server answers with: 422
    `<Kind>[.<group>] "<name>" is invalid: <errors>` (a core kind has no group)."""
    qualified = f"{kind}.{group}" if group else kind
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [{"reason": e.reason, "message": e.body(), "field": e.field} for e in errors]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"{qualified} {_go_quote(name)} is invalid: {_aggregate(errors)}",
        "reason": "Invalid",
        "details": details,
        "code": 422,
    }


def invalid_status(crd_name: str, errors: list[FieldError]) -> dict[str, Any]:
    """NewInvalid for the CRD kind."""
    return invalid("apiextensions.k8s.io", "CustomResourceDefinition", crd_name, errors)


# --------------------------------------------------------------------------------------------------
# field.Path helpers (Child "a.b", Index "[0]", Key "[k]")
# --------------------------------------------------------------------------------------------------


def _child(path: str, *names: str) -> str:
    for n in names:
        path = f"{path}.{n}" if path else n
    return path


def _index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _key(path: str, k: str) -> str:
    return f"{path}[{k}]"


# --------------------------------------------------------------------------------------------------
# v1 -> internal (v1/conversion.go and v1 defaults)
# --------------------------------------------------------------------------------------------------


def _to_internal(crd: Mapping[str, Any]) -> dict[str, Any]:
    """The internal CRD spec the validation runs on (Convert_v1_CustomResourceDefinitionSpec_To_...)."""
    spec = copy.deepcopy(dict(crd.get("spec") or {}))
    names = dict(spec.get("names") or {})
    # SetDefaults_CustomResourceDefinitionSpec
    if not names.get("singular") and names.get("kind"):
        names["singular"] = str(names["kind"]).lower()
    if not names.get("listKind") and names.get("kind"):
        names["listKind"] = f"{names['kind']}List"
    conversion = spec.get("conversion")
    if conversion is None:
        conversion = {"strategy": "None"}
    internal_conversion = {"strategy": conversion.get("strategy", "")}
    webhook = conversion.get("webhook")
    if isinstance(webhook, dict):
        internal_conversion["conversionReviewVersions"] = webhook.get("conversionReviewVersions")
        internal_conversion["webhookClientConfig"] = webhook.get("clientConfig")
    versions = []
    for v in spec.get("versions") or []:
        versions.append(
            {
                "name": v.get("name", ""),
                "served": bool(v.get("served")),
                "storage": bool(v.get("storage")),
                "deprecated": bool(v.get("deprecated")),
                "deprecationWarning": v.get("deprecationWarning"),
                "schema": v.get("schema"),
                "subresources": v.get("subresources"),
                "additionalPrinterColumns": [
                    {
                        "name": c.get("name", ""),
                        "type": c.get("type", ""),
                        "format": c.get("format", ""),
                        "description": c.get("description", ""),
                        "priority": c.get("priority", 0),
                        "JSONPath": c.get("jsonPath", ""),
                    }
                    for c in v.get("additionalPrinterColumns") or []
                ],
                "selectableFields": v.get("selectableFields") or [],
            }
        )
    out: dict[str, Any] = {
        "group": spec.get("group", ""),
        "names": names,
        "scope": spec.get("scope", ""),
        "versions": versions,
        "version": "",
        "validation": None,
        "subresources": None,
        "additionalPrinterColumns": [],
        "selectableFields": [],
        "preserveUnknownFields": bool(spec.get("preserveUnknownFields", False)),
        "conversion": internal_conversion,
    }
    if not versions:
        return out
    out["version"] = versions[0]["name"]
    if all(v["subresources"] == versions[0]["subresources"] for v in versions):
        out["subresources"] = versions[0]["subresources"]
        for v in versions:
            v["subresources"] = None
    schema_identical = all(v["schema"] == versions[0]["schema"] for v in versions)
    if schema_identical:
        out["validation"] = versions[0]["schema"]
        for v in versions:
            v["schema"] = None
    if all(v["additionalPrinterColumns"] == versions[0]["additionalPrinterColumns"] for v in versions):
        out["additionalPrinterColumns"] = versions[0]["additionalPrinterColumns"]
        for v in versions:
            v["additionalPrinterColumns"] = []
    if schema_identical and all(v["selectableFields"] == versions[0]["selectableFields"] for v in versions):
        out["selectableFields"] = versions[0]["selectableFields"]
        for v in versions:
            v["selectableFields"] = []
    return out


# --------------------------------------------------------------------------------------------------
# Options (validationOptions)
# --------------------------------------------------------------------------------------------------


@dataclass
class _Options:
    allow_defaults: bool = True
    require_structural_schema: bool = True
    require_pruned_defaults: bool = True
    require_atomic_set_type: bool = True
    require_map_list_keys_map_set_validation: bool = True
    require_valid_property_type: bool = True
    require_open_api_schema: bool = True
    unchanged_schema_versions: frozenset[str] = frozenset()
    suppress_per_expression_cost: bool = False


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def validate_crd(crd: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[FieldError]:
    """The errors a real API server gives for creating ``crd`` (or updating ``old`` to it)."""
    spec = _to_internal(crd)
    old_spec = _to_internal(old) if old is not None else None
    opts = _Options()
    if old is not None and old_spec is not None:
        opts.unchanged_schema_versions = frozenset(_unchanged_schema_versions(spec, old_spec))
        opts.require_map_list_keys_map_set_validation = not _has_schema_with(
            old_spec, lambda s: bool(_validate_map_list_keys_map_set(s, ""))
        )
        opts.require_atomic_set_type = not _has_schema_with(old_spec, _has_non_atomic_set_type)
        opts.require_valid_property_type = not _has_schema_with(
            old_spec, lambda s: bool(s.get("type")) and s.get("type") not in _OPENAPI_V3_TYPES
        )
    errs = _validate_object_meta(crd, spec)
    errs += _validate_spec(spec, opts, "spec")
    if old_spec is not None:
        if _is_established(old):
            errs += _immutable(spec["scope"], old_spec["scope"], "spec.scope")
            errs += _immutable(spec["names"].get("kind"), old_spec["names"].get("kind"), "spec.names.kind")
        errs += _immutable(spec["group"], old_spec["group"], "spec.group")
        errs += _immutable(spec["names"].get("plural"), old_spec["names"].get("plural"), "spec.names.plural")
    errs += _validate_stored_versions(spec, old)
    if spec["preserveUnknownFields"] and (old_spec is None or not old_spec["preserveUnknownFields"]):
        errs.append(
            _invalid(
                "spec.preserveUnknownFields",
                True,
                "cannot set to true, set x-kubernetes-preserve-unknown-fields to true in "
                "spec.versions[*].schema instead",
            )
        )
    return errs


def _is_established(crd: Mapping[str, Any] | None) -> bool:
    for c in ((crd or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Established" and c.get("status") == "True":
            return True
    return False


def _immutable(new: Any, old: Any, path: str) -> list[FieldError]:
    """apimachinery ValidateImmutableField."""
    return [] if new == old else [_invalid(path, new, "field is immutable")]


def _validate_object_meta(crd: Mapping[str, Any], spec: dict[str, Any]) -> list[FieldError]:
    """ValidateObjectMeta (name and namespace) with the CRD's nameValidationFn."""
    meta = crd.get("metadata") or {}
    name = str(meta.get("name") or "")
    errs: list[FieldError] = []
    if not name and not meta.get("generateName"):
        errs.append(_required("metadata.name", "name or generateName is required"))
    elif name:
        msgs = is_dns1123_subdomain(name)
        required_name = f"{spec['names'].get('plural', '')}.{spec['group']}"
        if name != required_name:
            msgs.append('must be spec.names.plural+"."+spec.group')
        errs += [_invalid("metadata.name", name, m) for m in msgs]
    if meta.get("namespace"):
        errs.append(_forbidden("metadata.namespace", "not allowed on this type"))
    return errs


def _validate_stored_versions(spec: dict[str, Any], old: Mapping[str, Any] | None) -> list[FieldError]:
    """PrepareForCreate/PrepareForUpdate fill status.storedVersions; then they are validated."""
    path = "status.storedVersions"
    stored: list[str] = list(((old or {}).get("status") or {}).get("storedVersions") or [])
    if old is not None and not stored:
        stored = [v.get("name") for v in (old.get("spec") or {}).get("versions") or [] if v.get("storage")]
    for v in spec["versions"]:
        if v["storage"] and v["name"] not in stored:
            stored.append(v["name"])
    if not stored:
        return [_invalid(path, GoRepr("[]string{}"), "must have at least one stored version")]
    names = {v["name"] for v in spec["versions"]}
    errs = []
    for i, v in enumerate(stored):
        if v not in names:
            errs.append(
                _invalid(
                    _index(path, i),
                    v,
                    f"missing from spec.versions; {v} was previously a storage version, and must remain in "
                    f"spec.versions until a storage migration ensures no data remains persisted in {v} and "
                    f"removes {v} from status.storedVersions",
                )
            )
    return errs


def _go_versions(versions: list[dict[str, Any]]) -> GoRepr:
    """%#v of []apiextensions.CustomResourceDefinitionVersion (pointer addresses are placeholders)."""

    def ptr(t: str, v: Any) -> str:
        return f"(*{t})(nil)" if v is None else f"(*{t})(0xc000000000)"

    def cols(cs: list[dict[str, Any]]) -> str:
        if not cs:
            return "[]apiextensions.CustomResourceColumnDefinition(nil)"
        return (
            "[]apiextensions.CustomResourceColumnDefinition{"
            + ", ".join(
                f"apiextensions.CustomResourceColumnDefinition{{Name:{_go_quote(c['name'])}, "
                f"Type:{_go_quote(c['type'])}, Format:{_go_quote(c['format'])}, "
                f"Description:{_go_quote(c['description'])}, Priority:{c['priority']}, "
                f"JSONPath:{_go_quote(c['JSONPath'])}}}"
                for c in cs
            )
            + "}"
        )

    parts = []
    for v in versions:
        fields = v["selectableFields"]
        sel = (
            "[]apiextensions.SelectableField(nil)"
            if not fields
            else "[]apiextensions.SelectableField{"
            + ", ".join(
                f"apiextensions.SelectableField{{JSONPath:{_go_quote(f.get('jsonPath', ''))}}}"
                for f in fields
            )
            + "}"
        )
        parts.append(
            f"apiextensions.CustomResourceDefinitionVersion{{Name:{_go_quote(v['name'])}, "
            f"Served:{str(v['served']).lower()}, Storage:{str(v['storage']).lower()}, "
            f"Deprecated:{str(v['deprecated']).lower()}, "
            f"DeprecationWarning:{ptr('string', v['deprecationWarning'])}, "
            f"Schema:{ptr('apiextensions.CustomResourceValidation', v['schema'])}, "
            f"Subresources:{ptr('apiextensions.CustomResourceSubresources', v['subresources'])}, "
            f"AdditionalPrinterColumns:{cols(v['additionalPrinterColumns'])}, SelectableFields:{sel}}}"
        )
    return GoRepr("[]apiextensions.CustomResourceDefinitionVersion{" + ", ".join(parts) + "}")


# --------------------------------------------------------------------------------------------------
# spec (validateCustomResourceDefinitionSpec)
# --------------------------------------------------------------------------------------------------


def _schemas_of(spec: dict[str, Any]) -> Iterator[Schema]:
    if spec["validation"] and isinstance(spec["validation"].get("openAPIV3Schema"), dict):
        yield spec["validation"]["openAPIV3Schema"]
    for v in spec["versions"]:
        if v["schema"] and isinstance(v["schema"].get("openAPIV3Schema"), dict):
            yield v["schema"]["openAPIV3Schema"]


def _has_schema_with(spec: dict[str, Any], pred: Any) -> bool:
    return any(_schema_has(s, pred) for s in _schemas_of(spec))


def _sub_schemas(s: Schema) -> Iterator[Any]:
    items = s.get("items")
    if isinstance(items, dict):
        yield items
    elif isinstance(items, list):
        yield from items
    for key in ("allOf", "anyOf", "oneOf"):
        yield from s.get(key) or []
    if isinstance(s.get("not"), dict):
        yield s["not"]
    for key in ("properties", "patternProperties", "definitions"):
        yield from (s.get(key) or {}).values()
    for key in ("additionalProperties", "additionalItems"):
        if isinstance(s.get(key), dict):
            yield s[key]
    for dep in (s.get("dependencies") or {}).values():
        if isinstance(dep, dict):
            yield dep


def _schema_has(s: Any, pred: Any) -> bool:
    """validation.go SchemaHas."""
    if not isinstance(s, dict):
        return False
    if pred(s):
        return True
    return any(_schema_has(sub, pred) for sub in _sub_schemas(s))


def _has_non_atomic_set_type(s: Schema) -> bool:
    items = s.get("items")
    if s.get("x-kubernetes-list-type") == "set" and isinstance(items, dict):
        if items.get("type") == "array":
            return items.get("x-kubernetes-list-type") not in (None, "atomic")
        if items.get("type") == "object":
            return items.get("x-kubernetes-map-type") != "atomic"
    return False


def _unchanged_schema_versions(spec: dict[str, Any], old: dict[str, Any]) -> Iterator[str]:
    def schema_for(s: dict[str, Any], name: str) -> Any:
        if s["validation"] is not None:
            return s["validation"]
        for v in s["versions"]:
            if v["name"] == name:
                return v["schema"]
        return ...

    for v in spec["versions"]:
        new_s, old_s = schema_for(spec, v["name"]), schema_for(old, v["name"])
        if new_s is not ... and new_s == old_s:
            yield v["name"]


_OPENAPI_V3_TYPES = ["array", "boolean", "integer", "number", "object", "string"]
_PRINTER_COLUMN_TYPES = ["boolean", "date", "integer", "number", "string"]
_COLUMN_FORMATS = ["byte", "date", "date-time", "double", "float", "int32", "int64", "password"]


def _validate_spec(spec: dict[str, Any], opts: _Options, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    group = spec["group"]
    if not group:
        errs.append(_required(_child(path, "group")))
    elif msgs := is_dns1123_subdomain(group):
        errs.append(_invalid(_child(path, "group"), group, ",".join(msgs)))
    elif len(group.split(".")) < 2:
        errs.append(_invalid(_child(path, "group"), group, "should be a domain with at least one dot"))
    errs += _validate_enum(_child(path, "scope"), spec["scope"], ["Cluster", "Namespaced"], True)

    if not spec["preserveUnknownFields"]:
        opts.require_structural_schema = True
    if opts.require_open_api_schema and not (
        spec["validation"] and spec["validation"].get("openAPIV3Schema") is not None
    ):
        for i, v in enumerate(spec["versions"]):
            if not (v["schema"] and v["schema"].get("openAPIV3Schema") is not None):
                errs.append(
                    _required(
                        _child(_index(_child(path, "versions"), i), "schema", "openAPIV3Schema"),
                        "schemas are required",
                    )
                )
    if opts.allow_defaults and _has_schema_with(spec, lambda s: s.get("default") is not None):
        opts.require_structural_schema = True
        if spec["preserveUnknownFields"]:
            errs.append(
                _invalid(
                    _child(path, "preserveUnknownFields"),
                    True,
                    "must be false in order to use defaults in the schema",
                )
            )

    storage = 0
    seen: set[str] = set()
    unique = True
    for i, v in enumerate(spec["versions"]):
        vpath = _index(_child(path, "versions"), i)
        if v["storage"]:
            storage += 1
        if v["name"] in seen:
            unique = False
        seen.add(v["name"])
        if msgs := is_dns1035_label(v["name"]):
            errs.append(_invalid(_child(vpath, "name"), v["name"], ",".join(msgs)))
        subresources = spec["subresources"] if not _per_version(spec, "subresources") else v["subresources"]
        errs += _validate_version(v, vpath, _status_enabled(subresources), opts)

    if spec["validation"] is not None and _per_version(spec, "schema"):
        errs.append(
            _forbidden(_child(path, "validation"), "top-level and per-version schemas are mutually exclusive")
        )
    if spec["subresources"] is not None and _per_version(spec, "subresources"):
        errs.append(
            _forbidden(
                _child(path, "subresources"), "top-level and per-version subresources are mutually exclusive"
            )
        )
    if spec["additionalPrinterColumns"] and any(v["additionalPrinterColumns"] for v in spec["versions"]):
        errs.append(
            _forbidden(
                _child(path, "additionalPrinterColumns"),
                "top-level and per-version additionalPrinterColumns are mutually exclusive",
            )
        )
    if not unique:
        errs.append(
            _invalid(
                _child(path, "versions"), _go_versions(spec["versions"]), "must contain unique version names"
            )
        )
    if storage != 1:
        errs.append(
            _invalid(
                _child(path, "versions"),
                _go_versions(spec["versions"]),
                "must have exactly one version marked as storage version",
            )
        )
    names = spec["names"]
    for key in ("plural", "singular", "kind", "listKind"):
        if not names.get(key):
            errs.append(_required(_child(path, "names", key)))
    errs += _validate_names(names, _child(path, "names"))
    status_any = _status_enabled(spec["subresources"]) or any(
        _status_enabled(v["subresources"]) for v in spec["versions"]
    )
    version_opts = _suppressed(opts, spec["version"])
    errs += _validate_validation(spec["validation"], status_any, version_opts, _child(path, "validation"))
    errs += _validate_subresources(spec["subresources"], _child(path, "subresources"))
    for i, col in enumerate(spec["additionalPrinterColumns"]):
        errs += _validate_column(col, _index(_child(path, "additionalPrinterColumns"), i))
    conversion = spec["conversion"]
    if conversion.get("strategy") != "None" and spec["preserveUnknownFields"]:
        errs.append(
            _invalid(
                _child(path, "conversion", "strategy"),
                conversion.get("strategy"),
                "must be None if spec.preserveUnknownFields is true",
            )
        )
    errs += _validate_conversion(conversion, _child(path, "conversion"))
    return errs


def _suppressed(opts: _Options, version: str) -> _Options:
    if version in opts.unchanged_schema_versions:
        return _Options(**{**vars(opts), "suppress_per_expression_cost": True})
    return opts


def _per_version(spec: dict[str, Any], key: str) -> bool:
    return any(v[key] is not None for v in spec["versions"])


def _status_enabled(subresources: Any) -> bool:
    return isinstance(subresources, dict) and subresources.get("status") is not None


def _validate_enum(path: str, value: str, accepted: list[str], required: bool) -> list[FieldError]:
    if not value:
        return [_required(path)] if required else []
    return [] if value in accepted else [_not_supported(path, value, accepted)]


def _validate_version(v: dict[str, Any], path: str, status_enabled: bool, opts: _Options) -> list[FieldError]:
    errs: list[FieldError] = []
    warning = v["deprecationWarning"]
    for msg in _deprecation_warning_errors(v["deprecated"], warning):
        errs.append(_invalid(_child(path, "deprecationWarning"), warning, msg))
    errs += _validate_validation(
        v["schema"], status_enabled, _suppressed(opts, v["name"]), _child(path, "schema")
    )
    errs += _validate_subresources(v["subresources"], _child(path, "subresources"))
    for i, col in enumerate(v["additionalPrinterColumns"]):
        errs += _validate_column(col, _index(_child(path, "additionalPrinterColumns"), i))
    return errs


def _deprecation_warning_errors(deprecated: bool, warning: str | None) -> list[str]:
    if not deprecated and warning is not None:
        return ["can only be set for deprecated versions"]
    if warning is None:
        return []
    errs = []
    if len(warning.encode()) > 256:
        errs.append("must be <= 256 characters long")
    if not warning:
        errs.append("must not be an empty string")
    offset = 0
    for ch in warning:
        if not ch.isprintable():
            errs.append(
                "must only contain printable UTF-8 characters; "
                f"non-printable character found at index {offset}"
            )
            break
        offset += len(ch.encode())
    return errs


def _validate_names(names: dict[str, Any], path: str) -> list[FieldError]:
    """ValidateCustomResourceDefinitionNames."""
    errs: list[FieldError] = []
    for key in ("plural", "singular"):
        value = names.get(key) or ""
        if value and (msgs := is_dns1035_label(value)):
            errs.append(_invalid(_child(path, key), value, ",".join(msgs)))
    for key in ("kind", "listKind"):
        value = names.get(key) or ""
        if value and (msgs := is_dns1035_label(value.lower())):
            errs.append(
                _invalid(
                    _child(path, key),
                    value,
                    "may have mixed case, but should otherwise match: " + ",".join(msgs),
                )
            )
    for i, short in enumerate(names.get("shortNames") or []):
        if msgs := is_dns1035_label(short):
            errs.append(_invalid(_index(_child(path, "shortNames"), i), short, ",".join(msgs)))
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        errs.append(
            _invalid(_child(path, "listKind"), names["listKind"], "kind and listKind may not be the same")
        )
    for i, cat in enumerate(names.get("categories") or []):
        if msgs := is_dns1035_label(cat):
            errs.append(_invalid(_index(_child(path, "categories"), i), cat, ",".join(msgs)))
    return errs


def _validate_column(col: dict[str, Any], path: str) -> list[FieldError]:
    """ValidateCustomResourceColumnDefinition (note the server's field name JSONPath)."""
    errs: list[FieldError] = []
    if not col["name"]:
        errs.append(_required(_child(path, "name")))
    must = "must be one of " + ",".join(_PRINTER_COLUMN_TYPES)
    if not col["type"]:
        errs.append(_required(_child(path, "type"), must))
    elif col["type"] not in _PRINTER_COLUMN_TYPES:
        errs.append(_invalid(_child(path, "type"), col["type"], must))
    if col["format"] and col["format"] not in _COLUMN_FORMATS:
        errs.append(
            _invalid(_child(path, "format"), col["format"], "must be one of " + ",".join(_COLUMN_FORMATS))
        )
    if not col["JSONPath"]:
        errs.append(_required(_child(path, "JSONPath")))
    else:
        errs += _validate_simple_json_path(col["JSONPath"], _child(path, "JSONPath"))
    return errs


def _validate_simple_json_path(s: str, path: str) -> list[FieldError]:
    """validateSimpleJSONPath (its "dot notation" branch can never fire: strings.Split never returns [])."""
    if not s:
        return [_invalid(path, s, "must not be empty")]
    if s[0] != ".":
        return [_invalid(path, s, "must be a simple json path starting with .")]
    return []


def _validate_subresources(sub: Any, path: str) -> list[FieldError]:
    """ValidateCustomResourceDefinitionSubresources."""
    if not isinstance(sub, dict) or sub.get("scale") is None:
        return []
    scale = sub["scale"]
    errs: list[FieldError] = []
    for key, prefix, where in (
        ("specReplicasPath", (".spec.",), "should be a json path under .spec"),
        ("statusReplicasPath", (".status.",), "should be a json path under .status"),
    ):
        p = _child(path, f"scale.{key}")
        value = scale.get(key) or ""
        if not value:
            errs.append(_required(p))
        elif e := _validate_simple_json_path(value, p):
            errs += e
        elif not value.startswith(prefix):
            errs.append(_invalid(p, value, where))
    selector = scale.get("labelSelectorPath")
    if selector:
        p = _child(path, "scale.labelSelectorPath")
        if e := _validate_simple_json_path(selector, p):
            errs += e
        elif not selector.startswith((".spec.", ".status.")):
            errs.append(_invalid(p, selector, "should be a json path under either .spec or .status"))
    return errs


def _validate_conversion(conversion: dict[str, Any], path: str) -> list[FieldError]:
    """validateCustomResourceConversion (webhook url/service/caBundle checks are not ported)."""
    errs = _validate_enum(
        _child(path, "strategy"), conversion.get("strategy") or "", ["None", "Webhook"], True
    )
    if conversion.get("strategy") == "Webhook":
        cc = conversion.get("webhookClientConfig")
        if cc is None:
            errs.append(
                _required(_child(path, "webhookClientConfig"), "required when strategy is set to Webhook")
            )
        elif (cc.get("url") is None) == (cc.get("service") is None):
            errs.append(
                _required(_child(path, "webhookClientConfig"), "exactly one of url or service is required")
            )
        versions = conversion.get("conversionReviewVersions") or []
        vpath = _child(path, "conversionReviewVersions")
        if not versions:
            errs.append(_required(vpath))
        else:
            seen: set[str] = set()
            accepted = False
            for i, v in enumerate(versions):
                if v in seen:
                    errs.append(_invalid(_index(vpath, i), v, "duplicate version"))
                    continue
                seen.add(v)
                errs += [_invalid(_index(vpath, i), v, m) for m in is_dns1035_label(v)]
                accepted = accepted or v in ("v1", "v1beta1")
            if not accepted:
                errs.append(
                    _invalid(vpath, _string_slice(versions), "must include at least one of v1, v1beta1")
                )
    else:
        if conversion.get("webhookClientConfig") is not None:
            errs.append(
                _forbidden(
                    _child(path, "webhookClientConfig"),
                    "should not be set when strategy is not set to Webhook",
                )
            )
        if conversion.get("conversionReviewVersions"):
            errs.append(
                _forbidden(
                    _child(path, "conversionReviewVersions"),
                    "should not be set when strategy is not set to Webhook",
                )
            )
    return errs


# --------------------------------------------------------------------------------------------------
# spec.validation / versions[].schema (validateCustomResourceDefinitionValidation)
# --------------------------------------------------------------------------------------------------

# JSONSchemaProps fields in Go struct order, with their JSON names.
_GO_FIELDS = [
    ("ID", "id"),
    ("Schema", "$schema"),
    ("Ref", "$ref"),
    ("Description", "description"),
    ("Type", "type"),
    ("Format", "format"),
    ("Title", "title"),
    ("Default", "default"),
    ("Maximum", "maximum"),
    ("ExclusiveMaximum", "exclusiveMaximum"),
    ("Minimum", "minimum"),
    ("ExclusiveMinimum", "exclusiveMinimum"),
    ("MaxLength", "maxLength"),
    ("MinLength", "minLength"),
    ("Pattern", "pattern"),
    ("MaxItems", "maxItems"),
    ("MinItems", "minItems"),
    ("UniqueItems", "uniqueItems"),
    ("MultipleOf", "multipleOf"),
    ("Enum", "enum"),
    ("MaxProperties", "maxProperties"),
    ("MinProperties", "minProperties"),
    ("Required", "required"),
    ("Items", "items"),
    ("AllOf", "allOf"),
    ("OneOf", "oneOf"),
    ("AnyOf", "anyOf"),
    ("Not", "not"),
    ("Properties", "properties"),
    ("AdditionalProperties", "additionalProperties"),
    ("PatternProperties", "patternProperties"),
    ("Dependencies", "dependencies"),
    ("AdditionalItems", "additionalItems"),
    ("Definitions", "definitions"),
    ("ExternalDocs", "externalDocs"),
    ("Example", "example"),
    ("Nullable", "nullable"),
    ("XPreserveUnknownFields", "x-kubernetes-preserve-unknown-fields"),
    ("XEmbeddedResource", "x-kubernetes-embedded-resource"),
    ("XIntOrString", "x-kubernetes-int-or-string"),
    ("XListMapKeys", "x-kubernetes-list-map-keys"),
    ("XListType", "x-kubernetes-list-type"),
    ("XMapType", "x-kubernetes-map-type"),
    ("XValidations", "x-kubernetes-validations"),
]
_ALLOWED_AT_ROOT = [
    "Description",
    "Type",
    "Format",
    "Title",
    "Maximum",
    "ExclusiveMaximum",
    "Minimum",
    "ExclusiveMinimum",
    "MaxLength",
    "MinLength",
    "Pattern",
    "MaxItems",
    "MinItems",
    "UniqueItems",
    "MultipleOf",
    "Required",
    "Items",
    "Properties",
    "ExternalDocs",
    "Example",
    "XPreserveUnknownFields",
    "XValidations",
]
# Fields whose Go type is a plain bool or string: false/"" is their zero value. Others are pointers,
# slices or maps, non-zero once present (decoding `[]` gives an empty, non-nil slice).
_VALUE_FIELDS = {
    "ID",
    "Schema",
    "Description",
    "Type",
    "Format",
    "Title",
    "Pattern",
    "ExclusiveMaximum",
    "ExclusiveMinimum",
    "UniqueItems",
    "Nullable",
    "XEmbeddedResource",
    "XIntOrString",
}


def _is_zero(go_name: str, value: Any) -> bool:
    if value is None:
        return True
    if go_name in _VALUE_FIELDS:
        return value in (False, "")
    return False


def _validate_validation(
    validation: Any, status_enabled: bool, opts: _Options, path: str
) -> list[FieldError]:
    errs: list[FieldError] = []
    if not isinstance(validation, dict):
        return errs
    schema = validation.get("openAPIV3Schema")
    if not isinstance(schema, dict):
        return errs
    spath = _child(path, "openAPIV3Schema")
    if status_enabled:
        for go_name, json_name in _GO_FIELDS:
            if _is_zero(go_name, schema.get(json_name)):
                continue
            if go_name == "Type":
                if schema.get("type") != "object":
                    errs.append(
                        _invalid(
                            _child(path, "openAPIV3Schema.type"),
                            schema.get("type"),
                            'only "object" is allowed as the type at the root of the schema if the status '
                            "subresource is enabled",
                        )
                    )
                    break
                continue
            if go_name not in _ALLOWED_AT_ROOT:
                errs.append(
                    _invalid(
                        spath,
                        GoRepr("apiextensions.JSONSchemaProps{...}"),
                        f"only [{' '.join(_ALLOWED_AT_ROOT)}] fields are allowed at the root of the schema "
                        "if the status subresource is enabled",
                    )
                )
                break
    if schema.get("nullable"):
        errs.append(
            _forbidden(_child(path, "openAPIV3Schema.nullable"), "nullable cannot be true at the root")
        )

    ssv = _SSV(
        allow_defaults=opts.allow_defaults, require_valid_property_type=opts.require_valid_property_type
    )
    cel_ctx: _CELContext | None = None
    init_errs: list[FieldError] = []
    if opts.require_structural_schema:
        problem = _new_structural_error(schema)
        if problem is not None:
            init_errs.append(_invalid(spath, "", problem))
        elif verrs := validate_structural(spath, schema):
            errs += verrs
        elif derrs := validate_defaults(spath, schema, opts.require_pruned_defaults):
            errs += derrs
        else:
            cel_ctx = _CELContext(
                schema=schema,
                in_scope=bool(schema.get("x-kubernetes-validations")),
                max_cardinality=1,
                total=_TotalCost(),
                is_root=True,
            )
    schema_errs, cel_errs = _validate_openapi_schema(schema, spath, ssv, True, opts, cel_ctx)
    errs += schema_errs + cel_errs
    if not errs and init_errs:
        errs += init_errs
    if cel_ctx is not None and cel_ctx.total.total > STATIC_ESTIMATED_CRD_COST_LIMIT:
        for rule_path, _cost in cel_ctx.total.most_expensive:
            errs.append(
                _forbidden(
                    rule_path,
                    "contributed to estimated rule cost total exceeding cost limit for entire "
                    "OpenAPIv3 schema",
                )
            )
        errs.append(
            _forbidden(
                spath,
                cost_error_message(
                    "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                    cel_ctx.total.total,
                    STATIC_ESTIMATED_CRD_COST_LIMIT,
                ),
            )
        )
    return errs


def cost_error_message(name: str, cost: int, limit: int) -> str:
    """validation.go getCostErrorMessage."""
    factor = cost / limit
    if factor > 100.0:
        f = "more than 100x"
    elif factor < 1.5:
        f = f"{factor:f}x"  # %f: "1.000000x" rather than "1.0x"
    else:
        f = f"{factor:.1f}x"
    return (
        f"{name} exceeds budget by factor of {f} (try simplifying the rule, or adding maxItems, "
        "maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )


# --------------------------------------------------------------------------------------------------
# NewStructural (convert.go)
# --------------------------------------------------------------------------------------------------


def _new_structural_error(s: Any) -> str | None:
    """The error NewStructural returns for a schema, or None."""
    if not isinstance(s, dict):
        return None
    if s.get("id"):
        return "OpenAPIV3Schema 'id' is not supported"
    if s.get("$schema"):
        return "OpenAPIV3Schema 'schema' is not supported"
    if s.get("$ref"):
        return "OpenAPIV3Schema '$ref' is not supported"
    if s.get("patternProperties"):
        return "OpenAPIV3Schema 'patternProperties' is not supported"
    if s.get("dependencies"):
        return "OpenAPIV3Schema 'dependencies' is not supported"
    if s.get("additionalItems") is not None:
        return "OpenAPIV3Schema 'additionalItems' is not supported"
    if s.get("definitions"):
        return "OpenAPIV3Schema 'definitions' is not supported"
    if s.get("x-kubernetes-preserve-unknown-fields") is False:
        return "internal error: 'x-kubernetes-preserve-unknown-fields' must be true or undefined"
    if isinstance(s.get("items"), list) and s["items"]:
        return "OpenAPIV3Schema 'items' must be a schema, but is an array"
    for sub in _sub_schemas(s):
        problem = _new_structural_error(sub)
        if problem is not None:
            return problem
    return None


# --------------------------------------------------------------------------------------------------
# ValidateStructural (schema/validation.go, schema/complete.go)
# --------------------------------------------------------------------------------------------------

_ROOT, _ITEM, _FIELD = 0, 1, 2
_VALUE_VALIDATION_KEYS = (
    "format",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "enum",
    "maxProperties",
    "minProperties",
    "required",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
)
_INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]


def _set(s: Schema, key: str) -> bool:
    """Whether a Structural field is non-zero (bools false, strings "" and empty junctor lists are zero)."""
    v = s.get(key)
    if v is None or v is False or v == "":
        return False
    return not (
        key in ("enum", "allOf", "oneOf", "anyOf", "x-kubernetes-list-map-keys", "x-kubernetes-validations")
        and v == []
    )


def validate_structural(path: str, s: Schema) -> list[FieldError]:
    """ValidateStructural: invariants and completeness, sorted by message like the server does."""
    errs = _structural_invariants(s, _ROOT, path)
    errs += _value_validation_completeness(s, s, path, path)
    return sorted(errs, key=str)


def _structural_invariants(s: Any, lvl: int, path: str) -> list[FieldError]:
    if not isinstance(s, dict):
        return []
    errs: list[FieldError] = []
    if s.get("type") == "array" and not isinstance(s.get("items"), dict):
        errs.append(_required(_child(path, "items"), "must be specified"))
    errs += _structural_invariants(s.get("items"), _ITEM, _child(path, "items"))
    for k, v in (s.get("properties") or {}).items():
        errs += _structural_invariants(v, _FIELD, _key(_child(path, "properties"), k))
    ap = s.get("additionalProperties")
    if ap is not None:
        if lvl == _ROOT:
            errs.append(_forbidden(_child(path, "additionalProperties"), "must not be used at the root"))
        if isinstance(ap, dict):
            errs += _structural_invariants(ap, _FIELD, _child(path, "additionalProperties"))
    int_or_string = bool(s.get("x-kubernetes-int-or-string"))
    preserve = bool(s.get("x-kubernetes-preserve-unknown-fields"))
    embedded = bool(s.get("x-kubernetes-embedded-resource"))
    if int_or_string and preserve:
        errs.append(
            _invalid(
                _child(path, "x-kubernetes-preserve-unknown-fields"),
                True,
                "must be false if x-kubernetes-int-or-string is true",
            )
        )
    if int_or_string and embedded:
        errs.append(
            _invalid(
                _child(path, "x-kubernetes-embedded-resource"),
                True,
                "must be false if x-kubernetes-int-or-string is true",
            )
        )
    skip_any_of = (s.get("anyOf") or None) == _INT_OR_STRING_ANY_OF
    all_of = s.get("allOf") or []
    skip_first = (
        bool(all_of) and isinstance(all_of[0], dict) and all_of[0].get("anyOf") == _INT_OR_STRING_ANY_OF
    )
    errs += _value_validation(s, skip_any_of, skip_first, lvl, path)
    typ = s.get("type") or ""
    check_metadata = lvl == _ROOT or embedded
    if embedded and typ != "object":
        msg = "must be object if x-kubernetes-embedded-resource is true"
        errs.append(
            _required(_child(path, "type"), msg) if not typ else _invalid(_child(path, "type"), typ, msg)
        )
    elif not typ and not int_or_string and not preserve:
        msg = {
            _ROOT: "must not be empty at the root",
            _ITEM: "must not be empty for specified array items",
            _FIELD: "must not be empty for specified object fields",
        }[lvl]
        errs.append(_required(_child(path, "type"), msg))
    if embedded and ap is not None:
        errs.append(
            _forbidden(
                _child(path, "additionalProperties"),
                "must not be used if x-kubernetes-embedded-resource is set",
            )
        )
    if lvl == _ROOT and typ and typ != "object":
        errs.append(_invalid(_child(path, "type"), typ, "must be object at the root"))
    props = s.get("properties") or {}
    for meta_field in ("kind", "apiVersion"):
        if meta_field in props and check_metadata and (props[meta_field] or {}).get("type") != "string":
            errs.append(
                _invalid(
                    _child(_key(_child(path, "properties"), meta_field), "type"),
                    (props[meta_field] or {}).get("type") or "",
                    "must be string",
                )
            )
    if "metadata" in props:
        errs += _metadata_invariants(
            props["metadata"] or {}, check_metadata, lvl, _key(_child(path, "properties"), "metadata")
        )
    if embedded and not preserve and not props:
        errs.append(
            _required(
                _child(path, "properties"),
                "must not be empty if x-kubernetes-embedded-resource is true without "
                "x-kubernetes-preserve-unknown-fields",
            )
        )
    return errs


def _metadata_invariants(s: Schema, check: bool, lvl: int, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    if check and s.get("type") != "object":
        errs.append(_invalid(_child(path, "type"), s.get("type") or "", "must be object"))
    if lvl == _ROOT:
        # Only name/generateName may be restricted; type and default are checked elsewhere, so they are
        # cleared before comparing with the empty Structural (validateStructuralMetadataInvariants).
        props = dict(s.get("properties") or {})
        if ("name" in props and "generateName" in props and len(props) == 2) or (
            ("name" in props or "generateName" in props) and len(props) == 1
        ):
            props = {}
        rest = {
            k: v
            for k, v in s.items()
            if k not in ("type", "default", "properties", "externalDocs", "example")
        }
        if props or any(_set(rest, k) for k in rest):
            errs.append(
                _forbidden(
                    path,
                    "must not specify anything other than name and generateName, "
                    "but metadata is implicitly specified",
                )
            )
    return errs


def _value_validation(
    s: Schema, skip_any_of: bool, skip_first_all_of_any_of: bool, lvl: int, path: str
) -> list[FieldError]:
    errs: list[FieldError] = []
    if not skip_any_of:
        for i, sub in enumerate(s.get("anyOf") or []):
            errs += _nested_value_validation(sub, False, lvl, _index(_child(path, "anyOf"), i))
    for i, sub in enumerate(s.get("allOf") or []):
        errs += _nested_value_validation(
            sub, skip_first_all_of_any_of and i == 0, lvl, _index(_child(path, "allOf"), i)
        )
    for i, sub in enumerate(s.get("oneOf") or []):
        errs += _nested_value_validation(sub, False, lvl, _index(_child(path, "oneOf"), i))
    if isinstance(s.get("not"), dict):
        errs += _nested_value_validation(s["not"], False, lvl, _child(path, "not"))
    pattern = s.get("pattern")
    if pattern:
        problem = go_regexp_error(str(pattern))
        if problem is not None:
            errs.append(
                _invalid(
                    _child(path, "pattern"),
                    pattern,
                    f"must be a valid regular expression, but isn't: {problem}",
                )
            )
    return errs


def _nested_value_validation(v: Any, skip_any_of: bool, lvl: int, path: str) -> list[FieldError]:
    if not isinstance(v, dict):
        return []
    errs = _value_validation(v, skip_any_of, False, lvl, path)
    if isinstance(v.get("items"), dict):
        errs += _nested_value_validation(v["items"], False, lvl, _child(path, "items"))
    for k, sub in (v.get("properties") or {}).items():
        errs += _nested_value_validation(sub, False, _FIELD, _key(_child(path, "properties"), k))
    if _set(v, "type"):
        errs.append(_forbidden(_child(path, "type"), "must be empty to be structural"))
    if v.get("additionalProperties") is not None:
        errs.append(_forbidden(_child(path, "additionalProperties"), "must be undefined to be structural"))
    if v.get("default") is not None:
        errs.append(_forbidden(_child(path, "default"), "must be undefined to be structural"))
    for key, msg in (
        ("title", "must be empty to be structural"),
        ("description", "must be empty to be structural"),
        ("nullable", "must be false to be structural"),
        ("x-kubernetes-preserve-unknown-fields", "must be false to be structural"),
        ("x-kubernetes-embedded-resource", "must be false to be structural"),
        ("x-kubernetes-int-or-string", "must be false to be structural"),
        ("x-kubernetes-list-map-keys", "must be empty to be structural"),
        ("x-kubernetes-list-type", "must be undefined to be structural"),
        ("x-kubernetes-map-type", "must be undefined to be structural"),
        ("x-kubernetes-validations", "must be empty to be structural"),
    ):
        if _set(v, key):
            errs.append(_forbidden(_child(path, key), msg))
    if "metadata" in (v.get("properties") or {}):
        errs.append(
            _forbidden(
                _key(_child(path, "properties"), "metadata"), "must not be specified in a nested context"
            )
        )
    return errs


def _value_validation_completeness(v: Schema, s: Any, s_path: str, v_path: str) -> list[FieldError]:
    if not isinstance(s, dict):
        return [_required(s_path, f"because it is defined in {v_path}")]
    errs: list[FieldError] = []
    if isinstance(v.get("not"), dict):
        errs += _nested_completeness(v["not"], s, s_path, _child(v_path, "not"))
    for key in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(v.get(key) or []):
            errs += _nested_completeness(sub, s, s_path, _index(_child(v_path, key), i))
    return errs


def _nested_completeness(v: Any, s: Any, s_path: str, v_path: str) -> list[FieldError]:
    if not isinstance(v, dict):
        return []
    if not isinstance(s, dict):
        return [_required(s_path, f"because it is defined in {v_path}")]
    errs = _value_validation_completeness(v, s, s_path, v_path)
    if isinstance(v.get("items"), dict):
        errs += _nested_completeness(
            v["items"],
            s.get("items") if isinstance(s.get("items"), dict) else None,
            _child(s_path, "items"),
            _child(v_path, "items"),
        )
    s_props = s.get("properties") or {}
    for k, sub in (v.get("properties") or {}).items():
        if k not in s_props:
            errs.append(
                _required(
                    _key(_child(s_path, "properties"), k),
                    f"because it is defined in {_key(_child(v_path, 'properties'), k)}",
                )
            )
        else:
            errs += _nested_completeness(
                sub, s_props[k], _key(_child(s_path, "properties"), k), _key(_child(v_path, "properties"), k)
            )
    return errs


_GO_REGEXP_CODES = {
    "invalid perl operator": "invalid or unsupported Perl syntax",
    "missing )": "missing closing )",
    "unexpected )": "unexpected )",
    "missing ]": "missing closing ]",
    "trailing \\": "trailing backslash at end of expression",
    "bad repetition operator": "invalid nested repetition operator",
    "invalid repetition size": "invalid repeat count",
    "invalid character class range": "invalid character class range",
    "invalid character class": "invalid character class",
    "invalid named capture group": "invalid named capture",
    "invalid escape sequence": "invalid escape sequence",
    "no argument for repetition operator": "missing argument to repetition operator",
    "invalid UTF-8": "invalid UTF-8",
}


def go_regexp_error(pattern: str) -> str | None:
    """The text of Go's regexp.Compile error (RE2 syntax, RE2's error codes mapped to Go's), or None."""
    try:
        re2.compile(pattern)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else ""
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        code, _, expr = text.partition(": ")
        if code == "trailing \\":
            return "error parsing regexp: trailing backslash at end of expression: ``"
        go_code = _GO_REGEXP_CODES.get(code, code)
        return f"error parsing regexp: {go_code}: `{expr}`"
    return None


# --------------------------------------------------------------------------------------------------
# ValidateDefaults (schema/defaulting/validation.go) with pruning and kube-openapi value validation
# --------------------------------------------------------------------------------------------------


def validate_defaults(path: str, root: Schema, require_pruned: bool) -> list[FieldError]:
    """Defaults must be pruned, valid against their own schema and pass the CEL rules below them."""
    root = {**root, "x-kubernetes-embedded-resource": True}  # isResourceRoot
    return _defaults(path, root, False, require_pruned, root)


def _defaults(
    path: str, s: Any, inside_meta: bool, require_pruned: bool, resource_root: Schema
) -> list[FieldError]:
    if not isinstance(s, dict):
        return []
    if s.get("x-kubernetes-embedded-resource"):
        inside_meta = False
        resource_root = s
    errs: list[FieldError] = []
    if s.get("default") is not None and not inside_meta:
        default = s["default"]
        dpath = _child(path, "default")
        if require_pruned:
            pruned = copy.deepcopy(default)
            prune(pruned, s, bool(s.get("x-kubernetes-embedded-resource")))
            if pruned != default:
                errs.append(
                    _invalid(
                        dpath,
                        GoRepr(_go_repr(default)) if isinstance(default, (dict, list)) else default,
                        "must not have unknown fields",
                    )
                )
        value_errs = openapi_validate(dpath, s, default)
        if value_errs:
            errs += value_errs
        else:
            errs += _cel_default_errors(dpath, s, default, s is resource_root)
    if isinstance(s.get("items"), dict):
        errs += _defaults(_child(path, "items"), s["items"], inside_meta, require_pruned, resource_root)
    for k, sub in (s.get("properties") or {}).items():
        sub_meta = inside_meta or (
            bool(s.get("x-kubernetes-embedded-resource")) and k in ("metadata", "apiVersion", "kind")
        )
        errs += _defaults(_key(_child(path, "properties"), k), sub, sub_meta, require_pruned, resource_root)
    return errs


def prune(x: Any, s: Any, is_resource_root: bool) -> None:
    """pruning/algorithm.go Prune: drop fields the schema does not know, in place."""
    if is_resource_root:
        s = {**(s or {}), "x-kubernetes-embedded-resource": True}
    _prune(x, s)


def _prune(x: Any, s: Any) -> None:
    if isinstance(s, dict) and s.get("x-kubernetes-preserve-unknown-fields"):
        _skip_prune(x, s)
        return
    if isinstance(x, dict):
        if not isinstance(s, dict):
            x.clear()
            return
        props = s.get("properties") or {}
        ap = s.get("additionalProperties")
        for k in list(x):
            v = x[k]
            if s.get("x-kubernetes-embedded-resource"):
                if k in ("apiVersion", "kind") and isinstance(v, str):
                    continue
                if k == "metadata" and isinstance(v, dict):
                    continue
            if k in props:
                _prune(v, props[k])
            elif ap is not None and ap is not False:
                _prune(v, ap if isinstance(ap, dict) else None)
            else:
                del x[k]
    elif isinstance(x, list):
        items = s.get("items") if isinstance(s, dict) else None
        for v in x:
            _prune(v, items)


def _skip_prune(x: Any, s: Schema) -> None:
    if isinstance(x, dict):
        props = s.get("properties") or {}
        ap = s.get("additionalProperties")
        for k, v in x.items():
            if s.get("x-kubernetes-embedded-resource") and k in ("apiVersion", "kind", "metadata"):
                continue
            if k in props:
                _prune(v, props[k])
            elif ap is not None and ap is not False:
                _prune(v, ap if isinstance(ap, dict) else None)
    elif isinstance(x, list):
        for v in x:
            if isinstance(s.get("items"), dict):
                _skip_prune(v, s["items"])


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


def openapi_validate(path: str, s: Schema, value: Any) -> list[FieldError]:
    """kube-openapi's SchemaValidator on a default, as field errors (kubeOpenAPIResultToFieldErrors)."""
    out: list[FieldError] = []
    _openapi(s, value, "", path, out)
    return out


def _openapi(s: Schema, value: Any, name: str, root: str, out: list[FieldError]) -> None:
    err_path = _child(root, name.lstrip(".")) if name and name != "." else root

    def msg(text: str) -> str:
        return f"{name} in body {text}"

    types = (
        ["integer", "string"]
        if s.get("x-kubernetes-int-or-string")
        else ([s["type"]] if s.get("type") else [])
    )
    actual = _json_type(value)
    if value is None:
        if types and not s.get("nullable"):
            out.append(
                FieldError(
                    "Invalid value", err_path, msg(f'must be of type {",".join(types)}: "null"'), "null", True
                )
            )
        return
    if types:
        ok = actual in types or (actual == "integer" and "number" in types)
        ok = ok or (actual == "number" and "integer" in types and float(value).is_integer())
        if not ok:
            out.append(
                FieldError(
                    "Invalid value",
                    err_path,
                    msg(f"must be of type {','.join(types)}: {_go_quote(actual)}"),
                    actual,
                    True,
                )
            )
            return
    if isinstance(value, str):
        if s.get("maxLength") is not None and len(value) > s["maxLength"]:
            out.append(FieldError("Too long", err_path, f"may not be longer than {s['maxLength']}", value))
        if s.get("minLength") is not None and len(value) < s["minLength"]:
            out.append(_invalid(err_path, value, msg(f"should be at least {s['minLength']} chars long")))
        if (
            s.get("pattern")
            and go_regexp_error(str(s["pattern"])) is None
            and not re2.search(s["pattern"], value)
        ):
            out.append(_invalid(err_path, value, msg(f"should match '{s['pattern']}'")))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if s.get("maximum") is not None:
            mx = s["maximum"]
            if value > mx or (s.get("exclusiveMaximum") and value == mx):
                rel = "less than" if s.get("exclusiveMaximum") else "less than or equal to"
                out.append(_invalid(err_path, value, msg(f"should be {rel} {_go_value(mx)}")))
        if s.get("minimum") is not None:
            mn = s["minimum"]
            if value < mn or (s.get("exclusiveMinimum") and value == mn):
                rel = "greater than" if s.get("exclusiveMinimum") else "greater than or equal to"
                out.append(_invalid(err_path, value, msg(f"should be {rel} {_go_value(mn)}")))
        mult = s.get("multipleOf")
        if mult and not float(value / mult).is_integer():
            out.append(_invalid(err_path, value, msg(f"should be a multiple of {_go_value(mult)}")))
    if isinstance(value, list):
        if s.get("maxItems") is not None and len(value) > s["maxItems"]:
            out.append(_too_many(err_path, len(value), int(s["maxItems"])))
        if s.get("minItems") is not None and len(value) < s["minItems"]:
            out.append(_invalid(err_path, len(value), msg(f"should have at least {s['minItems']} items")))
        if isinstance(s.get("items"), dict):
            for i, item in enumerate(value):
                _openapi(s["items"], item, f"{name}.{i}", root, out)
    if "enum" in s and s["enum"] is not None and value not in s["enum"]:
        values = [e if isinstance(e, str) else json.dumps(e, separators=(",", ":")) for e in s["enum"]]
        out.append(_not_supported(err_path, value, values))
    if isinstance(value, dict):
        if s.get("maxProperties") is not None and len(value) > s["maxProperties"]:
            out.append(_too_many(err_path, len(value), int(s["maxProperties"])))
        if s.get("minProperties") is not None and len(value) < s["minProperties"]:
            out.append(
                _invalid(err_path, len(value), msg(f"should have at least {s['minProperties']} properties"))
            )
        for req in s.get("required") or []:
            if req not in value:
                out.append(_required(_child(root, f"{name}.{req}".lstrip("."))))
        props = s.get("properties") or {}
        ap = s.get("additionalProperties")
        for k, v in value.items():
            sub = props.get(k, ap if isinstance(ap, dict) else None)
            if isinstance(sub, dict):
                _openapi(sub, v, f"{name}.{k}" if name else k, root, out)


def _cel_default_errors(path: str, s: Schema, default: Any, is_resource_root: bool) -> list[FieldError]:
    """schema/cel Validator.Validate on a default: once with oldSelf = the default, then with no oldSelf."""
    if not _has_rules(s):
        return []
    errs = _cel_validate(path, s, default, default, True, is_resource_root)
    if not errs:
        errs = _cel_validate(path, s, default, None, False, is_resource_root)
    return errs


def _has_rules(s: Any) -> bool:
    if not isinstance(s, dict):
        return False
    if s.get("x-kubernetes-validations"):
        return True
    ap = s.get("additionalProperties")
    return (
        _has_rules(s.get("items"))
        or (isinstance(ap, dict) and _has_rules(ap))
        or any(_has_rules(p) for p in (s.get("properties") or {}).values())
    )


def _rule_error_string(rule: dict[str, Any]) -> str:
    if rule.get("message"):
        return str(rule["message"]).strip()
    return str(rule.get("rule", "")).strip()


def _cel_validate(path: str, s: Schema, obj: Any, old: Any, has_old: bool, root: bool) -> list[FieldError]:
    if obj is None:
        return []
    errs: list[FieldError] = []
    typ = s.get("type") or ""
    for rule in s.get("x-kubernetes-validations") or []:
        source = str(rule.get("rule", ""))
        if not source.strip():
            continue
        compiled = _compile(source)
        if compiled.error is not None:
            errs.append(_invalid(path, typ, f"rule compile error: compilation failed: {compiled.error}"))
            continue
        optional = bool(rule.get("optionalOldSelf"))
        if compiled.uses_old_self and not has_old and not optional:
            continue  # transition rules need an old value
        activation: dict[str, Any] = {
            "self": _to_cel(obj, s, root=root),
            "sets": _CEL_SETS,
            "optional": _CEL_OPTIONAL,
        }
        if compiled.uses_old_self:
            if optional:
                activation["oldSelf"] = (
                    _Optional(True, _to_cel(old, s, root=root)) if has_old else _Optional(False)
                )
            else:
                activation["oldSelf"] = _to_cel(old, s, root=root)
        result, error = _evaluate(compiled, activation)
        if error is not None:
            errs.append(_invalid(path, typ, f"{error} evaluating rule: {_rule_error_string(rule)}"))
            continue
        if isinstance(result, ct.BoolType) and bool(result):
            continue
        current = path
        fp = rule.get("fieldPath")
        if fp:
            valid, _schema = valid_field_path(str(fp), s)
            if valid is not None:
                current = _child(path, valid)
        detail = (
            str(rule["message"]).strip()
            if rule.get("message")
            else f"failed rule: {_rule_error_string(rule)}"
        )
        mexpr = rule.get("messageExpression")
        if mexpr:
            mc = _compile(str(mexpr))
            if mc.error is None:
                text, merr = _evaluate(mc, activation)
                if merr is None and isinstance(text, str) and text.strip() and "\n" not in text:
                    detail = text.strip()
        value = OMIT if typ in ("object", "array") else obj
        reason = rule.get("reason")
        if reason == "FieldValueForbidden":
            errs.append(_forbidden(current, detail))
        elif reason == "FieldValueRequired":
            errs.append(_required(current, detail))
        elif reason == "FieldValueDuplicate":
            errs.append(FieldError("Duplicate value", current, "", value))
        else:
            errs.append(_invalid(current, value, detail))
    if isinstance(obj, dict):
        props = s.get("properties") or {}
        ap = s.get("additionalProperties")
        correlatable = s.get("x-kubernetes-map-type") in (None, "granular", "atomic")
        for k, v in obj.items():
            sub = props.get(k) if k in props else (ap if isinstance(ap, dict) else None)
            if not isinstance(sub, dict):
                continue
            old_v = old.get(k) if correlatable and isinstance(old, dict) else None
            sub_path = _child(path, k) if k in props else _key(path, k)
            errs += _cel_validate(
                sub_path,
                sub,
                v,
                old_v,
                has_old and old_v is not None,
                bool(sub.get("x-kubernetes-embedded-resource")),
            )
    elif isinstance(obj, list) and isinstance(s.get("items"), dict):
        items = s["items"]
        keys = s.get("x-kubernetes-list-map-keys") or []
        old_by_key: dict[str, Any] = {}
        if s.get("x-kubernetes-list-type") == "map" and isinstance(old, list):
            old_by_key = {json.dumps([o.get(k) for k in keys]): o for o in old if isinstance(o, dict)}
        for i, item in enumerate(obj):
            old_item = (
                old_by_key.get(json.dumps([item.get(k) for k in keys]))
                if isinstance(item, dict) and old_by_key
                else None
            )
            errs += _cel_validate(
                _index(path, i),
                items,
                item,
                old_item,
                has_old and old_item is not None,
                bool(items.get("x-kubernetes-embedded-resource")),
            )
    return errs


# --------------------------------------------------------------------------------------------------
# ValidFieldPath (schema/cel/validation.go)
# --------------------------------------------------------------------------------------------------


def _field_path_tokens(path: str) -> Iterator[str]:
    i = 0
    while i < len(path):
        if path[i] == "'":
            j = i + 1
            while j < len(path) and not (path[j] == "'" and path[j - 1] != "\\"):
                j += 1
            yield path[i : j + 1]
            i = j + 1
        elif path[i] in ".[]":
            yield path[i]
            i += 1
        else:
            j = i
            while j < len(path) and path[j] not in ".[]":
                j += 1
            yield path[i:j]
            i = j


def valid_field_path(json_path: str, schema: Schema) -> tuple[str | None, str | None]:
    """(normalized field path, None) or (None, error)."""
    out = ""
    s: Any = schema
    tokens = list(_field_path_tokens(json_path))
    i = 0

    def step(name: str, named: bool) -> str | None:
        nonlocal out, s
        if not named:
            out = _key(out, name)
            ap = s.get("additionalProperties")
            s = ap if isinstance(ap, dict) else {}
            return None
        out = _child(out, name)
        props = s.get("properties") or {}
        if name not in props:
            return "does not refer to a valid field"
        s = props[name]
        return None

    while i < len(tokens):
        tok = tokens[i]
        if tok == "[":
            if i + 1 >= len(tokens):
                return None, "unexpected end of JSON path"
            tok = tokens[i + 1]
            if len(tok) < 2 or tok[0] != "'" or tok[-1] != "'":
                return None, f"expected single quoted string but got {tok}"
            name = re.sub(r"\\(.)", lambda m: m.group(1), tok[1:-1])
            if s.get("properties"):
                named = True
            elif s.get("additionalProperties") is not None:
                named = False
            else:
                return None, "does not refer to a valid field"
            problem = step(name, named)
            if problem:
                return None, problem
            if i + 2 >= len(tokens):
                return None, "unexpected end of JSON path"
            if tokens[i + 2] != "]":
                return None, f"expected ] but got {tokens[i + 2]}"
            i += 3
        elif tok == ".":
            if i + 1 >= len(tokens):
                return None, "unexpected end of JSON path"
            tok = tokens[i + 1]
            if s.get("properties"):
                named = True
            elif s.get("additionalProperties") is not None:
                named = False
            else:
                return None, "does not refer to a valid field"
            problem = step(tok, named)
            if problem:
                return None, problem
            i += 2
        else:
            return None, f"expected [ or . but got: {tok}"
    return out, None


# --------------------------------------------------------------------------------------------------
# ValidateCustomResourceDefinitionOpenAPISchema (+ specStandardValidatorV3, CEL)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SSV:
    allow_defaults: bool = True
    disallow_defaults_reason: str = ""
    inside_resource_meta: bool = False
    require_valid_property_type: bool = True
    uncorrelatable_path: str | None = None

    def forbidden_defaults(self, reason: str) -> _SSV:
        return _SSV(
            False,
            reason,
            self.inside_resource_meta,
            self.require_valid_property_type,
            self.uncorrelatable_path,
        )

    def inside_meta(self) -> _SSV:
        return _SSV(
            self.allow_defaults,
            self.disallow_defaults_reason,
            True,
            self.require_valid_property_type,
            self.uncorrelatable_path,
        )

    def forbid_old_self(self, path: str) -> _SSV:
        if self.uncorrelatable_path is not None:
            return self  # keep the highest uncorrelatable ancestor
        return _SSV(
            self.allow_defaults,
            self.disallow_defaults_reason,
            self.inside_resource_meta,
            self.require_valid_property_type,
            path,
        )

    def validate(self, s: Schema, path: str) -> list[FieldError]:
        errs: list[FieldError] = []
        typ = s.get("type")
        if self.require_valid_property_type and typ and typ not in _OPENAPI_V3_TYPES:
            errs.append(_not_supported(_child(path, "type"), typ, _OPENAPI_V3_TYPES))
        if s.get("default") is not None and not self.allow_defaults:
            detail = "must not be set"
            if self.disallow_defaults_reason:
                detail += " " + self.disallow_defaults_reason
            errs.append(_forbidden(_child(path, "default"), detail))
        if s.get("id"):
            errs.append(_forbidden(_child(path, "id"), "id is not supported"))
        if s.get("additionalItems") is not None:
            errs.append(_forbidden(_child(path, "additionalItems"), "additionalItems is not supported"))
        if s.get("patternProperties"):
            errs.append(_forbidden(_child(path, "patternProperties"), "patternProperties is not supported"))
        if s.get("definitions"):
            errs.append(_forbidden(_child(path, "definitions"), "definitions is not supported"))
        if s.get("dependencies") is not None:
            errs.append(_forbidden(_child(path, "dependencies"), "dependencies is not supported"))
        if s.get("$ref") is not None:
            errs.append(_forbidden(_child(path, "$ref"), "$ref is not supported"))
        if typ == "null":
            errs.append(
                _forbidden(_child(path, "type"), "type cannot be set to null, use nullable as an alternative")
            )
        if isinstance(s.get("items"), list) and s["items"]:
            errs.append(_forbidden(_child(path, "items"), "items must be a schema object and not an array"))
        if self.inside_resource_meta and s.get("x-kubernetes-embedded-resource"):
            errs.append(
                _forbidden(
                    _child(path, "x-kubernetes-embedded-resource"), "must not be used inside of resource meta"
                )
            )
        return errs


@dataclass
class _TotalCost:
    total: int = 0
    most_expensive: list[tuple[str, int]] = field(default_factory=list)

    def observe(self, path: str, cost: int) -> None:
        self.total = min(self.total + cost, celcost.MAX_UINT64)
        if cost < STATIC_ESTIMATED_CRD_COST_LIMIT // 100:
            return  # rules under 1% of the limit are not named
        self.most_expensive.append((path, cost))
        self.most_expensive.sort(key=lambda pc: -pc[1])
        del self.most_expensive[4:]


@dataclass
class _CELContext:
    """cel_validation.go CELSchemaContext: cardinality and the shared total cost."""

    schema: Schema
    in_scope: bool
    max_cardinality: int | None  # None: unbounded
    total: _TotalCost
    is_root: bool = False

    def child(self, child: Any) -> _CELContext:
        in_scope = self.in_scope or bool(isinstance(child, dict) and child.get("x-kubernetes-validations"))
        result = _CELContext(child if isinstance(child, dict) else {}, in_scope, None, self.total)
        if self.max_cardinality is None:
            return result
        factor = _extract_max_elements(self.schema)
        if factor is None:
            return result
        result.max_cardinality = min(self.max_cardinality * factor, celcost.MAX_UINT64)
        return result


def _extract_max_elements(s: Schema) -> int | None:
    typ = s.get("type")
    if typ == "object":
        if s.get("additionalProperties") is not None:
            if s.get("maxProperties") is not None:
                return max(int(s["maxProperties"]), 0)
            return None
        return 1
    if typ == "array":
        if s.get("maxItems") is not None:
            return max(int(s["maxItems"]), 0)
        return None
    return 1


def _multiply_guard(base: int, cardinality: int) -> int:
    if base == 0:
        return 0
    return min(base * cardinality, celcost.MAX_UINT64)


_META_FIELDS = ("metadata", "kind", "apiVersion")
_SUPPORTED_REASONS = ["FieldValueDuplicate", "FieldValueForbidden", "FieldValueInvalid", "FieldValueRequired"]
_NEWLINES = re.compile(r"[\n\r]+")


def _validate_openapi_schema(
    s: Any, path: str, ssv: _SSV, is_root: bool, opts: _Options, ctx: _CELContext | None
) -> tuple[list[FieldError], list[FieldError]]:
    """(schema errors, CEL errors) for one node and everything below it."""
    schema_errs: list[FieldError] = []
    cel_errs: list[FieldError] = []
    if not isinstance(s, dict):
        return schema_errs, cel_errs

    def add(sub: tuple[list[FieldError], list[FieldError]]) -> None:
        schema_errs.extend(sub[0])
        cel_errs.extend(sub[1])

    schema_errs += ssv.validate(s, path)
    if s.get("uniqueItems"):
        schema_errs.append(
            _forbidden(
                _child(path, "uniqueItems"),
                "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            )
        )
    ap = s.get("additionalProperties")
    props = s.get("properties") or {}
    if ap is not None:
        if props and (ap is False or isinstance(ap, dict)):
            schema_errs.append(
                _forbidden(
                    _child(path, "additionalProperties"),
                    "additionalProperties and properties are mutual exclusive",
                )
            )
        sub_ssv = (
            ssv.forbidden_defaults("inside additionalProperties applying to object metadata")
            if ssv.inside_resource_meta
            else ssv
        )
        if isinstance(ap, dict):
            add(
                _validate_openapi_schema(
                    ap,
                    _child(path, "additionalProperties"),
                    sub_ssv,
                    False,
                    opts,
                    ctx.child(ap) if ctx else None,
                )
            )
    for name, prop in props.items():
        sub_ssv = ssv
        if s.get("x-kubernetes-map-type") not in (None, "granular", "atomic"):
            sub_ssv = sub_ssv.forbid_old_self(path)
        if (is_root or s.get("x-kubernetes-embedded-resource")) and name in _META_FIELDS:
            sub_ssv = sub_ssv.inside_meta()
            if is_root:
                sub_ssv = sub_ssv.forbidden_defaults(f"in top-level {name}")
        add(
            _validate_openapi_schema(
                prop,
                _key(_child(path, "properties"), name),
                sub_ssv,
                False,
                opts,
                ctx.child(prop) if ctx else None,
            )
        )
    if isinstance(s.get("not"), dict):
        add(_validate_openapi_schema(s["not"], _child(path, "not"), ssv, False, opts, None))
    for key in ("allOf", "oneOf", "anyOf"):
        for i, sub in enumerate(s.get(key) or []):
            add(_validate_openapi_schema(sub, _index(_child(path, key), i), ssv, False, opts, None))
    for name, sub in (s.get("definitions") or {}).items():
        add(_validate_openapi_schema(sub, _key(_child(path, "definitions"), name), ssv, False, opts, None))
    items = s.get("items")
    if items is not None:
        sub_ssv = ssv if s.get("x-kubernetes-list-type") == "map" else ssv.forbid_old_self(path)
        if isinstance(items, dict):
            add(
                _validate_openapi_schema(
                    items, _child(path, "items"), sub_ssv, False, opts, ctx.child(items) if ctx else None
                )
            )
        elif isinstance(items, list):
            for i, sub in enumerate(items):
                add(
                    _validate_openapi_schema(
                        sub,
                        _index(_child(path, "items"), i),
                        sub_ssv,
                        False,
                        opts,
                        ctx.child(sub) if ctx else None,
                    )
                )
    for name, dep in (s.get("dependencies") or {}).items():
        if isinstance(dep, dict):
            add(
                _validate_openapi_schema(
                    dep, _key(_child(path, "dependencies"), name), ssv, False, opts, None
                )
            )
    schema_errs += _extension_errors(s, path, opts)
    if opts.require_map_list_keys_map_set_validation:
        schema_errs += _validate_map_list_keys_map_set(s, path)
    rules = s.get("x-kubernetes-validations") or []
    if rules:
        schema_errs += _rule_field_errors(s, rules, path)
        if not schema_errs and ctx is not None:
            cel_errs += _compile_rules(s, rules, path, ssv, opts, ctx)
    return schema_errs, cel_errs


def _extension_errors(s: Schema, path: str, opts: _Options) -> list[FieldError]:
    errs: list[FieldError] = []
    typ = s.get("type") or ""
    if s.get("x-kubernetes-preserve-unknown-fields") is False:
        errs.append(
            _invalid(_child(path, "x-kubernetes-preserve-unknown-fields"), False, "must be true or undefined")
        )
    map_type = s.get("x-kubernetes-map-type")
    if map_type is not None and typ != "object":
        msg = "must be object if x-kubernetes-map-type is specified"
        errs.append(
            _required(_child(path, "type"), msg) if not typ else _invalid(_child(path, "type"), typ, msg)
        )
    if map_type is not None and map_type not in ("atomic", "granular"):
        errs.append(_not_supported(_child(path, "x-kubernetes-map-type"), map_type, ["atomic", "granular"]))
    list_type = s.get("x-kubernetes-list-type")
    items = s.get("items")
    if list_type is not None and typ != "array":
        msg = "must be array if x-kubernetes-list-type is specified"
        errs.append(
            _required(_child(path, "type"), msg) if not typ else _invalid(_child(path, "type"), typ, msg)
        )
    elif opts.require_atomic_set_type and list_type == "set" and isinstance(items, dict):
        atomic = "must be atomic as item of a list with x-kubernetes-list-type=set"
        if items.get("type") == "array" and items.get("x-kubernetes-list-type") not in (None, "atomic"):
            errs.append(
                _invalid(
                    _child(path, "items", "x-kubernetes-list-type"),
                    items.get("x-kubernetes-list-type"),
                    atomic,
                )
            )
        elif items.get("type") == "object" and items.get("x-kubernetes-map-type") != "atomic":
            errs.append(
                _invalid(
                    _child(path, "items", "x-kubernetes-map-type"),
                    items.get("x-kubernetes-list-type"),
                    atomic,
                )
            )
    if list_type is not None and list_type not in ("atomic", "set", "map"):
        errs.append(
            _not_supported(_child(path, "x-kubernetes-list-type"), list_type, ["atomic", "set", "map"])
        )
    keys = s.get("x-kubernetes-list-map-keys") or []
    if keys:
        msg = "must be map if x-kubernetes-list-map-keys is non-empty"
        if list_type is None:
            errs.append(_required(_child(path, "x-kubernetes-list-type"), msg))
        elif list_type != "map":
            errs.append(_invalid(_child(path, "x-kubernetes-list-type"), list_type, msg))
    if list_type == "map":
        if not keys:
            errs.append(
                _required(
                    _child(path, "x-kubernetes-list-map-keys"),
                    "must not be empty if x-kubernetes-list-type is map",
                )
            )
        if items is None:
            errs.append(
                _required(_child(path, "items"), "must have a schema if x-kubernetes-list-type is map")
            )
        if isinstance(items, list):
            errs.append(
                _invalid(
                    _child(path, "items"),
                    GoRepr(_go_repr(items)),
                    "must only have a single schema if x-kubernetes-list-type is map",
                )
            )
        if isinstance(items, dict) and items.get("type") != "object":
            errs.append(
                _invalid(
                    _child(path, "items", "type"),
                    items.get("type") or "",
                    "must be object if parent array's x-kubernetes-list-type is map",
                )
            )
        if isinstance(items, dict) and items.get("type") == "object":
            seen: set[str] = set()
            item_props = items.get("properties") or {}
            for k in keys:
                if k in item_props:
                    if (item_props[k] or {}).get("type") in ("array", "object"):
                        errs.append(
                            _invalid(
                                _child(_key(_child(path, "items", "properties"), k), "type"),
                                items.get("type"),
                                "must be a scalar type if parent array's x-kubernetes-list-type is map",
                            )
                        )
                else:
                    errs.append(
                        _invalid(
                            _child(path, "x-kubernetes-list-map-keys"),
                            _string_slice(keys),
                            "entries must all be names of item properties",
                        )
                    )
                if k in seen:
                    errs.append(
                        _invalid(
                            _child(path, "x-kubernetes-list-map-keys"),
                            _string_slice(keys),
                            "must not contain duplicate entries",
                        )
                    )
                seen.add(k)
    return errs


def _validate_map_list_keys_map_set(s: Schema, path: str) -> list[FieldError]:
    items = s.get("items")
    list_type = s.get("x-kubernetes-list-type")
    if not isinstance(items, dict) or list_type not in ("set", "map"):
        return []
    errs: list[FieldError] = []
    if items.get("nullable"):
        errs.append(
            _forbidden(
                _child(path, "items", "nullable"),
                f"cannot be nullable when x-kubernetes-list-type is {list_type}",
            )
        )
    if list_type == "map":
        required = set(items.get("required") or [])
        for k in s.get("x-kubernetes-list-map-keys") or []:
            prop = (items.get("properties") or {}).get(k)
            if not isinstance(prop, dict):
                continue
            kpath = _key(_child(path, "items", "properties"), k)
            if k not in required and prop.get("default") is None:
                errs.append(
                    _required(
                        _child(kpath, "default"),
                        "this property is in x-kubernetes-list-map-keys, so it must have a default or be a "
                        "required property",
                    )
                )
            if prop.get("nullable"):
                errs.append(
                    _forbidden(
                        _child(kpath, "nullable"),
                        "this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
                    )
                )
    return errs


def _rule_field_errors(s: Schema, rules: list[Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, rule in enumerate(rules):
        rule = rule if isinstance(rule, dict) else {}
        rpath = _index(_child(path, "x-kubernetes-validations"), i)
        text = str(rule.get("rule") or "")
        message = str(rule.get("message") or "")
        trimmed_rule, trimmed_msg = text.strip(), message.strip()
        if not trimmed_rule:
            errs.append(_required(_child(rpath, "rule"), "rule is not specified"))
        elif message and not trimmed_msg:
            errs.append(_invalid(_child(rpath, "message"), message, "message must be non-empty if specified"))
        elif _NEWLINES.search(trimmed_msg):
            errs.append(_invalid(_child(rpath, "message"), message, "message must not contain line breaks"))
        elif _NEWLINES.search(trimmed_rule) and not trimmed_msg:
            errs.append(
                _required(_child(rpath, "message"), "message must be specified if rule contains line breaks")
            )
        mexpr = str(rule.get("messageExpression") or "")
        if mexpr and not mexpr.strip():
            errs.append(
                _required(
                    _child(rpath, "messageExpression"), "messageExpression must be non-empty if specified"
                )
            )
        reason = rule.get("reason")
        if reason is not None and reason not in _SUPPORTED_REASONS:
            errs.append(_not_supported(_child(rpath, "reason"), reason, _SUPPORTED_REASONS))
        fp = str(rule.get("fieldPath") or "")
        if fp and not fp.strip():
            errs.append(_invalid(_child(rpath, "fieldPath"), fp, "fieldPath must be non-empty if specified"))
        if _NEWLINES.search(fp):
            errs.append(_invalid(_child(rpath, "fieldPath"), fp, "fieldPath must not contain line breaks"))
        if fp and _new_structural_error(s) is None and valid_field_path(fp, s)[0] is None:
            errs.append(_invalid(_child(rpath, "fieldPath"), fp, "fieldPath must be a valid path"))
    return errs


def _go_rule(rule: dict[str, Any]) -> GoRepr:
    """%#v of an apiextensions.ValidationRule (pointer addresses are placeholders)."""

    def ptr(t: str, key: str) -> str:
        return f"(*{t})(nil)" if rule.get(key) is None else f"(*{t})(0xc000000000)"

    return GoRepr(
        f"apiextensions.ValidationRule{{Rule:{_go_quote(str(rule.get('rule') or ''))}, "
        f"Message:{_go_quote(str(rule.get('message') or ''))}, "
        f"MessageExpression:{_go_quote(str(rule.get('messageExpression') or ''))}, "
        f"Reason:{ptr('apiextensions.FieldValueErrorReason', 'reason')}, "
        f"FieldPath:{_go_quote(str(rule.get('fieldPath') or ''))}, "
        f"OptionalOldSelf:{ptr('bool', 'optionalOldSelf')}}}"
    )


def _compile_rules(
    s: Schema, rules: list[Any], path: str, ssv: _SSV, opts: _Options, ctx: _CELContext
) -> list[FieldError]:
    """cel.Compile for one node, then the per-rule checks of ValidateCustomResourceDefinitionOpenAPISchema."""
    vpath = _child(path, "x-kubernetes-validations")
    is_root = ctx.is_root or bool(s.get("x-kubernetes-embedded-resource"))
    decl = celcost.schema_decl_type(s, is_root)
    if decl is None:
        return [
            _internal(
                vpath,
                "internal error: failed to construct type information for x-kubernetes-validations rules: "
                "unable to convert structural schema to CEL declarations",
            )
        ]
    checker_schema = celcost.with_type_and_object_meta(s) if is_root else s
    self_type = _schema_type(checker_schema, root=is_root)
    rule_cardinality = celcost.max_cardinality(decl.min_serialized_size)
    errs: list[FieldError] = []
    for i, rule in enumerate(rules):
        rule = rule if isinstance(rule, dict) else {}
        rpath = _index(vpath, i)
        source = str(rule.get("rule") or "")
        optional = rule.get("optionalOldSelf") is True
        max_cost, uses_old_self, error, msg_error, msg_cost = _compile_rule(
            rule, source, self_type, decl, optional
        )
        cardinality = ctx.max_cardinality if ctx.max_cardinality is not None else rule_cardinality
        expression_cost = _multiply_guard(max_cost, cardinality)
        if not opts.suppress_per_expression_cost and expression_cost > STATIC_ESTIMATED_COST_LIMIT:
            errs.append(
                _forbidden(
                    _child(rpath, "rule"),
                    cost_error_message("estimated rule cost", expression_cost, STATIC_ESTIMATED_COST_LIMIT),
                )
            )
        ctx.total.observe(_child(rpath, "rule"), expression_cost)
        if error is not None:
            kind, detail = error
            if kind == "required":
                errs.append(_required(_child(rpath, "rule"), detail))
            elif kind == "unsupported":
                errs.append(_internal(_child(rpath, "rule"), detail))
            else:
                errs.append(_invalid(_child(rpath, "rule"), _go_rule(rule), detail))
        if msg_error is not None:
            kind, detail = msg_error
            if kind == "unsupported":
                errs.append(_internal(_child(rpath, "messageExpression"), detail))
            else:
                errs.append(_invalid(_child(rpath, "messageExpression"), _go_rule(rule), detail))
        elif msg_cost is not None:
            if not opts.suppress_per_expression_cost and msg_cost > STATIC_ESTIMATED_COST_LIMIT:
                errs.append(
                    _forbidden(
                        _child(rpath, "messageExpression"),
                        cost_error_message(
                            "estimated messageExpression cost", msg_cost, STATIC_ESTIMATED_COST_LIMIT
                        ),
                    )
                )
            ctx.total.observe(_child(rpath, "messageExpression"), msg_cost)
        if uses_old_self:
            if ssv.uncorrelatable_path is not None:
                errs.append(
                    _invalid(
                        _child(rpath, "rule"),
                        source,
                        "oldSelf cannot be used on the uncorrelatable portion of the schema within "
                        f"{ssv.uncorrelatable_path}",
                    )
                )
        elif rule.get("optionalOldSelf") is not None:
            errs.append(
                _invalid(
                    _child(rpath, "optionalOldSelf"),
                    bool(rule["optionalOldSelf"]),
                    "may not be set if oldSelf is not used in rule",
                )
            )
    return errs


_UNSUPPORTED_PREFIX = "cloudtriggers does not model the CEL cost of "


def _compile_rule(
    rule: dict[str, Any], source: str, self_type: Any, decl: celcost.DeclType, optional: bool
) -> tuple[int, bool, tuple[str, str] | None, tuple[str, str] | None, int | None]:
    """compileRule: (max cost, uses oldSelf, rule error, messageExpression error, messageExpression cost)."""
    if not source.strip():
        return 0, False, None, None, None
    compiled = _compile(source)
    if compiled.error is not None:
        return 0, False, ("invalid", f"compilation failed: {compiled.error}"), None, None
    checker = _Checker(self_type, True, optional)
    result = checker.check(compiled.ast)
    if checker.errors:
        return (
            0,
            False,
            ("invalid", "compilation failed: " + "\n".join(f"ERROR: <input>: {e}" for e in checker.errors)),
            None,
            None,
        )
    if result.kind not in ("bool", "dyn"):
        return 0, False, ("invalid", "cel expression must evaluate to a bool"), None, None
    mode = "optional" if optional else "plain"
    try:
        max_cost = celcost.estimate(compiled.ast, decl, mode).max
    except celcost.CostUnsupported as exc:
        return 0, compiled.uses_old_self, ("unsupported", f"{_UNSUPPORTED_PREFIX}{exc}"), None, None
    mexpr = str(rule.get("messageExpression") or "")
    if not mexpr:
        return max_cost, compiled.uses_old_self, None, None, None
    mc = _compile(mexpr)
    if mc.error is not None:
        return (
            max_cost,
            compiled.uses_old_self,
            None,
            ("invalid", f"messageExpression compilation failed: {mc.error}"),
            None,
        )
    mchecker = _Checker(self_type, True, optional)
    mresult = mchecker.check(mc.ast)
    if mchecker.errors:
        detail = "messageExpression compilation failed: " + "\n".join(
            f"ERROR: <input>: {e}" for e in mchecker.errors
        )
        return max_cost, compiled.uses_old_self, None, ("invalid", detail), None
    if mresult.kind not in ("string", "dyn"):
        return (
            max_cost,
            compiled.uses_old_self,
            None,
            ("invalid", "messageExpression must evaluate to a string"),
            None,
        )
    try:
        msg_cost = celcost.estimate(mc.ast, decl, mode).max
    except celcost.CostUnsupported as exc:
        return max_cost, compiled.uses_old_self, None, ("unsupported", f"{_UNSUPPORTED_PREFIX}{exc}"), None
    return max_cost, compiled.uses_old_self, None, None, msg_cost
