"""The static CEL cost estimate the API server puts on every ``x-kubernetes-validations`` rule.

A port of what decides whether a CRD's rule is "too expensive":

* ``DeclType`` sizes, from k8s.io/apiserver/pkg/cel/common/schemas.go ``SchemaDeclType`` (max lengths of
  strings, lists and maps without ``maxLength``/``maxItems``/``maxProperties`` are estimated from the 3 MiB
  request limit) and k8s.io/apiserver/pkg/cel/types.go (min serialized sizes);
* the estimator itself, cel-go checker/cost.go (``coster``), with the Kubernetes library estimates of
  k8s.io/apiserver/pkg/cel/library/cost.go (``CostEstimator.EstimateCallCost``) and the size estimator of
  apiextensions-apiserver pkg/apiserver/schema/cel/compilation.go (``sizeEstimator``, ``maxCardinality``).

The AST is cel-python's parse tree, turned into cel-go's shape (macros expanded into comprehensions exactly
as cel-go's parser/macro.go does), because the cost of ``all``/``exists``/... comes from that expansion.
Anything whose cost is not modelled raises :class:`CostUnsupported` instead of being estimated as free.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import lark

from .cel import _env, escape_name

Schema = dict[str, Any]

MAX_UINT64 = 2**64 - 1
# k8s.io/apiserver/pkg/cel/limits.go DefaultMaxRequestSizeBytes (also celconfig.MaxRequestSizeBytes)
MAX_REQUEST_SIZE_BYTES = 3 * 1024 * 1024
# k8s.io/apiserver/pkg/cel/limits.go
MAX_DURATION_SIZE_JSON = 32
MAX_DATETIME_SIZE_JSON = 32
MIN_DURATION_SIZE_JSON = 3
JSON_DATE_SIZE = 12
MIN_DATETIME_SIZE_JSON = 21
MIN_STRING_SIZE = 2
MIN_BOOL_SIZE = 4
MIN_NUMBER_SIZE = 1
# cel-go common/cost.go
STRING_TRAVERSAL_COST_FACTOR = 0.1
REGEX_STRING_LENGTH_COST_FACTOR = 0.25
SELECT_AND_IDENT_COST = 1
CONST_COST = 0
LIST_CREATE_BASE_COST = 10
MAP_CREATE_BASE_COST = 30
ACCUMULATOR = "@result"


class CostUnsupported(Exception):
    """The rule uses something whose cost the port does not model (reported, never counted as 0)."""


# --------------------------------------------------------------------------------------------------
# DeclType (the CEL view of a structural schema, with size estimates)
# --------------------------------------------------------------------------------------------------


@dataclass
class DeclType:
    """k8s.io/apiserver/pkg/cel.DeclType, reduced to what type checking and costing need."""

    kind: str  # object list map string bytes int uint double bool duration timestamp dyn null type optional
    fields: dict[str, DeclType] = field(default_factory=dict)
    elem: DeclType | None = None
    key: DeclType | None = None
    max_elements: int = 0
    min_serialized_size: int = 0
    schema: Schema | None = None  # the structural schema it came from, if any


def _scalar(kind: str, min_size: int) -> DeclType:
    return DeclType(kind, min_serialized_size=min_size)


def _string_type() -> DeclType:
    return DeclType("string", min_serialized_size=MIN_STRING_SIZE)


def with_type_and_object_meta(schema: Schema) -> Schema:
    """apiserver/pkg/cel/common/schemas.go WithTypeAndObjectMeta: what CEL sees at a resource root."""
    props = schema.get("properties") or {}

    def typ(s: Any) -> Any:
        return s.get("type") if isinstance(s, dict) else None

    meta = props.get("metadata") or {}
    meta_props = meta.get("properties") or {} if isinstance(meta, dict) else {}
    if (
        props
        and typ(props.get("kind")) == "string"
        and typ(props.get("apiVersion")) == "string"
        and typ(meta) == "object"
        and meta_props
        and typ(meta_props.get("name")) == "string"
        and typ(meta_props.get("generateName")) == "string"
    ):
        return schema
    new_props = dict(props)
    new_props["kind"] = {"type": "string"}
    new_props["apiVersion"] = {"type": "string"}
    new_props["metadata"] = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}},
    }
    return {**schema, "properties": new_props}


def _zero_if_negative(v: Any) -> int:
    return max(int(v), 0)


def _estimate_max_string_length(schema: Schema) -> int:
    if schema.get("x-kubernetes-int-or-string"):
        return MAX_REQUEST_SIZE_BYTES - 2
    fmt = schema.get("format")
    if fmt == "duration":
        return MAX_DURATION_SIZE_JSON
    if fmt == "date":
        return JSON_DATE_SIZE
    if fmt == "date-time":
        return MAX_DATETIME_SIZE_JSON
    return MAX_REQUEST_SIZE_BYTES - 2  # subtract 2 for the quotes


def schema_decl_type(schema: Schema | None, is_resource_root: bool) -> DeclType | None:
    """apiserver/pkg/cel/common/schemas.go SchemaDeclType (nil where CEL does not see the schema)."""
    if schema is None:
        return None
    if schema.get("x-kubernetes-int-or-string"):
        dyn = DeclType("dyn", min_serialized_size=1, schema=schema)
        dyn.max_elements = MAX_REQUEST_SIZE_BYTES - 2
        return dyn
    if is_resource_root:
        schema = with_type_and_object_meta(schema)
    typ = schema.get("type")
    if typ == "array":
        items = schema.get("items")
        if not isinstance(items, dict):
            return None
        items_type = schema_decl_type(items, bool(items.get("x-kubernetes-embedded-resource")))
        if items_type is None:
            return None
        if schema.get("maxItems") is not None:
            max_items = _zero_if_negative(schema["maxItems"])
        else:
            max_items = (MAX_REQUEST_SIZE_BYTES - 2) // (items_type.min_serialized_size + 1)
        return DeclType("list", elem=items_type, max_elements=max_items, min_serialized_size=2, schema=schema)
    if typ == "object":
        ap = schema.get("additionalProperties")
        if isinstance(ap, dict):
            props_type = schema_decl_type(ap, bool(ap.get("x-kubernetes-embedded-resource")))
            if props_type is None:
                return None
            if schema.get("maxProperties") is not None:
                max_props = _zero_if_negative(schema["maxProperties"])
            else:
                max_props = (MAX_REQUEST_SIZE_BYTES - 2) // (props_type.min_serialized_size + 6)
            return DeclType(
                "map",
                key=_string_type(),
                elem=props_type,
                max_elements=max_props,
                min_serialized_size=2,
                schema=schema,
            )
        required = set(schema.get("required") or [])
        fields: dict[str, DeclType] = {}
        min_size = 2  # {}
        for name, prop in (schema.get("properties") or {}).items():
            if not isinstance(prop, dict):
                continue
            field_type = schema_decl_type(prop, bool(prop.get("x-kubernetes-embedded-resource")))
            if field_type is None:
                continue
            escaped = escape_name(name)
            if escaped is not None:
                fields[escaped] = field_type
            # only required properties without a default count: defaults are filled in server-side
            if name in required and prop.get("default") is None:
                min_size += len(name) + field_type.min_serialized_size + 4
        return DeclType("object", fields=fields, min_serialized_size=min_size, schema=schema)
    if typ == "string":
        fmt = schema.get("format")
        if fmt == "byte":
            t = DeclType("bytes", min_serialized_size=MIN_STRING_SIZE, schema=schema)
            if schema.get("maxLength") is not None:
                t.max_elements = _zero_if_negative(schema["maxLength"])
            else:
                t.max_elements = _estimate_max_string_length(schema)
            return t
        if fmt == "duration":
            return DeclType(
                "duration",
                min_serialized_size=MIN_DURATION_SIZE_JSON,
                max_elements=_estimate_max_string_length(schema),
                schema=schema,
            )
        if fmt in ("date", "date-time"):
            return DeclType(
                "timestamp",
                min_serialized_size=JSON_DATE_SIZE if fmt == "date" else MIN_DATETIME_SIZE_JSON,
                max_elements=_estimate_max_string_length(schema),
                schema=schema,
            )
        t = DeclType("string", min_serialized_size=MIN_STRING_SIZE, schema=schema)
        if schema.get("maxLength") is not None:
            # maxLength counts code points; sizes are in bytes, and a code point takes up to 4
            t.max_elements = _zero_if_negative(schema["maxLength"]) * 4
        else:
            t.max_elements = _estimate_max_string_length(schema)
        return t
    if typ == "boolean":
        return DeclType("bool", min_serialized_size=MIN_BOOL_SIZE, schema=schema)
    if typ == "number":
        return DeclType("double", min_serialized_size=MIN_NUMBER_SIZE, schema=schema)
    if typ == "integer":
        return DeclType("int", min_serialized_size=MIN_NUMBER_SIZE, schema=schema)
    return None


def max_cardinality(min_size: int) -> int:
    """schema/cel/compilation.go maxCardinality: how often data of this min size fits into a request."""
    return MAX_REQUEST_SIZE_BYTES // (min_size + 1)


# --------------------------------------------------------------------------------------------------
# Estimates (cel-go checker/cost.go SizeEstimate / CostEstimate arithmetic, saturating at MaxUint64)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Est:
    min: int
    max: int

    def add(self, o: Est) -> Est:
        return Est(min(self.min + o.min, MAX_UINT64), min(self.max + o.max, MAX_UINT64))

    def multiply(self, o: Est) -> Est:
        return Est(min(self.min * o.min, MAX_UINT64), min(self.max * o.max, MAX_UINT64))

    def factor(self, f: float) -> Est:
        return Est(_mul_factor(self.min, f), _mul_factor(self.max, f))

    def union(self, o: Est) -> Est:
        return Est(min(self.min, o.min), max(self.max, o.max))


def _mul_factor(x: int, y: float) -> int:
    xf = float(x)
    if xf > 0 and y > 0 and xf > float(MAX_UINT64) / y:
        return MAX_UINT64
    ceil = math.ceil(xf * y)
    if ceil >= 2.0**64:
        return MAX_UINT64
    return int(ceil)


UNKNOWN = Est(0, MAX_UINT64)
ZERO = Est(0, 0)
ONE = Est(1, 1)


def fixed(n: int) -> Est:
    return Est(n, n)


# --------------------------------------------------------------------------------------------------
# cel-go shaped AST built from cel-python's parse tree
# --------------------------------------------------------------------------------------------------

_ids = itertools.count(1)


@dataclass(eq=False)
class Node:
    id: int = field(default_factory=lambda: next(_ids), init=False)


@dataclass(eq=False)
class Lit(Node):
    kind: str = "null"
    size: int = 1  # computeExprSize: rune count of strings, byte count of bytes, 1 for scalars
    value: Any = None


@dataclass(eq=False)
class Ident(Node):
    name: str = ""


@dataclass(eq=False)
class Select(Node):
    operand: Node | None = None
    field_name: str = ""
    test_only: bool = False


@dataclass(eq=False)
class Call(Node):
    fn: str = ""
    target: Node | None = None
    args: list[Node] = field(default_factory=list)


@dataclass(eq=False)
class ListE(Node):
    elems: list[Node] = field(default_factory=list)


@dataclass(eq=False)
class MapE(Node):
    entries: list[tuple[Node, Node]] = field(default_factory=list)


@dataclass(eq=False)
class Comp(Node):
    iter_var: str = ""
    iter_range: Node | None = None
    accu_var: str = ACCUMULATOR
    accu_init: Node | None = None
    loop_cond: Node | None = None
    loop_step: Node | None = None
    result: Node | None = None


_BINARY = {
    "relation_lt": "_<_",
    "relation_le": "_<=_",
    "relation_gt": "_>_",
    "relation_ge": "_>=_",
    "relation_eq": "_==_",
    "relation_ne": "_!=_",
    "relation_in": "@in",
    "addition_add": "_+_",
    "addition_sub": "_-_",
    "multiplication_mul": "_*_",
    "multiplication_div": "_/_",
    "multiplication_mod": "_%_",
}
_NAMESPACES = ("sets", "optional", "strings", "math", "base64", "lists")
_MACROS = {"all", "exists", "exists_one", "map", "filter"}


def _literal(token: lark.Token) -> Lit:
    kind = {
        "INT_LIT": "int",
        "UINT_LIT": "uint",
        "FLOAT_LIT": "double",
        "STRING_LIT": "string",
        "MLSTRING_LIT": "string",
        "BYTES_LIT": "bytes",
        "BOOL_LIT": "bool",
        "NULL_LIT": "null",
    }.get(token.type, "dyn")
    if kind in ("string", "bytes"):
        value = _env().program(_env().compile(str(token))).evaluate({})
        return Lit(kind=kind, size=len(value), value=value)
    return Lit(kind=kind, size=1, value=str(token))


def _accu() -> Ident:
    return Ident(name=ACCUMULATOR)


def _expand_macro(name: str, target: Node, args: list[Node]) -> Node:
    """cel-go parser/macro.go MakeAll/MakeExists/MakeExistsOne/MakeMap/MakeFilter."""
    var = args[0]
    if not isinstance(var, Ident):
        raise CostUnsupported(f"argument to {name}() must be a simple name")
    v = var.name
    if name == "all":
        return Comp(
            iter_var=v,
            iter_range=target,
            accu_init=Lit(kind="bool", value="true"),
            loop_cond=Call(fn="@not_strictly_false", args=[_accu()]),
            loop_step=Call(fn="_&&_", args=[_accu(), args[1]]),
            result=_accu(),
        )
    if name == "exists":
        return Comp(
            iter_var=v,
            iter_range=target,
            accu_init=Lit(kind="bool", value="false"),
            loop_cond=Call(fn="@not_strictly_false", args=[Call(fn="!_", args=[_accu()])]),
            loop_step=Call(fn="_||_", args=[_accu(), args[1]]),
            result=_accu(),
        )
    if name == "exists_one":
        return Comp(
            iter_var=v,
            iter_range=target,
            accu_init=Lit(kind="int", value="0"),
            loop_cond=Lit(kind="bool", value="true"),
            loop_step=Call(
                fn="_?_:_",
                args=[args[1], Call(fn="_+_", args=[_accu(), Lit(kind="int", value="1")]), _accu()],
            ),
            result=Call(fn="_==_", args=[_accu(), Lit(kind="int", value="1")]),
        )
    if name == "map":
        step: Node = Call(fn="_+_", args=[_accu(), ListE(elems=[args[-1]])])
        if len(args) == 3:
            step = Call(fn="_?_:_", args=[args[1], step, _accu()])
        return Comp(
            iter_var=v,
            iter_range=target,
            accu_init=ListE(),
            loop_cond=Lit(kind="bool", value="true"),
            loop_step=step,
            result=_accu(),
        )
    # filter
    return Comp(
        iter_var=v,
        iter_range=target,
        accu_init=ListE(),
        loop_cond=Lit(kind="bool", value="true"),
        loop_step=Call(
            fn="_?_:_",
            args=[args[1], Call(fn="_+_", args=[_accu(), ListE(elems=[Ident(name=v)])]), _accu()],
        ),
        result=_accu(),
    )


def _exprlist(kids: list[Any]) -> list[Any]:
    for k in kids:
        if isinstance(k, lark.Tree) and k.data == "exprlist":
            return list(k.children)
    return []


def build(tree: Any) -> Node:
    """cel-python parse tree -> cel-go shaped AST."""
    if not isinstance(tree, lark.Tree):
        raise CostUnsupported(f"unexpected parse element {tree!r}")
    kids = [c for c in tree.children if c is not None]
    d = str(tree.data)
    if d == "expr":
        if len(kids) == 1:
            return build(kids[0])
        return Call(fn="_?_:_", args=[build(k) for k in kids])
    if d in ("conditionalor", "conditionaland"):
        if len(kids) == 1:
            return build(kids[0])
        return Call(fn="_||_" if d == "conditionalor" else "_&&_", args=[build(kids[0]), build(kids[1])])
    if d in ("relation", "addition", "multiplication"):
        if len(kids) == 1:
            return build(kids[0])
        op, right = kids
        fn = _BINARY[str(op.data)]
        return Call(fn=fn, args=[build(op.children[0]), build(right)])
    if d == "unary":
        if len(kids) == 1:
            return build(kids[0])
        fn = "!_" if kids[0].data == "unary_not" else "-_"
        return Call(fn=fn, args=[build(kids[1])])
    if d in ("member", "primary", "paren_expr"):
        return build(kids[0])
    if d == "literal":
        token = kids[0]
        if not isinstance(token, lark.Token):
            raise CostUnsupported(f"literal {token!r}")
        return _literal(token)
    if d == "ident":
        return Ident(name=str(kids[0]))
    if d == "member_dot":
        return Select(operand=build(kids[0]), field_name=str(kids[1]))
    if d == "member_index":
        return Call(fn="_[_]", args=[build(kids[0]), build(kids[1])])
    if d == "list_lit":
        return ListE(elems=[build(k) for k in _exprlist(kids)])
    if d == "map_lit":
        entries: list[tuple[Node, Node]] = []
        if kids:
            inits = list(kids[0].children)
            entries = [(build(inits[i]), build(inits[i + 1])) for i in range(0, len(inits), 2)]
        return MapE(entries=entries)
    if d == "ident_arg":
        name = str(kids[0])
        raw = _exprlist(kids)
        if name == "has":
            inner = build(raw[0]) if len(raw) == 1 else None
            if not isinstance(inner, Select):
                raise CostUnsupported("invalid argument to has() macro")
            inner.test_only = True
            return inner
        return Call(fn=name, args=[build(a) for a in raw])
    if d == "member_dot_arg":
        name = str(kids[1])
        raw = _exprlist(kids)
        receiver = build(kids[0])
        if isinstance(receiver, Ident) and receiver.name in _NAMESPACES:
            return Call(fn=f"{receiver.name}.{name}", args=[build(a) for a in raw])
        if name in _MACROS:
            if len(raw) == 3 and name != "map":
                raise CostUnsupported(f"two-variable comprehension {name}(k, v, ...)")
            if len(raw) not in (2, 3):
                raise CostUnsupported(f"macro {name}() with {len(raw)} arguments")
            return _expand_macro(name, receiver, [build(a) for a in raw])
        return Call(fn=name, target=receiver, args=[build(a) for a in raw])
    raise CostUnsupported(f"CEL construct {d!r}")


# --------------------------------------------------------------------------------------------------
# Types (what cel-go's checker would infer, as far as costs depend on it)
# --------------------------------------------------------------------------------------------------

_DYN = DeclType("dyn")
_TYPE_NAMES = frozenset(
    {"int", "uint", "double", "string", "bytes", "bool", "list", "map", "null_type", "type"}
)
_BOOL = DeclType("bool")
_INT = DeclType("int")
_STRING = DeclType("string")

_STRING_RESULT = {
    "lowerAscii",
    "upperAscii",
    "trim",
    "replace",
    "substring",
    "charAt",
    "join",
    "find",
    "string",
    "getScheme",
    "getHost",
    "getHostname",
    "getPort",
    "getEscapedPath",
}
_BOOL_RESULT = {
    "matches",
    "startsWith",
    "endsWith",
    "contains",
    "isSorted",
    "isURL",
    "isIP",
    "isCIDR",
    "hasValue",
    "containsIP",
    "containsCIDR",
    "isUnspecified",
    "isLoopback",
    "isLinkLocalMulticast",
    "isLinkLocalUnicast",
    "isGlobalUnicast",
    "bool",
    "@not_strictly_false",
    "!_",
    "@in",
    "_==_",
    "_!=_",
    "_<_",
    "_<=_",
    "_>_",
    "_>=_",
    "_&&_",
    "_||_",
}
_INT_RESULT = {"size", "indexOf", "lastIndexOf", "int", "family", "prefixLength"}
# Functions the Kubernetes CRD environment has but whose cost this port does not model.
_UNSUPPORTED_FUNCTIONS = {
    "format",
    "quote",
    "reverse",
    "sets.contains",
    "sets.equivalent",
    "sets.intersects",
    "quantity",
    "isQuantity",
    "semver",
    "isSemver",
    "sign",
    "asInteger",
    "isInteger",
    "asApproximateFloat",
    "isGreaterThan",
    "isLessThan",
    "compareTo",
    "add",
    "sub",
    "ip.isCanonical",
    "lists.range",
    "flatten",
    "distinct",
    "slice",
    "sort",
    "sortBy",
    "transformList",
    "transformMap",
    "transformMapEntry",
    "cel.bind",
    "base64.encode",
    "base64.decode",
    "strings.quote",
    "math.greatest",
    "math.least",
}


def _result_type(call: Call, target: DeclType | None, args: list[DeclType]) -> DeclType:
    fn = call.fn
    if fn in _BOOL_RESULT:
        return _BOOL
    if fn in _INT_RESULT:
        return _INT
    if fn in _STRING_RESULT:
        return _STRING
    if fn in ("split", "findAll"):
        return DeclType("list", elem=_STRING)
    if fn == "_[_]":
        container = args[0]
        return container.elem or _DYN if container.kind in ("list", "map") else _DYN
    if fn == "_?_:_":
        a, b = args[1], args[2]
        return a if a.kind == b.kind else _DYN
    if fn in ("_+_", "_-_", "_*_", "_/_", "_%_"):
        a, b = args
        if a.kind == b.kind and a.kind != "dyn":
            if a.kind == "list":
                return DeclType("list", elem=a.elem or b.elem)
            return DeclType(a.kind)
        if {a.kind, b.kind} <= {"timestamp", "duration"}:
            return DeclType("timestamp" if "timestamp" in (a.kind, b.kind) and fn == "_+_" else "duration")
        return _DYN
    if fn == "-_":
        return DeclType(args[0].kind)
    if fn in ("sum", "min", "max", "value", "orValue") and target is not None:
        return target.elem or _DYN
    if fn in ("uint", "double", "bytes", "duration", "timestamp"):
        return DeclType(fn)
    if fn in ("dyn",):
        return args[0]
    if fn == "getQuery":
        return DeclType("map", key=_STRING, elem=DeclType("list", elem=_STRING))
    if fn in ("url", "ip", "cidr", "masked"):
        return DeclType(f"opaque:{fn}")
    if fn in ("optional.of", "optional.none", "optional.ofNonZeroValue"):
        return DeclType("optional", elem=args[0] if args else _DYN)
    if fn == "type":
        return DeclType("type")
    return _DYN


# --------------------------------------------------------------------------------------------------
# The estimator (cel-go checker/cost.go coster, with Kubernetes' library and size estimators)
# --------------------------------------------------------------------------------------------------


@dataclass
class _LocalVar:
    path: list[str]
    size: Est | None
    entry: tuple[str, Est, Est] | None
    type: DeclType


@dataclass
class _AstNode:
    """checker.AstNode: what function estimators see of an argument or a call target."""

    path: list[str]
    type: DeclType
    expr: Node | None
    computed_size: Est | None


class Coster:
    def __init__(self, root: DeclType, variables: dict[str, DeclType]) -> None:
        self.root = root
        self.variables = variables
        self.paths: dict[int, list[str]] = {}
        self.types: dict[int, DeclType] = {}
        self.sizes: dict[int, Est] = {}
        self.entry_sizes: dict[int, tuple[str, Est, Est]] = {}
        self.locals: dict[str, list[_LocalVar]] = {}

    # -- scopes -------------------------------------------------------------------------------------
    def _peek(self, name: str) -> _LocalVar | None:
        stack = self.locals.get(name)
        return stack[-1] if stack else None

    def _push(self, name: str, var: _LocalVar) -> None:
        self.locals.setdefault(name, []).append(var)

    def _pop(self, name: str) -> None:
        self.locals[name].pop()

    def get_path(self, e: Node) -> list[str]:
        if isinstance(e, Ident):
            v = self._peek(e.name)
            if v is not None:
                return list(v.path)
        return list(self.paths.get(e.id, []))

    def type_of(self, e: Node) -> DeclType:
        return self.types.get(e.id, _DYN)

    # -- sizes --------------------------------------------------------------------------------------
    def estimate_size(self, path: list[str]) -> Est | None:
        """compilation.go sizeEstimator.EstimateSize: walk the root DeclType along the path."""
        if not path:
            return None
        node = self.root
        for name in path[1:]:  # the first element is the variable: always start at the root
            if name in ("@items", "@values"):
                if node.elem is None:
                    return None
                node = node.elem
            elif name == "@keys":
                if node.key is None:
                    return None
                node = node.key
            else:
                f = node.fields.get(name)
                if f is None:
                    return None
                node = f
        return Est(0, node.max_elements)

    def compute_size(self, e: Node) -> Est | None:
        if e.id in self.sizes:
            return self.sizes[e.id]
        if isinstance(e, Lit):
            if e.kind in (
                "string",
                "bytes",
                "bool",
                "double",
                "duration",
                "int",
                "timestamp",
                "uint",
                "null",
            ):
                return fixed(e.size)
            return None
        if isinstance(e, ListE):
            return fixed(len(e.elems))
        if isinstance(e, MapE):
            return fixed(len(e.entries))
        size = self.estimate_size(self.get_path(e))
        if size is not None:
            self.sizes[e.id] = size
            return size
        t = self.type_of(e)
        if _is_scalar(t):
            return ONE
        if isinstance(e, Ident):
            v = self._peek(e.name)
            if v is not None and v.size is not None:
                return v.size
        return None

    def size_or_unknown(self, e: Node | _AstNode) -> Est:
        if isinstance(e, _AstNode):
            return e.computed_size if e.computed_size is not None else UNKNOWN
        s = self.compute_size(e)
        return s if s is not None else UNKNOWN

    def compute_entry_size(self, e: Node) -> tuple[str, Est, Est] | None:
        if e.id in self.entry_sizes:
            return self.entry_sizes[e.id]
        if isinstance(e, Ident):
            v = self._peek(e.name)
            if v is not None and v.entry is not None:
                return v.entry
        return None

    def ast_node(self, e: Node) -> _AstNode:
        path = self.get_path(e)
        if path and path[0] in (ACCUMULATOR, "@__result__"):
            path = []  # only paths to root variables, never to the accumulator
        return _AstNode(path, self.type_of(e), e, self.compute_size(e))

    def library_size(self, n: _AstNode) -> Est:
        """library/cost.go CostEstimator.sizeEstimate."""
        if n.computed_size is not None:
            return n.computed_size
        s = self.estimate_size(n.path)
        return s if s is not None else UNKNOWN

    # -- cost ---------------------------------------------------------------------------------------
    def cost(self, e: Node | None) -> Est:
        if e is None:
            return ZERO
        if isinstance(e, Lit):
            self.types[e.id] = DeclType(e.kind)
            return fixed(CONST_COST)
        if isinstance(e, Ident):
            return self.cost_ident(e)
        if isinstance(e, Select):
            return self.cost_select(e)
        if isinstance(e, Call):
            return self.cost_call(e)
        if isinstance(e, ListE):
            return self.cost_list(e)
        if isinstance(e, MapE):
            return self.cost_map(e)
        if isinstance(e, Comp):
            return self.cost_comprehension(e)
        raise CostUnsupported(f"expression {type(e).__name__}")

    def cost_ident(self, e: Ident) -> Est:
        v = self._peek(e.name)
        if v is not None:
            self.paths[e.id] = list(v.path)
            self.types[e.id] = v.type
        elif e.name in _TYPE_NAMES:
            self.paths[e.id] = [e.name]
            self.types[e.id] = DeclType("type")
        else:
            if e.name not in self.variables:
                raise CostUnsupported(f"reference to {e.name!r}")
            self.paths[e.id] = [e.name]
            self.types[e.id] = self.variables[e.name]
        return fixed(SELECT_AND_IDENT_COST)

    def cost_select(self, e: Select) -> Est:
        assert e.operand is not None
        if e.test_only:
            # PresenceTestHasCost(false) in the Kubernetes base environment: has() itself is free
            total = self.cost(e.operand)
            self.types[e.id] = _BOOL
            return total
        total = self.cost(e.operand)
        target = self.type_of(e.operand)
        if target.kind in ("map", "object"):
            total = total.add(fixed(SELECT_AND_IDENT_COST))
        if target.kind == "object":
            self.types[e.id] = target.fields.get(e.field_name, _DYN)
        elif target.kind == "map":
            self.types[e.id] = target.elem or _DYN
        else:
            self.types[e.id] = _DYN
        self.paths[e.id] = [*self.get_path(e.operand), e.field_name]
        return total

    def cost_call(self, e: Call) -> Est:
        if e.fn in _UNSUPPORTED_FUNCTIONS:
            raise CostUnsupported(f"function {e.fn}()")
        if e.fn == "dyn" and e.target is None and len(e.args) == 1:
            arg_cost = self.cost(e.args[0])
            self.types[e.id] = _DYN
            size = self.compute_size(e.args[0])
            if size is not None:
                self.sizes[e.id] = size
            entry = self.compute_entry_size(e.args[0])
            if entry is not None:
                self.entry_sizes[e.id] = entry
            return ONE.add(arg_cost)
        arg_costs = [self.cost(a) for a in e.args]
        arg_nodes = [self.ast_node(a) for a in e.args]
        total = ZERO
        target_node: _AstNode | None = None
        if e.target is not None:
            total = total.add(self.cost(e.target))
            target_node = self.ast_node(e.target)
        target_type = self.type_of(e.target) if e.target is not None else None
        self.types[e.id] = _result_type(e, target_type, [self.type_of(a) for a in e.args])
        fn_cost = Est(MAX_UINT64, 0)
        result_size: Est | None = None
        for overload in self.overloads(e, target_type):
            est, size = self.function_cost(e, overload, target_node, arg_nodes, arg_costs)
            fn_cost = fn_cost.union(est)
            if size is not None:
                result_size = size if result_size is None else result_size.union(size)
            if overload in ("index_list", "index_map") and e.args:
                entry = self.compute_entry_size(e.args[0])
                result_size = entry[2] if entry is not None else None
                suffix = "@items" if overload == "index_list" else "@values"
                self.paths[e.id] = [*self.get_path(e.args[0]), suffix]
            if result_size is None:
                result_size = self.compute_size(e)
        if result_size is not None:
            self.sizes[e.id] = result_size
        return total.add(fn_cost)

    def overloads(self, e: Call, target: DeclType | None) -> list[str]:
        """The overload ids cel-go's checker would record (several when an argument is dyn)."""
        kinds = [self.type_of(a).kind for a in e.args]
        fn = e.fn

        def by_kind(k: str, mapping: dict[str, str], default: str) -> list[str]:
            if k == "dyn":
                return sorted(set(mapping.values()) | {default})
            return [mapping.get(k, default)]

        if fn in ("_<_", "_<=_", "_>_", "_>=_"):
            k = kinds[0] if kinds[0] != "dyn" else kinds[1]
            return by_kind(k, {"string": "less_string", "bytes": "less_bytes"}, "less_other")
        if fn in ("_==_", "_!=_"):
            return ["equals"]
        if fn == "_+_":
            k = kinds[0] if kinds[0] != "dyn" else kinds[1]
            return by_kind(k, {"string": "add_string", "bytes": "add_bytes", "list": "add_list"}, "add_other")
        if fn == "@in":
            return by_kind(kinds[1], {"list": "in_list", "map": "in_map"}, "in_other")
        if fn == "_[_]":
            return by_kind(kinds[0], {"list": "index_list", "map": "index_map"}, "index_other")
        if fn == "_&&_":
            return ["logical_and"]
        if fn == "_||_":
            return ["logical_or"]
        if fn == "_?_:_":
            return ["conditional"]
        if fn == "matches":
            return ["matches_string"]
        if fn in ("contains", "startsWith", "endsWith") and e.target is not None:
            if target is not None and target.kind not in ("string", "dyn"):
                return [fn]
            return [f"{fn}_string"]
        if fn == "bytes" and kinds and kinds[0] == "string":
            return ["string_to_bytes"]
        if fn == "string" and kinds and kinds[0] == "bytes":
            return ["bytes_to_string"]
        return [fn]

    def function_cost(
        self,
        e: Call,
        overload: str,
        target: _AstNode | None,
        args: list[_AstNode],
        arg_costs: list[Est],
    ) -> tuple[Est, Est | None]:
        arg_sum = ZERO
        for c in arg_costs:
            arg_sum = arg_sum.add(c)
        lib = self.library_call_cost(e.fn, overload, target, args)
        if lib is not None:
            return lib[0].add(arg_sum), lib[1]
        if overload in ("string_to_bytes", "bytes_to_string") and len(args) == 1:
            sz = self.size_or_unknown(args[0])
            result = Est(sz.min, sz.max * 4) if overload == "string_to_bytes" else Est(sz.min // 4, sz.max)
            return sz.factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum), result
        if overload in ("startsWith_string", "endsWith_string") and len(args) == 1:
            return self.size_or_unknown(args[0]).factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum), None
        if overload == "in_list" and len(args) == 2:
            return self.size_or_unknown(args[1]).factor(1).add(arg_sum), None
        if overload == "matches_string":
            # both the member form s.matches(re) and the global matches(s, re)
            if target is not None and len(args) == 1:
                string, regex = target, args[0]
            elif target is None and len(args) == 2:
                string, regex = args[0], args[1]
            else:
                return ONE.add(arg_sum), None
            str_cost = self.size_or_unknown(string).add(ONE).factor(STRING_TRAVERSAL_COST_FACTOR)
            regex_cost = self.size_or_unknown(regex).factor(REGEX_STRING_LENGTH_COST_FACTOR)
            return str_cost.multiply(regex_cost).add(arg_sum), None
        if overload == "contains_string" and target is not None and len(args) == 1:
            str_cost = self.size_or_unknown(target).factor(STRING_TRAVERSAL_COST_FACTOR)
            sub_cost = self.size_or_unknown(args[0]).factor(STRING_TRAVERSAL_COST_FACTOR)
            return str_cost.multiply(sub_cost).add(arg_sum), None
        if overload in ("logical_and", "logical_or"):
            lhs, rhs = arg_costs[0], arg_costs[1]
            return Est(lhs.min, lhs.add(rhs).max), None
        if overload == "conditional":
            size = self.size_or_unknown(args[1]).union(self.size_or_unknown(args[2]))
            a = self.compute_entry_size(e.args[1])
            b = self.compute_entry_size(e.args[2])
            if a is not None and b is not None:
                self.entry_sizes[e.id] = (a[0], a[1].union(b[1]), a[2].union(b[2]))
            cond, if_true, if_false = arg_costs
            return cond.add(if_true.union(if_false)), size
        if overload in ("add_string", "add_bytes", "add_list") and len(args) == 2:
            lhs_size = self.size_or_unknown(args[0])
            rhs_size = self.size_or_unknown(args[1])
            result_size = lhs_size.add(rhs_size)
            a = self.compute_entry_size(e.args[0])
            b = self.compute_entry_size(e.args[1])
            if a is not None and b is not None:
                self.entry_sizes[e.id] = (a[0], a[1].union(b[1]), a[2].union(b[2]))
            if overload == "add_list":
                return ONE.add(arg_sum), result_size  # O(1), tracked for the size
            return result_size.factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum), result_size
        if overload in ("less_string", "less_bytes", "equals"):
            lhs = self.size_or_unknown(args[0])
            rhs = self.size_or_unknown(args[1])
            smallest_max = min(lhs.max, rhs.max)
            lo = 1 if smallest_max > 0 else 0
            return Est(lo, smallest_max).factor(STRING_TRAVERSAL_COST_FACTOR).add(arg_sum), None
        # O(1) functions
        return ONE.add(arg_sum), None

    def _list_element(self, n: _AstNode) -> _AstNode | None:
        """library/cost.go listElementNode."""
        if n.type.kind == "list":
            elem = n.type.elem or _DYN
            path = [*n.path, "@items"] if n.path else []
            return _AstNode(path, elem, None, None)
        return None

    def library_call_cost(
        self, fn: str, overload: str, target: _AstNode | None, args: list[_AstNode]
    ) -> tuple[Est, Est | None] | None:
        """library/cost.go CostEstimator.EstimateCallCost (the Kubernetes CEL libraries)."""
        f = STRING_TRAVERSAL_COST_FACTOR
        if fn in ("isSorted", "sum", "max", "min", "indexOf", "lastIndexOf"):
            if target is not None:
                el = self._list_element(target)
                if el is not None:
                    el_cost = ONE
                    if el.type.kind in ("string", "bytes"):
                        el_cost = el_cost.add(self.library_size(el).factor(f))
                    return self.library_size(target).multiply(el_cost), None
                return self.library_size(target).factor(f), None
            return None
        if fn == "url":
            if len(args) == 1:
                return self.library_size(args[0]).factor(f), None
            return None
        if fn in ("lowerAscii", "upperAscii", "substring", "trim"):
            if target is not None:
                sz = self.library_size(target)
                return sz.factor(f), sz
            return None
        if fn == "replace":
            if target is not None and len(args) >= 2:
                return self._replace_cost(target, args)
            return None
        if fn == "split":
            if target is not None:
                sz = self.library_size(target)
                mx = sz.max
                if len(args) > 1 and isinstance(args[1].expr, Lit) and args[1].expr.kind in ("int", "uint"):
                    mx = int(str(args[1].expr.value).rstrip("uU"))  # ConvertToType(UintType)
                return sz.factor(2 * f), Est(0, mx)
            return None
        if fn == "join":
            if target is not None:
                sz = ZERO
                list_size = self.library_size(target)
                el = self._list_element(target)
                if el is not None:
                    sz = list_size.multiply(self.library_size(el))
                if args:
                    sep = self.library_size(args[0])
                    lo = list_size.min - 1 if list_size.min > 0 else 0
                    hi = list_size.max - 1 if list_size.max > 0 else 0
                    sz = sz.add(sep.multiply(Est(lo, hi)))
                return sz.factor(f), sz
            return None
        if fn in ("find", "findAll"):
            if target is not None and args:
                sz = self.library_size(target)
                str_cost = sz.add(ONE).factor(f)
                regex_cost = self.library_size(args[0]).factor(REGEX_STRING_LENGTH_COST_FACTOR)
                return str_cost.multiply(regex_cost), Est(0, sz.max)
            return None
        if fn in ("cidr", "isIP", "isCIDR"):
            if target is not None:
                return self.library_size(args[0]).factor(f), None
            return None  # the global form has no target: cel-go's default O(1) cost applies
        if fn == "ip":
            if target is not None and args:
                if overload == "cidr_ip":
                    return ONE, None
                return self.library_size(args[0]).factor(f), None
            if target is not None:
                return ONE, None
            return None
        if fn in (
            "masked",
            "prefixLength",
            "family",
            "isUnspecified",
            "isLoopback",
            "isLinkLocalMulticast",
            "isLinkLocalUnicast",
        ):
            return ONE, None
        if fn in ("containsIP", "containsCIDR"):
            if target is not None and args:
                sz = Est(4, 16)
                cost = sz.add(sz).factor(f)
                if fn == "containsCIDR":
                    cost = cost.add(sz.factor(f)).add(ONE)
                if args[0].type.kind == "string":  # the *_string overloads parse the argument first
                    cost = cost.add(self.library_size(args[0]).factor(f))
                return cost, None
            return None
        return None

    def _replace_cost(self, target: _AstNode, args: list[_AstNode]) -> tuple[Est, Est | None]:
        sz = self.library_size(target)
        to_replace = self.library_size(args[0])
        replace_with = self.library_size(args[1])
        count_max = count_min = retained_max = retained_min = 0
        if to_replace.min == 0:
            count_max = sz.max + 1 if sz.max < MAX_UINT64 else sz.max
            retained_max = sz.max
        elif replace_with.max <= to_replace.min:
            count_max = 0
            retained_max = sz.max
        else:
            count_max = math.ceil(sz.max / to_replace.min)
        if to_replace.max == 0:
            count_min = sz.min + 1 if sz.min < MAX_UINT64 else sz.min
            retained_min = sz.min
        elif to_replace.max <= replace_with.min:
            count_min = 0
            retained_min = sz.min
        else:
            count_min = math.ceil(sz.min / to_replace.max)
        size = Est(count_min, count_max).multiply(replace_with).add(Est(retained_min, retained_max))
        return sz.factor(2 * STRING_TRAVERSAL_COST_FACTOR), size

    def cost_list(self, e: ListE) -> Est:
        total = ZERO
        item = Est(MAX_UINT64, 0) if e.elems else ZERO
        elem_types: list[DeclType] = []
        for el in e.elems:
            total = total.add(self.cost(el))
            item = item.union(self.size_or_unknown(el))
            elem_types.append(self.type_of(el))
        elem = elem_types[0] if elem_types and all(t.kind == elem_types[0].kind for t in elem_types) else _DYN
        self.types[e.id] = DeclType("list", elem=elem)
        self.entry_sizes[e.id] = ("list", ONE, item)
        return total.add(fixed(LIST_CREATE_BASE_COST))

    def cost_map(self, e: MapE) -> Est:
        total = ZERO
        key = Est(MAX_UINT64, 0) if e.entries else ZERO
        val = Est(MAX_UINT64, 0) if e.entries else ZERO
        for k, v in e.entries:
            total = total.add(self.cost(k)).add(self.cost(v))
            key = key.union(self.size_or_unknown(k))
            val = val.union(self.size_or_unknown(v))
        self.types[e.id] = DeclType("map", key=_DYN, elem=_DYN)
        self.entry_sizes[e.id] = ("map", key, val)
        return total.add(fixed(MAP_CREATE_BASE_COST))

    def cost_comprehension(self, e: Comp) -> Est:
        assert e.iter_range is not None and e.accu_init is not None
        total = self.cost(e.iter_range).add(self.cost(e.accu_init))
        accu_type = self.type_of(e.accu_init)
        self._push(
            e.accu_var,
            _LocalVar(
                self.get_path(e.accu_init),
                self.compute_size(e.accu_init),
                self.compute_entry_size(e.accu_init),
                accu_type,
            ),
        )
        # pushIterSingle: list items (or map keys) of the range
        range_type = self.type_of(e.iter_range)
        entry = self.compute_entry_size(e.iter_range)
        container = entry[0] if entry is not None else range_type.kind
        if container == "list":
            size = entry[2] if entry is not None else None
            subpath = "@items"
            var_type = range_type.elem or _DYN if range_type.kind == "list" else _DYN
        else:
            size = entry[1] if entry is not None else None
            subpath = "@keys"
            var_type = range_type.key or _DYN if range_type.kind == "map" else _DYN
        self._push(e.iter_var, _LocalVar([*self.get_path(e.iter_range), subpath], size, None, var_type))
        loop_cost = self.cost(e.loop_cond)
        step_cost = self.cost(e.loop_step)
        self._pop(e.iter_var)
        total = total.add(self.cost(e.result))
        self._pop(e.accu_var)
        range_cnt = self.size_or_unknown(e.iter_range)
        total = total.add(range_cnt.multiply(step_cost.add(loop_cost)))
        assert e.result is not None
        self.types[e.id] = self.type_of(e.result) if not isinstance(e.accu_init, ListE) else accu_type
        if isinstance(e.accu_init, Lit):
            s = self.compute_size(e.accu_init)
            if s is not None:
                self.sizes[e.id] = s
        elif isinstance(e.accu_init, (ListE, MapE)):
            self.sizes[e.id] = range_cnt
            step_entry = self.compute_entry_size(e.loop_step) if e.loop_step is not None else None
            if step_entry is not None:
                self.entry_sizes[e.id] = step_entry
        return total


def _is_scalar(t: DeclType) -> bool:
    if t.kind in ("bool", "double", "duration", "int", "timestamp", "uint"):
        return True
    return t.kind == "optional" and t.elem is not None and _is_scalar(t.elem)


def estimate(tree: Any, self_type: DeclType, old_self: str | None) -> Est:
    """Estimated cost of a compiled rule: ``old_self`` is None, "plain" or "optional"."""
    variables = {"self": self_type}
    if old_self == "plain":
        variables["oldSelf"] = self_type
    elif old_self == "optional":
        variables["oldSelf"] = DeclType("optional", elem=self_type)
    return Coster(self_type, variables).cost(build(tree))


def walk(node: Node) -> Iterator[Node]:
    """Every node of an AST (handy for tests)."""
    yield node
    for child in vars(node).values():
        if isinstance(child, Node):
            yield from walk(child)
        elif isinstance(child, list):
            for c in child:
                if isinstance(c, Node):
                    yield from walk(c)
                elif isinstance(c, tuple):
                    for x in c:
                        yield from walk(x)
