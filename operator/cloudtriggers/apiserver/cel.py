"""Offline evaluation of a CRD's ``x-kubernetes-validations`` CEL rules.

The goal is to reproduce, without a cluster, what the Kubernetes API server does with a custom
resource at ``kubectl apply``: prune/reject unknown fields (kubectl's default ``--validate=strict``),
apply schema defaults, check the OpenAPI value validations and then evaluate every CEL rule with
``self`` (and, for updates, ``oldSelf``) bound to the value at the rule's schema node.

Public API:

* :func:`violations` -- everything the API server would reject an object for, as ``"<path>: <message>"``.
* :func:`compile_all` -- rules (and messageExpressions) that would not compile, including a light
  type check against the schema (undefined fields, unknown functions, non-bool rules, ...).
* :func:`crd_schema` -- the openAPIV3Schema of one version.
* :func:`escape_name`, :func:`iter_rules` -- CEL names of properties; every rule of a version.

Whether a CRD itself is acceptable (structural schema, metadata, defaults, rule costs...) is
:mod:`cloudtriggers.apiserver.crd_validation`'s job; it reuses this module's parser and type checker.

CEL is evaluated with cel-python (``celpy``), which matches regular expressions with real RE2
(``google-re2``). The Kubernetes CEL libraries used by CRD rules are added on top (see
``_FUNCTIONS``); anything unsupported is reported by :func:`compile_all` instead of failing silently.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import itertools
import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import celpy
import celpy.celtypes as ct
import lark
import re2
from celpy.evaluation import CELEvalError

# celpy logs every step of every evaluation at DEBUG: an API server evaluating rules on each write
# must not pay for (or flood a captured log with) that.
logging.getLogger("celpy").setLevel(logging.WARNING)

Schema = dict[str, Any]

__all__ = ["compile_all", "crd_schema", "escape_name", "iter_rules", "violations"]

_ROOT = "<root>"


# --------------------------------------------------------------------------------------------------
# Schema helpers
# --------------------------------------------------------------------------------------------------


def crd_schema(crd: dict[str, Any], version: str = "v1alpha1") -> Schema:
    """The openAPIV3Schema of ``version`` (``spec.versions[].schema``, or legacy ``spec.validation``)."""
    spec = crd.get("spec") or {}
    for ver in spec.get("versions") or []:
        if ver.get("name") == version:
            schema = (ver.get("schema") or {}).get("openAPIV3Schema")
            if schema is None:
                schema = (spec.get("validation") or {}).get("openAPIV3Schema")
            if schema is None:
                raise KeyError(f"version {version!r} of the CRD has no openAPIV3Schema")
            return dict(schema)
    names = [v.get("name") for v in spec.get("versions") or []]
    raise KeyError(f"CRD has no version {version!r} (versions: {names})")


def _all_schemas(crd: dict[str, Any]) -> Iterator[tuple[str, Schema]]:
    spec = crd.get("spec") or {}
    legacy = (spec.get("validation") or {}).get("openAPIV3Schema")
    for ver in spec.get("versions") or []:
        schema = (ver.get("schema") or {}).get("openAPIV3Schema") or legacy
        if schema is not None:
            yield str(ver.get("name")), schema


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _show(path: str) -> str:
    return path or _ROOT


_INT_OR_STRING = "x-kubernetes-int-or-string"
_PRESERVE = "x-kubernetes-preserve-unknown-fields"
_EMBEDDED = "x-kubernetes-embedded-resource"
_RULES = "x-kubernetes-validations"
_LIST_TYPE = "x-kubernetes-list-type"
_LIST_KEYS = "x-kubernetes-list-map-keys"

# The root of a custom resource always has these; CEL sees only name/generateName of metadata.
_ROOT_METADATA: Schema = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}},
}
_META_FIELDS = ("apiVersion", "kind", "metadata")


def _props(schema: Schema) -> dict[str, Schema]:
    props = schema.get("properties")
    return props if isinstance(props, dict) else {}


def _additional(schema: Schema) -> Schema | None:
    """Value schema of a map-like object (``additionalProperties``), ``{}`` for ``true``."""
    ap = schema.get("additionalProperties")
    if isinstance(ap, dict):
        return ap
    if ap is True:
        return {}
    return None


def _is_map_list(schema: Schema) -> bool:
    return schema.get(_LIST_TYPE) == "map" and bool(schema.get(_LIST_KEYS))


# Property names are escaped before CEL sees them, exactly as k8s.io/apiserver/pkg/cel/escaping.go.
_CEL_RESERVED = frozenset(
    {
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    }
)
_ESCAPE_RE = re.compile(r"(__|[-./]|[^a-zA-Z0-9\-./_])")
_ESCAPES = {"__": "__underscores__", ".": "__dot__", "-": "__dash__", "/": "__slash__"}


def escape_name(name: str) -> str | None:
    """The CEL identifier of property ``name`` (None if the property is not accessible from CEL)."""
    if not name or name[0].isdigit():
        return None
    if name in _CEL_RESERVED:
        return f"__{name}__"
    ok = True

    def repl(m: re.Match[str]) -> str:
        nonlocal ok
        if m.group(0) in _ESCAPES:
            return _ESCAPES[m.group(0)]
        ok = False
        return ""

    escaped = _ESCAPE_RE.sub(repl, name)
    return escaped if ok else None


# --------------------------------------------------------------------------------------------------
# Pruning, defaulting and OpenAPI value validation (what happens before CEL runs)
# --------------------------------------------------------------------------------------------------


def _prune_and_default(
    schema: Schema, value: Any, path: str, unknown: list[str], *, root: bool = False
) -> Any:
    """Return a copy of ``value`` with unknown fields removed (recorded) and defaults applied.

    Mirrors apiextensions-apiserver: pruning (unknown fields are an error with kubectl's strict field
    validation), then structural defaulting, which recurses into defaulted values too.
    """
    if isinstance(value, dict):
        if schema.get(_INT_OR_STRING):
            return copy.deepcopy(value)
        props = _props(schema)
        ap = _additional(schema)
        keep_unknown = bool(schema.get(_PRESERVE)) or ap is not None
        meta_ok = root or bool(schema.get(_EMBEDDED))
        # Each kept or defaulted value is copied once: by the recursion where a schema applies to
        # it, else here.
        out: dict[str, Any] = {}
        for key, sub in value.items():
            if key in props or keep_unknown or (meta_ok and key in _META_FIELDS):
                out[key] = sub
            else:
                unknown.append(_child(path, key))
        for key, prop in props.items():
            if "default" in prop and (key not in out or (out[key] is None and not prop.get("nullable"))):
                out[key] = prop["default"]
        for key, sub in out.items():
            if sub is None or type(sub) in _IMMUTABLE:
                continue  # nothing to prune, default or copy in a scalar
            sub_schema = props.get(key, ap)
            if sub_schema is None or (meta_ok and key == "metadata"):
                # ObjectMeta is validated by its own code, not pruned or defaulted by the schema.
                out[key] = copy.deepcopy(sub)  # a dict or a list: scalars were passed over above
            else:
                out[key] = _prune_and_default(sub_schema, sub, _child(path, key), unknown)
        return out
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [_prune_and_default(items, v, f"{path}[{i}]", unknown) for i, v in enumerate(value)]
    return _copy(value)


_IMMUTABLE = (str, int, float, bool)


def _copy(value: Any) -> Any:
    return value if value is None or type(value) in _IMMUTABLE else copy.deepcopy(value)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


def _type_ok(schema: Schema, value: Any) -> bool:
    if value is None:
        return bool(schema.get("nullable"))
    if schema.get(_INT_OR_STRING):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    typ = schema.get("type")
    if not typ:
        return True
    if isinstance(value, bool) and typ in ("integer", "number"):
        return False
    if typ == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _JSON_TYPES.get(typ, (object,)))


@cache
def _compiled(pattern: str) -> Any:
    """A schema pattern, compiled once (re2.error for an invalid one, raised again each time)."""
    return re2.compile(pattern)


def _js(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _openapi_errors(
    schema: Schema, value: Any, path: str, blocking: list[str], other: list[str], *, root: bool = False
) -> None:
    """OpenAPI v3 value validation as done by kube-openapi (type errors are "blocking": CEL is skipped)."""
    p = _show(path)
    if not _type_ok(schema, value):
        want = "integer or string" if schema.get(_INT_OR_STRING) else schema.get("type")
        blocking.append(f"{p}: Invalid value: {_js(value)}: {p} in body must be of type {want}")
        return
    if value is None:
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(_js(v) for v in schema["enum"])
        other.append(f"{p}: Unsupported value: {_js(value)}: supported values: {allowed}")
    if isinstance(value, str) and not isinstance(value, bool):
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            other.append(f"{p}: Too long: may not be more than {schema['maxLength']} characters")
        if "minLength" in schema and len(value) < schema["minLength"]:
            other.append(
                f"{p}: Invalid value: {_js(value)}: {p} in body should be at least "
                f"{schema['minLength']} chars long"
            )
        if "pattern" in schema:
            try:
                if not _compiled(schema["pattern"]).search(value):
                    other.append(
                        f"{p}: Invalid value: {_js(value)}: {p} in body should match '{schema['pattern']}'"
                    )
            except re2.error as exc:
                other.append(f"{p}: invalid pattern: {_error_text(_re2_error(schema['pattern'], exc))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "maximum" in schema:
            mx = schema["maximum"]
            if value > mx or (schema.get("exclusiveMaximum") and value == mx):
                rel = "less than" if schema.get("exclusiveMaximum") else "less than or equal to"
                other.append(f"{p}: Invalid value: {_js(value)}: {p} in body should be {rel} {mx}")
        if "minimum" in schema:
            mn = schema["minimum"]
            if value < mn or (schema.get("exclusiveMinimum") and value == mn):
                rel = "greater than" if schema.get("exclusiveMinimum") else "greater than or equal to"
                other.append(f"{p}: Invalid value: {_js(value)}: {p} in body should be {rel} {mn}")
        mult = schema.get("multipleOf")
        if mult and (value / mult) != int(value / mult):
            other.append(f"{p}: Invalid value: {_js(value)}: {p} in body should be a multiple of {mult}")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            other.append(f"{p}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
        if "minItems" in schema and len(value) < schema["minItems"]:
            other.append(
                f"{p}: Invalid value: {len(value)}: {p} in body should have at least "
                f"{schema['minItems']} items"
            )
        _list_uniqueness(schema, value, path, other)
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _openapi_errors(items, item, f"{path}[{i}]", blocking, other)
    if isinstance(value, dict) and not schema.get(_INT_OR_STRING):
        for name in schema.get("required") or []:
            if name not in value:
                other.append(f"{_child(path, name)}: Required value")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            other.append(f"{p}: Too many: {len(value)}: must have at most {schema['maxProperties']} items")
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            other.append(
                f"{p}: Invalid value: {len(value)}: {p} in body should have at least "
                f"{schema['minProperties']} properties"
            )
        props = _props(schema)
        ap = _additional(schema)
        for key, sub in value.items():
            if root and key == "metadata" and key not in props:
                continue
            sub_schema = props.get(key, ap)
            if sub_schema is not None:
                _openapi_errors(sub_schema, sub, _child(path, key), blocking, other)
    _junctor_errors(schema, value, path, other)


def _list_uniqueness(schema: Schema, value: list[Any], path: str, other: list[str]) -> None:
    seen: set[str] = set()
    if schema.get(_LIST_TYPE) == "set":
        for i, item in enumerate(value):
            if _js(item) in seen:
                other.append(f"{path}[{i}]: Duplicate value: {_js(item)}")
            seen.add(_js(item))
    elif _is_map_list(schema):
        keys = schema[_LIST_KEYS]
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            k = _js({key: item.get(key) for key in keys})
            if k in seen:
                other.append(f"{path}[{i}]: Duplicate value: {k}")
            seen.add(k)


def _junctor_errors(schema: Schema, value: Any, path: str, other: list[str]) -> None:
    def ok(sub: Schema) -> bool:
        errs: list[str] = []
        _openapi_errors(sub, value, path, errs, errs)
        return not errs

    p = _show(path)
    if "allOf" in schema:
        for sub in schema["allOf"]:
            _openapi_errors(sub, value, path, other, other)
    if "anyOf" in schema and not any(ok(s) for s in schema["anyOf"]):
        other.append(f"{p}: Invalid value: {_js(value)}: {p} in body must match at least one schema in anyOf")
    if "oneOf" in schema and sum(ok(s) for s in schema["oneOf"]) != 1:
        other.append(f"{p}: Invalid value: {_js(value)}: {p} in body must match exactly one schema in oneOf")
    if "not" in schema and ok(schema["not"]):
        other.append(f"{p}: Invalid value: {_js(value)}: {p} in body must not match the schema in not")


# --------------------------------------------------------------------------------------------------
# JSON -> CEL values (schema-driven, like the apiserver's UnstructuredToVal)
# --------------------------------------------------------------------------------------------------


class _UnorderedList(ct.ListType):
    """x-kubernetes-list-type set/map: equality ignores order, as in Kubernetes."""

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, list):
            raise TypeError(f"no such overload: list == {type(other)}")
        if len(self) != len(other):
            return False
        rest = list(other)
        for item in self:
            for i, cand in enumerate(rest):
                try:
                    same = bool(item == cand)
                except TypeError:
                    same = False
                if same:
                    del rest[i]
                    break
            else:
                return False
        return True

    def __ne__(self, other: Any) -> bool:
        return not self.__eq__(other)


def _to_cel(value: Any, schema: Schema | None, *, root: bool = False) -> Any:
    schema = schema or {}
    if value is None:
        return None
    if isinstance(value, bool):
        return ct.BoolType(value)
    if isinstance(value, int):
        return ct.DoubleType(value) if schema.get("type") == "number" else ct.IntType(value)
    if isinstance(value, float):
        if schema.get("type") == "integer" and value.is_integer():
            return ct.IntType(int(value))
        return ct.DoubleType(value)
    if isinstance(value, str):
        fmt = schema.get("format") if schema.get("type") == "string" else None
        try:
            if fmt in ("date-time", "date"):
                return ct.TimestampType(value if fmt == "date-time" else f"{value}T00:00:00Z")
            if fmt == "duration":
                return ct.DurationType(value)
            if fmt == "byte":
                return ct.BytesType(base64.b64decode(value))
        except (ValueError, TypeError):
            pass  # not in the declared format: leave it a string (format validation is not modelled)
        return ct.StringType(value)
    if isinstance(value, list):
        items = schema.get("items") if isinstance(schema.get("items"), dict) else None
        cls = _UnorderedList if schema.get(_LIST_TYPE) in ("set", "map") else ct.ListType
        return cls([_to_cel(v, items) for v in value])
    if isinstance(value, dict):
        ap = _additional(schema)
        if ap is not None and not _props(schema):
            return ct.MapType({ct.StringType(k): _to_cel(v, ap) for k, v in value.items()})
        props = _props(schema)
        out: dict[Any, Any] = {}
        for key, sub in value.items():
            name = escape_name(key)
            if name is None:
                continue
            if root and key == "metadata":
                sub = {k: v for k, v in (sub or {}).items() if k in ("name", "generateName")}
                out[ct.StringType(name)] = _to_cel(sub, _ROOT_METADATA)
                continue
            out[ct.StringType(name)] = _to_cel(sub, props.get(key))
        return ct.MapType(out)
    raise TypeError(f"not a JSON value: {value!r}")


# --------------------------------------------------------------------------------------------------
# Kubernetes CEL libraries on top of cel-python
# --------------------------------------------------------------------------------------------------


def _err(msg: str) -> CELEvalError:
    return CELEvalError(msg, ValueError, ())


class _Namespace:
    """Value bound to ``sets`` / ``optional`` so that ``sets.contains(a, b)`` dispatches to us."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_SETS = _Namespace("sets")
_OPTIONAL_NS = _Namespace("optional")


@dataclass(frozen=True)
class _Optional:
    """CEL ``optional_type`` (only what ``optionalOldSelf`` rules need)."""

    present: bool
    val: Any = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Optional):
            raise TypeError("no such overload: optional == other")
        return self.present == other.present and (not self.present or bool(self.val == other.val))

    def __hash__(self) -> int:
        return hash(self.present)


class _URL:
    def __init__(self, raw: str, parts: urllib.parse.SplitResult) -> None:
        self.raw = raw
        self.parts = parts

    def __str__(self) -> str:
        return self.raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _URL) and self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)


_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_~!$&'()*+,;=%]*)(:[0-9]*)?$")


def _parse_request_uri(raw: str) -> _URL | None:
    """Approximation of Go's url.ParseRequestURI, which the Kubernetes URL library uses."""
    if not raw or any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw) or " " in raw:
        return None
    m = _SCHEME_RE.match(raw)
    if m is None and not raw.startswith("/"):
        return None
    parts = urllib.parse.urlsplit(raw, allow_fragments=False)
    if m is not None and raw[len(m.group(0)) :].startswith("//"):
        userinfo_free = parts.netloc.rsplit("@", 1)[-1]
        if not _HOST_RE.match(userinfo_free):
            return None
    return _URL(raw, parts)


def _fn_url(s: Any) -> Any:
    u = _parse_request_uri(str(s))
    return u if u is not None else _err(f"URL parse error during conversion from string: {s}")


def _fn_is_url(s: Any) -> Any:
    return ct.BoolType(_parse_request_uri(str(s)) is not None)


def _url_host(u: _URL) -> str:
    return u.parts.netloc.rsplit("@", 1)[-1]


def _url_hostname(u: _URL) -> str:
    host = _url_host(u)
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if ":" in host else host


def _url_port(u: _URL) -> str:
    host = _url_host(u)
    tail = host[host.index("]") + 1 :] if host.startswith("[") and "]" in host else host
    return tail.rsplit(":", 1)[1] if ":" in tail else ""


def _url_query(u: _URL) -> Any:
    parsed = urllib.parse.parse_qs(u.parts.query, keep_blank_values=True)
    return ct.MapType(
        {ct.StringType(k): ct.ListType([ct.StringType(x) for x in v]) for k, v in parsed.items()}
    )


_URL_METHODS: dict[str, Callable[[_URL], Any]] = {
    "getScheme": lambda u: ct.StringType(u.parts.scheme),
    "getHost": lambda u: ct.StringType(_url_host(u)),
    "getHostname": lambda u: ct.StringType(_url_hostname(u)),
    "getPort": lambda u: ct.StringType(_url_port(u)),
    "getEscapedPath": lambda u: ct.StringType(
        urllib.parse.quote(urllib.parse.unquote(u.parts.path), safe="/:@!$&'()*+,;=-._~")
    ),
    "getQuery": _url_query,
}


class _IP:
    def __init__(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        self.addr = addr

    def __str__(self) -> str:
        return str(self.addr)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _IP) and self.addr == other.addr

    def __hash__(self) -> int:
        return hash(self.addr)


class _CIDR:
    def __init__(self, raw: str, net: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        self.raw = raw
        self.net = net

    def __str__(self) -> str:
        return self.raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _CIDR) and self.net == other.net

    def __hash__(self) -> int:
        return hash(self.net)


def _parse_ip(s: str) -> _IP | None:
    if "%" in s:
        return None  # zones are rejected by Kubernetes
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return None
    if isinstance(addr, ipaddress.IPv4Address) and any(len(o) > 1 and o[0] == "0" for o in s.split(".")):
        return None
    return _IP(addr)


def _parse_cidr(s: str) -> _CIDR | None:
    if "/" not in s or _parse_ip(s.split("/", 1)[0]) is None:
        return None
    try:
        return _CIDR(s, ipaddress.ip_interface(s))
    except ValueError:
        return None


def _as_ip(x: Any) -> _IP | None:
    return x if isinstance(x, _IP) else _parse_ip(str(x)) if isinstance(x, str) else None


def _as_cidr(x: Any) -> _CIDR | None:
    return x if isinstance(x, _CIDR) else _parse_cidr(str(x)) if isinstance(x, str) else None


def _fn_ip(s: Any) -> Any:
    if isinstance(s, _CIDR):
        return _IP(s.net.ip)
    ip = _parse_ip(str(s))
    return ip if ip is not None else _err(f"IP Address {str(s)!r} parse error during conversion from string")


def _fn_cidr(s: Any) -> Any:
    c = _parse_cidr(str(s))
    if c is None:
        return _err(f"network address {str(s)!r} parse error during conversion from string")
    return c


def _contains_ip(c: Any, x: Any) -> Any:
    ip = _as_ip(x)
    if not isinstance(c, _CIDR) or ip is None:
        return _err("no such overload: containsIP")
    return ct.BoolType(ip.addr in c.net.network)


def _contains_cidr(c: Any, x: Any) -> Any:
    other = _as_cidr(x)
    if not isinstance(c, _CIDR) or other is None:
        return _err("no such overload: containsCIDR")
    a, b = c.net.network, other.net.network
    return ct.BoolType(a.version == b.version and b.subnet_of(a))  # type: ignore[arg-type]


_IP_PREDICATES = {
    "isUnspecified": "is_unspecified",
    "isLoopback": "is_loopback",
    "isLinkLocalMulticast": "",
    "isLinkLocalUnicast": "is_link_local",
    "isGlobalUnicast": "",
}


def _ip_predicate(name: str) -> Callable[[Any], Any]:
    def fn(ip: Any) -> Any:
        if not isinstance(ip, _IP):
            return _err(f"no such overload: {name}")
        a = ip.addr
        if name == "isLinkLocalMulticast":
            net = "224.0.0.0/24" if a.version == 4 else "ff02::/16"
            return ct.BoolType(a in ipaddress.ip_network(net))
        if name == "isGlobalUnicast":
            return ct.BoolType(
                not (
                    a.is_unspecified
                    or a.is_loopback
                    or a.is_multicast
                    or a.is_link_local
                    or a == ipaddress.ip_address("255.255.255.255")
                )
            )
        return ct.BoolType(bool(getattr(a, _IP_PREDICATES[name])))

    return fn


def _fn_char_at(s: Any, i: Any) -> Any:
    if not 0 <= i <= len(s):
        return _err(f"index out of range: {i}")
    return ct.StringType(s[i : i + 1])


def _fn_index_of(target: Any, sub: Any, offset: Any = None) -> Any:
    if isinstance(target, list):
        for i, item in enumerate(target):
            try:
                if item == sub:
                    return ct.IntType(i)
            except TypeError:
                continue
        return ct.IntType(-1)
    start = 0 if offset is None else int(offset)
    if not 0 <= start <= len(target):
        return _err(f"index out of range: {start}")
    return ct.IntType(target.find(sub, start))


def _fn_last_index_of(target: Any, sub: Any, offset: Any = None) -> Any:
    if isinstance(target, list):
        for i in range(len(target) - 1, -1, -1):
            try:
                if target[i] == sub:
                    return ct.IntType(i)
            except TypeError:
                continue
        return ct.IntType(-1)
    end = len(target) if offset is None else int(offset)
    if not 0 <= end <= len(target):
        return _err(f"index out of range: {end}")
    return ct.IntType(target.rfind(sub, 0, end + len(sub)))


def _fn_split(s: Any, sep: Any, n: Any = None) -> Any:
    limit = -1 if n is None else int(n)
    if limit == 0:
        return ct.ListType([])
    if sep == "":
        chars = list(s)
        if 0 < limit < len(chars):
            chars = [*chars[: limit - 1], "".join(chars[limit - 1 :])]
        parts = chars
    else:
        parts = s.split(sep) if limit < 0 else s.split(sep, limit - 1)
    return ct.ListType([ct.StringType(p) for p in parts])


def _fn_substring(s: Any, start: Any, end: Any = None) -> Any:
    stop = len(s) if end is None else int(end)
    if not 0 <= start <= stop <= len(s):
        return _err(f"index out of range: {start if not 0 <= start <= len(s) else stop}")
    return ct.StringType(s[start:stop])


def _fn_replace(s: Any, old: Any, new: Any, n: Any = None) -> Any:
    return ct.StringType(s.replace(old, new, -1 if n is None else int(n)))


def _fn_join(items: Any, sep: Any = "") -> Any:
    if not all(isinstance(x, str) for x in items):
        return _err("no such overload: join on a list of non-strings")
    return ct.StringType(str(sep).join(items))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _fn_find(s: Any, pattern: Any) -> Any:
    try:
        m = re2.search(pattern, s)
    except re2.error as exc:
        return _re2_error(pattern, exc)
    return ct.StringType(m.group(0) if m else "")


def _fn_find_all(s: Any, pattern: Any, n: Any = None) -> Any:
    try:
        found = [m.group(0) for m in re2.finditer(pattern, s)]
    except re2.error as exc:
        return _re2_error(pattern, exc)
    if n is not None and int(n) >= 0:
        found = found[: int(n)]
    return ct.ListType([ct.StringType(x) for x in found])


def _re2_error(pattern: Any, exc: Exception) -> CELEvalError:
    detail = exc.args[0] if exc.args else exc
    detail = detail.decode() if isinstance(detail, bytes) else str(detail)
    return _err(f"invalid regex {str(pattern)!r}: {detail}")


def _fn_matches(s: Any, pattern: Any) -> Any:
    try:
        return ct.BoolType(re2.search(pattern, s) is not None)
    except re2.error as exc:
        return _re2_error(pattern, exc)


def _fn_is_sorted(items: Any) -> Any:
    try:
        return ct.BoolType(all(not (b < a) for a, b in itertools.pairwise(items)))
    except TypeError:
        return _err("no such overload: isSorted")


def _fn_sum(items: Any) -> Any:
    if not items:
        return ct.IntType(0)
    total = items[0]
    for x in items[1:]:
        total = total + x
    return total


def _fn_max(items: Any) -> Any:
    if not items:
        return _err("max called on empty list")
    return max(items)


def _sets(name: str) -> Callable[[Any, Any], Any]:
    def fn(a: Any, b: Any) -> Any:
        def has(container: Any, x: Any) -> bool:
            for y in container:
                try:
                    if x == y:
                        return True
                except TypeError:
                    continue
            return False

        if name == "contains":
            return ct.BoolType(all(has(a, x) for x in b))
        if name == "equivalent":
            return ct.BoolType(all(has(a, x) for x in b) and all(has(b, x) for x in a))
        return ct.BoolType(any(has(b, x) for x in a))

    return fn


def _fn_contains(target: Any, *args: Any) -> Any:
    if target is _SETS:
        return _sets("contains")(*args)
    if isinstance(target, str) and len(args) == 1 and isinstance(args[0], str):
        return ct.BoolType(args[0] in target)
    return _err("no such overload: contains")


def _namespace_or(method: str, fallback: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """A function that handles ``sets.<method>`` / ``optional.<method>``, else ``fallback``."""

    def fn(target: Any, *args: Any) -> Any:
        if target is _SETS and method in ("equivalent", "intersects"):
            return _sets(method)(*args)
        if target is _OPTIONAL_NS:
            if method == "of" and len(args) == 1:
                return _Optional(True, args[0])
            if method == "none" and not args:
                return _Optional(False)
            if method == "ofNonZeroValue" and len(args) == 1:
                return _Optional(bool(args[0]), args[0])
        if fallback is not None:
            return fallback(target, *args)
        return _err(f"no such overload: {method}")

    return fn


def _opt_method(method: str) -> Callable[..., Any]:
    def fn(target: Any, *args: Any) -> Any:
        if not isinstance(target, _Optional):
            return _err(f"no such overload: {method}")
        if method == "hasValue":
            return ct.BoolType(target.present)
        if method == "value":
            return target.val if target.present else _err("optional.none() dereference")
        return target.val if target.present else args[0]  # orValue

    return fn


def _typed(check: Callable[..., bool], fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def wrapped(*args: Any) -> Any:
        if not check(*args):
            return _err(f"no such overload: {name}({', '.join(type(a).__name__ for a in args)})")
        return fn(*args)

    return wrapped


def _is_str(*args: Any) -> bool:
    return isinstance(args[0], str)


def _is_list(*args: Any) -> bool:
    return isinstance(args[0], list)


def _is_str_or_list(*args: Any) -> bool:
    return isinstance(args[0], (str, list))


def _url_method(name: str) -> Callable[[Any], Any]:
    def fn(u: Any) -> Any:
        if not isinstance(u, _URL):
            return _err(f"no such overload: {name}")
        return _URL_METHODS[name](u)

    return fn


def _cidr_method(name: str) -> Callable[..., Any]:
    def fn(x: Any) -> Any:
        if name == "family" and isinstance(x, _IP):
            return ct.IntType(x.addr.version)
        if isinstance(x, _CIDR):
            if name == "prefixLength":
                return ct.IntType(x.net.network.prefixlen)
            if name == "masked":
                return _CIDR(str(x.net.network), ipaddress.ip_interface(str(x.net.network)))
        return _err(f"no such overload: {name}")

    return fn


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    # strings (cel-go ext.Strings, as enabled in Kubernetes)
    "charAt": _typed(_is_str, _fn_char_at, "charAt"),
    "indexOf": _typed(_is_str_or_list, _fn_index_of, "indexOf"),
    "lastIndexOf": _typed(_is_str_or_list, _fn_last_index_of, "lastIndexOf"),
    "lowerAscii": _typed(_is_str, lambda s: ct.StringType(s.translate(_ASCII_LOWER)), "lowerAscii"),
    "upperAscii": _typed(_is_str, lambda s: ct.StringType(s.translate(_ASCII_UPPER)), "upperAscii"),
    "replace": _typed(_is_str, _fn_replace, "replace"),
    "split": _typed(_is_str, _fn_split, "split"),
    "substring": _typed(_is_str, _fn_substring, "substring"),
    "trim": _typed(_is_str, lambda s: ct.StringType(s.strip()), "trim"),
    "join": _typed(_is_list, _fn_join, "join"),
    "contains": _fn_contains,
    "matches": _typed(_is_str, _fn_matches, "matches"),
    # regex (k8s library)
    "find": _typed(_is_str, _fn_find, "find"),
    "findAll": _typed(_is_str, _fn_find_all, "findAll"),
    # lists (k8s library); ``min`` is a cel-python built-in
    "isSorted": _typed(_is_list, _fn_is_sorted, "isSorted"),
    "sum": _typed(_is_list, _fn_sum, "sum"),
    "max": _typed(_is_list, _fn_max, "max"),
    # sets (cel-go ext.Sets) and optional
    "equivalent": _namespace_or("equivalent"),
    "intersects": _namespace_or("intersects"),
    "of": _namespace_or("of"),
    "none": _namespace_or("none"),
    "ofNonZeroValue": _namespace_or("ofNonZeroValue"),
    "hasValue": _opt_method("hasValue"),
    "value": _opt_method("value"),
    "orValue": _opt_method("orValue"),
    # URLs (k8s library)
    "url": _typed(_is_str, _fn_url, "url"),
    "isURL": _typed(_is_str, _fn_is_url, "isURL"),
    **{name: _url_method(name) for name in _URL_METHODS},
    # IPs and CIDRs (k8s library)
    "ip": _fn_ip,
    "isIP": lambda s: ct.BoolType(isinstance(s, str) and _parse_ip(s) is not None),
    "cidr": _typed(_is_str, _fn_cidr, "cidr"),
    "isCIDR": lambda s: ct.BoolType(isinstance(s, str) and _parse_cidr(s) is not None),
    "containsIP": _contains_ip,
    "containsCIDR": _contains_cidr,
    "family": _cidr_method("family"),
    "prefixLength": _cidr_method("prefixLength"),
    "masked": _cidr_method("masked"),
    **{name: _ip_predicate(name) for name in _IP_PREDICATES},
}


# --------------------------------------------------------------------------------------------------
# Compilation (parse + light type check)
# --------------------------------------------------------------------------------------------------


@cache
def _env() -> Any:
    return celpy.Environment()


_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


def _rewrite_three_arg_map(tree: lark.Tree[Any]) -> None:
    """``l.map(x, p, t)`` -> ``l.filter(x, p).map(x, t)`` (cel-python only has the 2-argument form)."""
    for node in list(tree.iter_subtrees()):
        if node.data != "member_dot_arg" or len(node.children) != 3:
            continue
        receiver, name, args = node.children
        if not (
            isinstance(name, lark.Token)
            and name.value == "map"
            and isinstance(args, lark.Tree)
            and len(args.children) == 3
        ):
            continue
        var, pred, transform = args.children
        meta = node.meta
        filter_call = lark.Tree(
            "member_dot_arg",
            [receiver, lark.Token("IDENT", "filter"), lark.Tree("exprlist", [var, pred], meta)],
            meta,
        )
        node.children = [
            lark.Tree("member", [filter_call], meta),
            name,
            lark.Tree("exprlist", [copy.deepcopy(var), transform], meta),
        ]


@dataclass
class _Compiled:
    source: str
    ast: Any = None
    program: Any = None
    error: str | None = None
    uses_old_self: bool = False
    # The field paths under self/oldSelf the expression reads, when it reads them only through
    # member selections (`self.spec.x`, `has(self.a.b)`); None when it uses self otherwise.
    paths: frozenset[tuple[str, ...]] | None = None


def _selected(tree: Any) -> tuple[str, list[str]] | None:
    """(the identifier, the names) of a member-selection chain such as self.spec.secretName."""
    names: list[str] = []
    node = tree
    while True:
        if node.data == "member_dot" and len(node.children) == 2:
            names.append(str(node.children[1]))
            node = node.children[0]
        elif (
            node.data in ("member", "primary")
            and len(node.children) == 1
            and hasattr(node.children[0], "data")
        ):
            node = node.children[0]
        elif node.data == "ident" and node.children:
            return str(node.children[0]), names[::-1]
        else:
            return None


def _self_paths(ast: Any) -> frozenset[tuple[str, ...]] | None:
    paths: set[tuple[str, ...]] = set()
    chained = 0

    def visit(node: Any) -> None:
        nonlocal chained
        if not hasattr(node, "data"):
            return
        if node.data == "member_dot":
            chain = _selected(node)
            # An escaped name (foo__dash__bar is the property foo-bar) is left to the full value.
            if chain is not None and chain[0] in ("self", "oldSelf") and not any("__" in n for n in chain[1]):
                paths.add(tuple(chain[1]))
                chained += 1
                return
        for child in node.children:
            visit(child)

    visit(ast)
    uses = sum(
        1
        for n in ast.iter_subtrees()
        if n.data == "ident" and n.children and str(n.children[0]) in ("self", "oldSelf")
    )
    return frozenset(paths) if uses == chained else None


def project(value: Any, paths: frozenset[tuple[str, ...]]) -> Any:
    """The parts of an object that these member selections can reach (whole subtrees at their ends):
    a rule that reads self only through them gives the same result on it as on the object."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for path in sorted(paths, key=len, reverse=True):  # a shorter path, kept whole, wins
        src: Any = value
        dst = out
        for i, name in enumerate(path):
            if not isinstance(src, dict) or name not in src:
                break
            if i == len(path) - 1 or not isinstance(src[name], dict):
                dst[name] = src[name]
                break
            if not isinstance(dst.get(name), dict) or dst.get(name) is src[name]:
                dst[name] = {}
            dst = dst[name]
            src = src[name]
    return out


_COMPILED: dict[str, _Compiled] = {}


def _compile(source: str) -> _Compiled:
    hit = _COMPILED.get(source)
    if hit is not None:
        return hit
    result = _Compiled(source)
    try:
        ast = _env().compile(source)
    except Exception as exc:  # celpy raises CELParseError (and occasionally lark errors)
        result.error = f"syntax error: {' '.join(str(exc).split())}"
        if re.search(r"\.\?|\[\?|\?\.", source):
            result.error += " (optional syntax .?/[?] is not supported by cel-python)"
    else:
        _rewrite_three_arg_map(ast)
        result.ast = ast
        result.program = _env().program(ast, functions=_FUNCTIONS)
        result.uses_old_self = any(
            n.data == "ident" and n.children and str(n.children[0]) == "oldSelf" for n in ast.iter_subtrees()
        )
        result.paths = _self_paths(ast)
    _COMPILED[source] = result
    return result


@dataclass(frozen=True)
class _T:
    """A (partially known) CEL type for the static check; ``dyn`` means unknown."""

    kind: str
    schema: Schema | None = field(default=None, compare=False)
    elem: _T | None = field(default=None, compare=False)


_DYN = _T("dyn")
_BOOL = _T("bool")
_INT = _T("int")
_STRING = _T("string")
_SCALARS = frozenset({"bool", "int", "uint", "double", "string", "bytes", "timestamp", "duration"})
_NUMERIC = frozenset({"int", "uint", "double"})


def _schema_type(schema: Schema | None, *, root: bool = False) -> _T:
    if schema is None or schema.get(_INT_OR_STRING):
        return _DYN
    typ = schema.get("type")
    if typ == "object" or (typ is None and (_props(schema) or root)):
        if root:
            props = dict(_props(schema))
            props["metadata"] = _ROOT_METADATA
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            return _T("object", {**schema, "properties": props})
        if _props(schema):
            return _T("object", schema)
        ap = _additional(schema)
        if ap is not None:
            return _T("map", schema, _schema_type(ap) if ap else _DYN)
        return _DYN
    if typ == "array":
        items = schema.get("items")
        return _T("list", schema, _schema_type(items) if isinstance(items, dict) else _DYN)
    if typ == "string":
        fmt = schema.get("format")
        if fmt in ("date", "date-time"):
            return _T("timestamp")
        return {"duration": _T("duration"), "byte": _T("bytes")}.get(fmt or "", _STRING)
    return {"integer": _INT, "number": _T("double"), "boolean": _BOOL}.get(str(typ), _DYN)


# method name -> (receiver kinds, result); "*" accepts any receiver
_METHODS: dict[str, tuple[frozenset[str], _T]] = {}


def _m(names: str, receivers: str, result: _T) -> None:
    for name in names.split():
        _METHODS[name] = (frozenset(receivers.split()), result)


_m("size", "string bytes list map", _INT)
_m("contains startsWith endsWith matches", "string", _BOOL)
_m("lowerAscii upperAscii trim charAt replace substring find", "string", _STRING)
_m("split findAll", "string", _T("list", None, _STRING))
_m("indexOf lastIndexOf", "string list", _INT)
_m("join", "list", _STRING)
_m("isSorted", "list", _BOOL)
_m("sum min max", "list", _DYN)
_m("getScheme getHost getHostname getPort getEscapedPath", "url", _STRING)
_m("getQuery", "url", _T("map", None, _T("list", None, _STRING)))
_m("family", "ip cidr", _INT)
_m("prefixLength", "cidr", _INT)
_m("containsIP containsCIDR", "cidr", _BOOL)
_m("ip", "cidr", _T("ip"))
_m("masked", "cidr", _T("cidr"))
_m(" ".join(_IP_PREDICATES), "ip", _BOOL)
_m("hasValue", "optional", _BOOL)
_m("value orValue", "optional", _DYN)
_m(
    "getFullYear getMonth getDate getDayOfMonth getDayOfWeek getDayOfYear getHours getMinutes getSeconds "
    "getMilliseconds",
    "timestamp duration",
    _INT,
)

_NAMESPACE_FUNCS: dict[str, dict[str, _T]] = {
    "sets": {"contains": _BOOL, "equivalent": _BOOL, "intersects": _BOOL},
    "optional": {"of": _T("optional"), "none": _T("optional"), "ofNonZeroValue": _T("optional")},
}

_GLOBALS: dict[str, _T] = {
    "size": _INT,
    "int": _INT,
    "uint": _T("uint"),
    "double": _T("double"),
    "string": _STRING,
    "bytes": _T("bytes"),
    "bool": _BOOL,
    "duration": _T("duration"),
    "timestamp": _T("timestamp"),
    "type": _T("type"),
    "dyn": _DYN,
    "matches": _BOOL,
    "url": _T("url"),
    "isURL": _BOOL,
    "ip": _T("ip"),
    "isIP": _BOOL,
    "cidr": _T("cidr"),
    "isCIDR": _BOOL,
}
_UNSUPPORTED = frozenset(
    {
        "quantity",
        "isQuantity",
        "semver",
        "isSemver",
        "format",
        "quote",
        "reverse",
        "strings.quote",
        "authorizer",
        "sign",
        "add",
        "sub",
        "isLessThan",
        "isGreaterThan",
        "compareTo",
        "asInteger",
        "asApproximateFloat",
        "isInteger",
        "transformList",
        "transformMap",
        "transformMapEntry",
    }
)
_TYPE_NAMES = frozenset(
    {"int", "uint", "double", "string", "bytes", "bool", "list", "map", "null_type", "type"}
)
_REGEX_FUNCS = frozenset({"matches", "find", "findAll"})


class _Checker:
    """Walks a cel-python parse tree and reports what the Kubernetes CEL type checker would reject."""

    def __init__(self, self_type: _T, old_self_allowed: bool, optional_old_self: bool = False) -> None:
        self.self_type = self_type
        self.old_self_allowed = old_self_allowed
        self.optional_old_self = optional_old_self
        self.errors: list[str] = []

    def error(self, msg: str) -> _T:
        if msg not in self.errors:
            self.errors.append(msg)
        return _DYN

    def check(self, tree: Any) -> _T:
        scope = {"self": self.self_type}
        if self.old_self_allowed:
            optional = _T("optional", None, self.self_type)
            scope["oldSelf"] = optional if self.optional_old_self else self.self_type
        return self.visit(tree, scope)

    def visit(self, node: Any, scope: dict[str, _T]) -> _T:
        if not isinstance(node, lark.Tree):
            return _DYN
        kids = [c for c in node.children if c is not None]
        handler = getattr(self, f"v_{node.data}", None)
        if handler is not None:
            result: _T = handler(kids, scope)
            return result
        if len(kids) == 1:
            return self.visit(kids[0], scope)
        for k in kids:
            self.visit(k, scope)
        return _DYN

    # -- operators --------------------------------------------------------------------------------
    def v_expr(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        if len(kids) == 1:
            return self.visit(kids[0], scope)
        cond, a, b = (self.visit(k, scope) for k in kids)
        self._want_bool(cond, "_?_:_")
        return a if a.kind == b.kind else _DYN

    def _want_bool(self, t: _T, op: str) -> None:
        if t.kind not in ("bool", "dyn"):
            self.error(f"found no matching overload for '{op}' applied to '({t.kind})'")

    def _logical(self, op: str, kids: list[Any], scope: dict[str, _T]) -> _T:
        if len(kids) == 1:
            return self.visit(kids[0], scope)
        for k in kids:
            self._want_bool(self.visit(k, scope), op)
        return _BOOL

    def v_conditionalor(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        return self._logical("_||_", kids, scope)

    def v_conditionaland(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        return self._logical("_&&_", kids, scope)

    def v_relation(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        if len(kids) == 1:
            return self.visit(kids[0], scope)
        op_node, right_node = kids
        left = self.visit(op_node.children[0], scope)
        right = self.visit(right_node, scope)
        op = str(op_node.data)
        if op == "relation_in":
            if right.kind not in ("list", "map", "dyn"):
                self.error(f"found no matching overload for '@in' applied to '({left.kind}, {right.kind})'")
        elif left.kind in _SCALARS and right.kind in _SCALARS and left.kind != right.kind:
            numeric_order = op not in ("relation_eq", "relation_ne")
            if not (numeric_order and left.kind in _NUMERIC and right.kind in _NUMERIC):
                sym = {
                    "relation_eq": "==",
                    "relation_ne": "!=",
                    "relation_lt": "<",
                    "relation_le": "<=",
                    "relation_gt": ">",
                    "relation_ge": ">=",
                }[op]
                self.error(
                    f"found no matching overload for '_{sym}_' applied to '({left.kind}, {right.kind})'"
                )
        return _BOOL

    def _arith(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        if len(kids) == 1:
            return self.visit(kids[0], scope)
        op_node, right_node = kids
        left = self.visit(op_node.children[0], scope)
        right = self.visit(right_node, scope)
        if "dyn" in (left.kind, right.kind):
            return _DYN
        if left.kind == right.kind and left.kind in ("int", "uint", "double", "string", "bytes", "list"):
            if left.kind in ("string", "bytes", "list") and op_node.data != "addition_add":
                return self.error(
                    f"found no matching overload for '{op_node.data}' applied to "
                    f"'({left.kind}, {right.kind})'"
                )
            return left
        if {left.kind, right.kind} <= {"timestamp", "duration"}:
            return _DYN
        return self.error(
            f"found no matching overload for '{op_node.data}' applied to '({left.kind}, {right.kind})'"
        )

    def v_addition(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        return self._arith(kids, scope)

    def v_multiplication(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        return self._arith(kids, scope)

    def v_unary(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        if len(kids) == 1:
            return self.visit(kids[0], scope)
        operand = self.visit(kids[1], scope)
        if kids[0].data == "unary_not":
            self._want_bool(operand, "!_")
            return _BOOL
        return operand

    # -- names and fields -------------------------------------------------------------------------
    def v_literal(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        kind = {
            "INT_LIT": "int",
            "UINT_LIT": "uint",
            "FLOAT_LIT": "double",
            "STRING_LIT": "string",
            "MLSTRING_LIT": "string",
            "BYTES_LIT": "bytes",
            "BOOL_LIT": "bool",
            "NULL_LIT": "null",
        }
        return _T(kind.get(kids[0].type, "dyn"))

    def v_ident(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        name = str(kids[0])
        if name in scope:
            return scope[name]
        if name == "oldSelf":
            return self.error(
                "oldSelf cannot be used on the uncorrelatable portion of the schema "
                "(below an array that is not x-kubernetes-list-type=map)"
            )
        if name in _NAMESPACE_FUNCS:
            return self.error(f"undeclared reference to '{name}' (only usable as {name}.<function>(...))")
        if name in _TYPE_NAMES:
            return _T("type")
        return self.error(f"undeclared reference to '{name}'")

    def _field(self, target: _T, name: str) -> _T:
        if target.kind == "object" and target.schema is not None:
            for prop, sub in _props(target.schema).items():
                if escape_name(prop) == name:
                    return _schema_type(sub)
            if target.schema.get(_PRESERVE) or (target.schema.get(_EMBEDDED) and name in _META_FIELDS):
                return _DYN
            return self.error(f"undefined field '{name}'")
        if target.kind == "map":
            return target.elem or _DYN
        if target.kind in _SCALARS or target.kind in ("list", "null", "type"):
            return self.error(f"type '{target.kind}' does not support field selection (.{name})")
        return _DYN

    def v_member_dot(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        return self._field(self.visit(kids[0], scope), str(kids[1]))

    def v_member_index(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        target = self.visit(kids[0], scope)
        index = self.visit(kids[1], scope)
        if target.kind == "list":
            if index.kind not in ("int", "uint", "dyn"):
                self.error(f"found no matching overload for '_[_]' applied to '(list, {index.kind})'")
            return target.elem or _DYN
        if target.kind == "map":
            return target.elem or _DYN
        if target.kind in _SCALARS:
            return self.error(
                f"found no matching overload for '_[_]' applied to '({target.kind}, {index.kind})'"
            )
        return _DYN

    # -- calls ------------------------------------------------------------------------------------
    @staticmethod
    def _args(kids: list[Any]) -> list[Any]:
        if kids and isinstance(kids[-1], lark.Tree) and kids[-1].data == "exprlist":
            return list(kids[-1].children)
        return []

    @staticmethod
    def _unwrap(node: Any) -> Any:
        """Descend single-child wrappers (expr -> conditionalor -> ... -> member -> x)."""
        while (
            isinstance(node, lark.Tree)
            and len(node.children) == 1
            and node.data
            in (
                "expr",
                "conditionalor",
                "conditionaland",
                "relation",
                "addition",
                "multiplication",
                "unary",
                "member",
                "primary",
                "paren_expr",
            )
        ):
            node = node.children[0]
        return node

    def _check_regex(self, fn: str, args: list[Any]) -> None:
        if not args:
            return
        lit = self._unwrap(args[0])
        if not (isinstance(lit, lark.Tree) and lit.data == "literal"):
            return
        token = lit.children[0]
        if isinstance(token, lark.Token) and token.type in ("STRING_LIT", "MLSTRING_LIT"):
            try:
                pattern = str(_env().program(_env().compile(str(token))).evaluate({}))
            except Exception:
                return  # a malformed literal is reported by the parser
            try:
                re2.compile(pattern)
            except re2.error as exc:
                self.error(f"{fn}(): {_error_text(_re2_error(pattern, exc))}")

    def v_member_dot_arg(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        receiver_node, name_tok = kids[0], kids[1]
        name = str(name_tok)
        args = self._args(kids)
        ns = self._unwrap(receiver_node)
        if (
            isinstance(ns, lark.Tree)
            and ns.data == "ident"
            and str(ns.children[0]) in _NAMESPACE_FUNCS
            and str(ns.children[0]) not in scope
        ):
            ns_name = str(ns.children[0])
            for a in args:
                self.visit(a, scope)
            if name not in _NAMESPACE_FUNCS[ns_name]:
                return self.error(f"undeclared reference to '{ns_name}.{name}'")
            return _NAMESPACE_FUNCS[ns_name][name]
        receiver = self.visit(receiver_node, scope)
        if name in _MACROS:
            return self._macro(name, receiver, args, scope)
        if f"{name}" in _UNSUPPORTED:
            for a in args:
                self.visit(a, scope)
            return self.error(f"{name}() is not supported by celcheck (cannot evaluate it offline)")
        if name not in _METHODS:
            for a in args:
                self.visit(a, scope)
            return self.error(f"undeclared reference to '{name}'")
        receivers, result = _METHODS[name]
        if receiver.kind != "dyn" and receiver.kind not in receivers:
            self.error(
                f"found no matching overload for '{name}' applied to '{receiver.kind}.({len(args)} args)'"
            )
        for a in args:
            self.visit(a, scope)
        if name in _REGEX_FUNCS:
            self._check_regex(name, args)
        if (name in ("sum", "min", "max") and receiver.kind == "list") or (
            name in ("value", "orValue") and receiver.kind == "optional"
        ):
            return receiver.elem or _DYN
        return result

    def _macro(self, name: str, receiver: _T, args: list[Any], scope: dict[str, _T]) -> _T:
        arity = (2, 3) if name == "map" else (2,)
        if len(args) not in arity:
            if len(args) == 3:
                return self.error(
                    f"two-variable comprehension {name}(k, v, ...) is not supported by celcheck"
                )
            return self.error(f"macro {name}() takes {' or '.join(map(str, arity))} arguments")
        var = self._unwrap(args[0])
        if not (isinstance(var, lark.Tree) and var.data == "ident"):
            return self.error(f"argument must be a simple name in {name}()")
        if receiver.kind == "list":
            elem = receiver.elem or _DYN
        elif receiver.kind == "map":
            elem = _STRING if receiver.schema is not None else _DYN
        elif receiver.kind == "dyn":
            elem = _DYN
        else:
            return self.error(f"macro {name}() is not supported on type '{receiver.kind}'")
        inner = {**scope, str(var.children[0]): elem}
        bodies = [self.visit(a, inner) for a in args[1:]]
        if name in ("all", "exists", "exists_one", "filter") or len(args) == 3:
            self._want_bool(bodies[0], name)
        if name == "filter":
            return receiver
        if name == "map":
            return _T("list", None, bodies[-1])
        return _BOOL

    def v_ident_arg(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        name = str(kids[0])
        args = self._args(kids)
        if name == "has":
            inner = self._unwrap(args[0]) if len(args) == 1 else None
            if not (isinstance(inner, lark.Tree) and inner.data == "member_dot"):
                return self.error("invalid argument to has() macro")
            self.visit(inner, scope)
            return _BOOL
        for a in args:
            self.visit(a, scope)
        if name in _UNSUPPORTED:
            return self.error(f"{name}() is not supported by celcheck (cannot evaluate it offline)")
        if name in _REGEX_FUNCS:
            self._check_regex(name, args[1:])
        if name not in _GLOBALS:
            return self.error(f"undeclared reference to '{name}'")
        return _GLOBALS[name]

    def v_list_lit(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        types = [self.visit(k, scope) for k in (kids[0].children if kids else [])]
        elem = types[0] if types and all(t.kind == types[0].kind for t in types) else _DYN
        return _T("list", None, elem)

    def v_map_lit(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        for k in kids[0].children if kids else []:
            self.visit(k, scope)
        return _T("map", None, _DYN)

    def v_member_object(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        return self.error("message construction is not available in Kubernetes CEL")

    def v_dot_ident(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        return self.error(f"undeclared reference to '.{kids[0]}'")

    def v_dot_ident_arg(self, kids: list[Any], scope: dict[str, _T]) -> _T:
        return self.error(f"undeclared reference to '.{kids[0]}'")


# --------------------------------------------------------------------------------------------------
# Schema walk shared by compile_all
# --------------------------------------------------------------------------------------------------


@dataclass
class _Node:
    path: str  # data path with [*] for list items and [*] for map values
    schema: Schema
    root: bool
    correlatable: bool


def _schema_nodes(schema: Schema) -> Iterator[_Node]:
    def walk(node: Schema, path: str, root: bool, correlatable: bool) -> Iterator[_Node]:
        yield _Node(path, node, root, correlatable)
        for name, prop in _props(node).items():
            if isinstance(prop, dict):
                yield from walk(prop, _child(path, name), False, correlatable)
        items = node.get("items")
        if isinstance(items, dict):
            yield from walk(items, f"{path}[*]", False, correlatable and _is_map_list(node))
        ap = node.get("additionalProperties")
        if isinstance(ap, dict):
            yield from walk(ap, f"{path}[*]", False, correlatable)

    return walk(schema, "", True, True)


_REASONS = frozenset(
    {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"}
)


def _check_field_path(schema: Schema, field_path: str) -> str | None:
    node: Schema | None = schema
    for m in re.finditer(r"\.([^.\[]+)|\[([^\]]*)\]", field_path):
        if node is None:
            return "fieldPath does not exist in the schema"
        if m.group(1) is not None:
            node = _props(node).get(m.group(1))
            if node is None:
                return f"fieldPath {field_path!r} does not exist in the schema"
        else:
            idx = m.group(2)
            if idx.startswith(("'", '"')):
                key = idx[1:-1]
                node = _props(node).get(key) or _additional(node)
            elif isinstance(node.get("items"), dict):
                node = node["items"]
            else:
                return f"fieldPath {field_path!r} does not exist in the schema"
    return None


def compile_all(crd: dict[str, Any]) -> list[str]:
    """Every rule/messageExpression (all versions) that the API server would refuse when creating the CRD.

    Entries look like ``"v1alpha1 spec.source: rule 'has(self.x)': undefined field 'x'"``.
    """
    problems: list[str] = []
    for version, schema in _all_schemas(crd):
        for node in _schema_nodes(schema):
            rules = node.schema.get(_RULES) or []
            self_type = _schema_type(node.schema, root=node.root)
            for i, rule in enumerate(rules):
                where = f"{version} {_show(node.path)}"
                source = rule.get("rule") if isinstance(rule, dict) else None
                if not isinstance(source, str) or not source.strip():
                    problems.append(f"{where}: x-kubernetes-validations[{i}]: rule is required")
                    continue
                compiled = _compile(source)
                if compiled.error is not None:
                    problems.append(f"{where}: rule {source!r}: {compiled.error}")
                    continue
                optional_old = bool(rule.get("optionalOldSelf"))
                checker = _Checker(self_type, node.correlatable, optional_old)
                result = checker.check(compiled.ast)
                if result.kind not in ("bool", "dyn"):
                    checker.error(f"rule must evaluate to a bool, not {result.kind}")
                if rule.get("optionalOldSelf") and not compiled.uses_old_self:
                    checker.error("optionalOldSelf may only be set on rules that use oldSelf")
                problems.extend(f"{where}: rule {source!r}: {e}" for e in checker.errors)
                message = rule.get("message")
                if isinstance(message, str) and ("\n" in message or "\r" in message):
                    problems.append(f"{where}: rule {source!r}: message must not contain line breaks")
                if "reason" in rule and rule["reason"] not in _REASONS:
                    problems.append(f"{where}: rule {source!r}: unsupported reason {rule['reason']!r}")
                if rule.get("fieldPath"):
                    fp_problem = _check_field_path(node.schema, str(rule["fieldPath"]))
                    if fp_problem:
                        problems.append(f"{where}: rule {source!r}: {fp_problem}")
                mexpr = rule.get("messageExpression")
                if mexpr:
                    mcompiled = _compile(str(mexpr))
                    if mcompiled.error is not None:
                        problems.append(f"{where}: messageExpression {mexpr!r}: {mcompiled.error}")
                        continue
                    mchecker = _Checker(self_type, node.correlatable, optional_old)
                    mresult = mchecker.check(mcompiled.ast)
                    if mresult.kind not in ("string", "dyn"):
                        mchecker.error(f"messageExpression must evaluate to a string, not {mresult.kind}")
                    problems.extend(f"{where}: messageExpression {mexpr!r}: {e}" for e in mchecker.errors)
    return problems


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------

_NO_SUCH_MEMBER = re.compile(r"no such member in mapping: \\*'([^'\\]+)\\*'")


def _error_text(exc: Any) -> str:
    """A short, Kubernetes-like text for a cel-python error value."""
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    text = str(args[0]) if args else str(exc)
    if text.startswith("undeclared reference"):
        return text.split(" (in activation", 1)[0]
    if text == "no such key" and len(args) > 2 and args[2]:
        return f"no such key: {args[2][0]}"
    m = _NO_SUCH_MEMBER.search(text) or _NO_SUCH_MEMBER.search(repr(args))
    if m:
        return f"no such key: {m.group(1)}"
    if text == "invalid_argument" and len(args) > 1 and args[1] is IndexError:
        return "index out of bounds"
    if text == "return error for overflow" and args[2:] and args[2] == ("overflow",):
        return "integer overflow"
    if text == "match error" and len(args) > 2:
        detail = args[2][0] if args[2] else ""
        return f"invalid regex: {detail.decode() if isinstance(detail, bytes) else detail}"
    if len(args) > 2 and args[2] and text in ("no such overload", "return error for overflow"):
        inner = " ".join(str(a) for a in args[2])
        inner = inner if len(inner) < 200 else inner[:200] + "..."
        return f"{text}: {inner}"
    return text


def _evaluate(compiled: _Compiled, activation: dict[str, Any]) -> tuple[Any, str | None]:
    try:
        result = compiled.program.evaluate(activation)
    except CELEvalError as exc:
        return None, _error_text(exc)
    except Exception as exc:  # cel-python internals
        return None, f"celcheck could not evaluate the rule: {type(exc).__name__}: {exc}"
    if isinstance(result, CELEvalError):
        return None, _error_text(result)
    return result, None


def _rule_error_string(rule: dict[str, Any]) -> str:
    if rule.get("message"):
        return str(rule["message"]).strip()
    return str(rule.get("rule", "")).strip()


def _rule_message(rule: dict[str, Any]) -> str:
    if rule.get("message"):
        return str(rule["message"]).strip()
    return f"failed rule: {_rule_error_string(rule)}"


def _error_path(path: str, field_path: str | None) -> str:
    if not field_path:
        return _show(path)
    fp = field_path.strip()
    if fp.startswith("."):
        return path + fp if path else fp[1:]
    return path + fp


_RESULTS: dict[tuple[Any, ...], tuple[str, ...]] = {}  # the errors of a node's rules, by their inputs
_RESULTS_MAX = 10_000
_SCHEMA_KEYS: dict[
    int, tuple[Schema, str]
] = {}  # id -> (the schema, kept alive so ids stay unique; its JSON)


def _schema_key(schema: Schema) -> str:
    got = _SCHEMA_KEYS.get(id(schema))
    if got is None or got[0] is not schema:
        if len(_SCHEMA_KEYS) >= _RESULTS_MAX:
            _SCHEMA_KEYS.clear()
        got = _SCHEMA_KEYS[id(schema)] = (schema, _js(schema))
    return got[1]


_READS: dict[str, tuple[frozenset[tuple[str, ...]] | None, bool]] = {}  # schema key -> _read_paths


def _read_paths(rules: list[Any]) -> tuple[frozenset[tuple[str, ...]] | None, bool]:
    """The paths that a node's rules (and their messageExpressions) read (None: they may read all),
    and whether any is a transition rule (uses oldSelf)."""
    paths: set[tuple[str, ...]] | None = set()
    transition = False
    for rule in rules:
        if not isinstance(rule, dict):
            paths = None
            continue
        compiled = _compile(str(rule.get("rule") or ""))
        transition = transition or compiled.uses_old_self
        message = rule.get("messageExpression")
        for each in (compiled, *([_compile(str(message))] if message else [])):
            if paths is None or each.paths is None or each.error is not None:
                paths = None
            else:
                paths |= each.paths
    return (None if paths is None else frozenset(paths)), transition


@dataclass
class _Eval:
    out: list[str]
    ratcheting: bool
    server: bool = False  # format a failed rule as the API server does (fieldErrorForReason)

    def node(self, schema: Schema, value: Any, old: Any, has_old: bool, path: str, root: bool) -> None:
        if value is None:  # absent or null: the apiserver does not validate it
            return
        rules = schema.get(_RULES) or []
        if rules:
            # CRD validation ratcheting: rules without oldSelf are skipped where nothing changed.
            unchanged = self.ratcheting and has_old and old == value
            # What the rules can read of the node: on a root rule that reads a few fields, the
            # whole object (status too) is neither serialized for the cache nor converted for CEL.
            schema_key = _schema_key(schema)
            reads = _READS.get(schema_key)
            if reads is None:  # a node's rules are its schema's: read them once, not on every write
                if len(_READS) >= _RESULTS_MAX:
                    _READS.clear()
                reads = _READS[schema_key] = _read_paths(rules)
            paths, transition = reads
            seen = value if paths is None else project(value, paths)
            seen_old = old if paths is None or not has_old else project(old, paths)
            # CEL is pure, so the same rules over the same values give the same errors: an API
            # server sees the same spec on every status write, and a benchmark 500 equal specs.
            # Rules without oldSelf never see the old value: a create and the writes after it that
            # leave what the rules read alone (status writes, for a root rule) share one entry.
            key = (
                schema_key,
                path,
                self.server,
                unchanged,
                has_old and transition,
                _js(seen),
                _js(seen_old) if has_old and transition else "",
                schema.get("type"),
            )
            cached = _RESULTS.get(key)
            if cached is None:
                self_val = _to_cel(seen, schema, root=root)
                old_val = _to_cel(seen_old, schema, root=root) if has_old else None
                mark = len(self.out)
                for rule in rules:
                    self.rule(
                        rule,
                        self_val,
                        old_val,
                        has_old and old is not None,
                        path,
                        unchanged,
                        schema.get("type"),
                    )
                if len(_RESULTS) >= _RESULTS_MAX:
                    _RESULTS.clear()
                _RESULTS[key] = tuple(self.out[mark:])
            else:
                self.out.extend(cached)
        if isinstance(value, dict) and not schema.get(_INT_OR_STRING):
            props = _props(schema)
            ap = _additional(schema)
            for key, sub in value.items():
                if root and key == "metadata":
                    continue  # no rules are allowed inside metadata
                sub_schema = props.get(key, ap)
                if sub_schema is None:
                    continue
                old_has = has_old and isinstance(old, dict) and key in old
                old_sub = old.get(key) if old_has else None
                self.node(sub_schema, sub, old_sub, old_has, _child(path, key), False)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            items: Schema = schema["items"]
            old_by_key: dict[str, Any] = {}
            if has_old and isinstance(old, list) and _is_map_list(schema):
                keys = schema[_LIST_KEYS]
                old_by_key = {_js([o.get(k) for k in keys]): o for o in old if isinstance(o, dict)}
            for i, item in enumerate(value):
                if old_by_key and isinstance(item, dict):
                    k = _js([item.get(key) for key in schema[_LIST_KEYS]])
                    self.node(items, item, old_by_key.get(k), k in old_by_key, f"{path}[{i}]", False)
                else:
                    self.node(items, item, None, False, f"{path}[{i}]", False)

    def rule(
        self,
        rule: dict[str, Any],
        self_val: Any,
        old_val: Any,
        has_old: bool,
        path: str,
        unchanged: bool,
        type_: Any = None,
    ) -> None:
        source = str(rule.get("rule", ""))
        compiled = _compile(source)
        if unchanged and not compiled.uses_old_self:
            return
        where = _error_path(path, rule.get("fieldPath"))
        if compiled.error is not None:
            self.out.append(f"{where}: rule does not compile: {compiled.error} (rule: {source})")
            return
        activation: dict[str, Any] = {"self": self_val, "sets": _SETS, "optional": _OPTIONAL_NS}
        if compiled.uses_old_self:
            if rule.get("optionalOldSelf"):
                activation["oldSelf"] = _Optional(True, old_val) if has_old else _Optional(False)
            elif not has_old:
                return  # transition rule on create (or no correlatable old value): not evaluated
            else:
                activation["oldSelf"] = old_val
        result, error = _evaluate(compiled, activation)
        if error is not None:
            self.out.append(f"{where}: {error} evaluating rule: {_rule_error_string(rule)}")
            return
        if not isinstance(result, ct.BoolType):
            self.out.append(f"{where}: rule did not evaluate to a bool ({type(result).__name__}): {source}")
            return
        if result:
            return
        message = _rule_message(rule)
        mexpr = rule.get("messageExpression")
        if mexpr:
            mcompiled = _compile(str(mexpr))
            if mcompiled.error is None:
                text, merr = _evaluate(mcompiled, activation)
                if merr is None and isinstance(text, str) and text.strip() and "\n" not in text:
                    message = str(text)
        if self.server:
            message = _field_error_for_reason(rule.get("reason"), str(type_ or ""), message)
        self.out.append(f"{where}: {message}")


def _field_error_for_reason(reason: Any, type_: str, detail: str) -> str:
    """apiextensions-apiserver pkg/apiserver/schema/cel/validation.go fieldErrorForReason, with the
    schema node's type as the value (``field.Invalid(fldPath, sts.Type, ...)``), as field.Error prints it."""
    if reason == "FieldValueForbidden":
        return f"Forbidden: {detail}"
    if reason == "FieldValueRequired":
        return f"Required value: {detail}"
    if reason == "FieldValueDuplicate":
        return f"Duplicate value: {json.dumps(type_)}"
    return f"Invalid value: {json.dumps(type_)}: {detail}"


def violations(
    crd: dict[str, Any],
    obj: dict[str, Any],
    old: dict[str, Any] | None = None,
    version: str = "v1alpha1",
    *,
    strict: bool = True,
    openapi: bool = True,
    ratcheting: bool = True,
) -> list[str]:
    """What the API server would reject ``obj`` for (``old`` given: as an update of ``old``).

    Order of processing follows the apiserver: with a status subresource, ``status`` of ``obj`` is
    ignored (replaced by the old status); unknown fields are pruned (and, with ``strict`` -- kubectl's
    default field validation -- reported as ``"<path>: unknown field"``); schema defaults are applied;
    OpenAPI value validations run (``openapi``; a type mismatch blocks CEL, as in Kubernetes); then
    every CEL rule is evaluated. With ``ratcheting`` (on by default since Kubernetes 1.30), on updates
    rules that do not use ``oldSelf`` are skipped at nodes whose value did not change.

    Each entry is ``"<field path>: <message>"``; rules at the root are reported as ``"<root>: ..."``.
    """
    run = _admission(crd, obj, old, version, openapi=openapi, ratcheting=ratcheting, server=False)
    return ([f"{p}: unknown field" for p in run.unknown] if strict else []) + run.errors


@dataclass
class Admission:
    """What the API server makes of a custom resource write: the object as it would be stored (status
    handled per the subresource, unknown fields pruned, defaults applied), the unknown fields (a
    ``fieldValidation=Strict`` request is refused for them), and the validation errors, each as the
    API server prints it (``"<path>: <ErrorBody>"``)."""

    body: dict[str, Any]
    unknown: list[str]
    errors: list[str]


def admit(
    crd: dict[str, Any],
    obj: dict[str, Any],
    old: dict[str, Any] | None = None,
    version: str = "v1alpha1",
    *,
    status_write: bool = False,
) -> Admission:
    """:func:`violations` for an API server: also returns the object to store, and formats a failed
    CEL rule the server's way (``spec: Invalid value: "object": <message>``). ``status_write``: a
    write of the status subresource, whose ``status`` is the new one (the caller kept the old spec)."""
    return _admission(crd, obj, old, version, openapi=True, ratcheting=True, server=True, status=status_write)


def _admission(
    crd: dict[str, Any],
    obj: dict[str, Any],
    old: dict[str, Any] | None,
    version: str,
    *,
    openapi: bool,
    ratcheting: bool,
    server: bool,
    status: bool = False,
) -> Admission:
    schema = crd_schema(crd, version)
    if not status and _has_status_subresource(crd, version):
        obj = {k: v for k, v in obj.items() if k != "status"}
        if old is not None and "status" in old:
            obj["status"] = old["status"]
    unknown: list[str] = []
    value = _prune_and_default(schema, obj, "", unknown, root=True)
    old_value = _prune_and_default(schema, old, "", [], root=True) if old is not None else None
    errors: list[str] = []
    if openapi:
        blocking: list[str] = []
        _openapi_errors(schema, value, "", blocking, errors, root=True)
        if blocking:
            return Admission(value, unknown, blocking + errors)
    _Eval(errors, ratcheting, server=server).node(schema, value, old_value, old is not None, "", True)
    return Admission(value, unknown, errors)


def _has_status_subresource(crd: dict[str, Any], version: str) -> bool:
    spec = crd.get("spec") or {}
    for ver in spec.get("versions") or []:
        if ver.get("name") == version and "subresources" in ver:
            return "status" in (ver.get("subresources") or {})
    return "status" in (spec.get("subresources") or {})


def iter_rules(crd: dict[str, Any], version: str = "v1alpha1") -> Iterator[tuple[str, dict[str, Any]]]:
    """(schema path, rule) for every x-kubernetes-validations entry of ``version`` (handy for coverage)."""
    for node in _schema_nodes(crd_schema(crd, version)):
        for rule in node.schema.get(_RULES) or []:
            yield _show(node.path), rule
