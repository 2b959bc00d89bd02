"""The CEL checker evaluates x-kubernetes-validations like the API server does at `kubectl apply`."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cloudtriggers.apiserver.cel import compile_all, escape_name, violations
from cloudtriggers.apiserver.crd_validation import validate_crd

Obj = dict[str, Any]


def _prop(typ: str, description: str = "A field.", /, **extra: Any) -> Obj:
    return {"type": typ, "description": description, **extra}


def _crd(schema: Obj, *, status_subresource: bool = False) -> Obj:
    version: Obj = {
        "name": "v1alpha1",
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
    }
    if status_subresource:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [version],
        },
    }


UNION = "exactly one of a or b must be set"
IMMUTABLE = "region is immutable"
NAME_FORMAT = "name must be a lowercase DNS label"
WEBHOOK_URL = "mode webhook needs a url"
REPLICAS = "replicas must be positive"

SPEC_SCHEMA: Obj = _prop(
    "object",
    "Desired state.",
    required=["name"],
    properties={
        "a": _prop("object", "Variant a.", properties={"x": _prop("string")}),
        "b": _prop("object", "Variant b.", properties={"y": _prop("integer")}),
        "name": _prop(
            "string",
            **{
                "x-kubernetes-validations": [
                    {"rule": "self.matches('^[a-z]([a-z0-9-]*[a-z0-9])?$')", "message": NAME_FORMAT},
                ]
            },
        ),
        "region": _prop(
            "string",
            **{
                "x-kubernetes-validations": [
                    {"rule": "self == oldSelf", "message": IMMUTABLE},
                ]
            },
        ),
        "mode": _prop("string", enum=["poll", "webhook"]),
        "url": _prop("string"),
        "replicas": _prop("integer"),
        "tier": _prop("string", default="standard"),
        "ports": _prop(
            "array",
            items={
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": _prop("string"),
                    "number": _prop(
                        "integer",
                        **{
                            "x-kubernetes-validations": [
                                {"rule": "self == oldSelf", "message": "a port number is immutable"},
                            ]
                        },
                    ),
                },
            },
            **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
        "foo-bar": _prop("string"),
    },
    **{
        "x-kubernetes-validations": [
            {"rule": "has(self.a) != has(self.b)", "message": UNION},
            {"rule": "!has(self.mode) || self.mode != 'webhook' || has(self.url)", "message": WEBHOOK_URL},
            {"rule": "self.replicas > 0", "message": REPLICAS},
        ]
    },
)

SCHEMA: Obj = {
    "type": "object",
    "description": "A Widget.",
    "properties": {
        "apiVersion": _prop("string", "API version."),
        "kind": _prop("string", "Kind."),
        "metadata": {"type": "object"},
        "spec": SPEC_SCHEMA,
        "status": _prop("object", "Observed state.", properties={"phase": _prop("string")}),
    },
}
CRD = _crd(SCHEMA, status_subresource=True)


def widget(**spec: Any) -> Obj:
    """A valid Widget; keyword arguments override (or, with None, delete) spec fields."""
    obj: Obj = {
        "apiVersion": "example.com/v1alpha1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default"},
        "spec": {"a": {"x": "1"}, "name": "web-1", "region": "eu", "replicas": 1},
    }
    for key, value in spec.items():
        if value is None:
            obj["spec"].pop(key, None)
        else:
            obj["spec"][key] = value
    return obj


# -- the synthetic CRD itself -----------------------------------------------------------------------


def test_synthetic_crd_compiles_and_is_structural() -> None:
    assert compile_all(CRD) == []
    assert [str(e) for e in validate_crd(CRD)] == []


def test_valid_widget_has_no_violations_on_create_and_update() -> None:
    assert violations(CRD, widget()) == []
    assert violations(CRD, widget(replicas=3), old=widget()) == []


# -- union rule at object level ---------------------------------------------------------------------


@pytest.mark.parametrize("spec", [{"a": {"x": "1"}, "b": None}, {"a": None, "b": {"y": 2}}])
def test_union_accepts_exactly_one(spec: Obj) -> None:
    assert violations(CRD, widget(**spec)) == []


@pytest.mark.parametrize("spec", [{"a": {}, "b": {}}, {"a": None, "b": None}])
def test_union_rejects_both_or_neither(spec: Obj) -> None:
    assert violations(CRD, widget(**spec)) == [f"spec: {UNION}"]


# -- transition rule (immutability) -----------------------------------------------------------------


def test_transition_rule_is_not_evaluated_on_create() -> None:
    assert violations(CRD, widget(region="anything")) == []


def test_transition_rule_passes_when_unchanged_and_fails_when_changed() -> None:
    assert violations(CRD, widget(replicas=2), old=widget(region="eu")) == []
    assert violations(CRD, widget(region="us"), old=widget(region="eu")) == [f"spec.region: {IMMUTABLE}"]


def test_transition_rule_is_skipped_when_old_has_no_value() -> None:
    assert violations(CRD, widget(region="us"), old=widget(region=None)) == []


def test_transition_rule_needs_an_old_value_at_the_same_path() -> None:
    # `self == oldSelf` passes trivially if evaluated against itself; a strict rule shows it is skipped
    crd = _spec_crd([{"rule": "self.n > oldSelf.n", "message": "n must grow"}])
    assert violations(crd, {"spec": {"n": 1}}) == []
    assert violations(crd, {"spec": {"n": 1}}, old={}) == []
    assert violations(crd, {"spec": {"n": 2}}, old={"spec": {"n": 1}}) == []
    assert violations(crd, {"spec": {"n": 1}}, old={"spec": {"n": 1}}) == ["spec: n must grow"]


def test_list_map_items_are_correlated_by_key_not_index() -> None:
    old = widget(ports=[{"name": "http", "number": 80}, {"name": "https", "number": 443}])
    reordered = widget(ports=[{"name": "https", "number": 443}, {"name": "http", "number": 80}])
    assert violations(CRD, reordered, old=old) == []
    changed = widget(ports=[{"name": "https", "number": 8443}, {"name": "new", "number": 1}])
    assert violations(CRD, changed, old=old) == ["spec.ports[0].number: a port number is immutable"]


# -- matches() --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["web", "web-1", "a"])
def test_matches_accepts(name: str) -> None:
    assert violations(CRD, widget(name=name)) == []


@pytest.mark.parametrize("name", ["Web", "web-", "1web", "web_1"])
def test_matches_rejects(name: str) -> None:
    assert violations(CRD, widget(name=name)) == [f"spec.name: {NAME_FORMAT}"]


def test_regex_features_re2_refuses_are_errors_not_silent_passes() -> None:
    crd = _spec_crd([{"rule": "self.s.matches('^(?!admin)')", "message": "no admin"}])
    assert compile_all(crd) == [
        "v1alpha1 spec: rule \"self.s.matches('^(?!admin)')\": matches(): "
        "invalid regex '^(?!admin)': invalid perl operator: (?!"
    ]
    (problem,) = violations(crd, {"spec": {"s": "user"}})
    assert problem.startswith("spec: invalid regex '^(?!admin)'") and problem.endswith(
        "evaluating rule: no admin"
    )
    backref = _spec_crd([{"rule": "self.s.matches('(a)\\\\1')"}])
    assert "invalid escape sequence" in compile_all(backref)[0]


# -- has()-guarded cross-field rule -----------------------------------------------------------------


@pytest.mark.parametrize("spec", [{"mode": "webhook", "url": "https://x"}, {"mode": "poll"}, {"mode": None}])
def test_guarded_cross_field_rule_accepts(spec: Obj) -> None:
    assert violations(CRD, widget(**spec)) == []


def test_guarded_cross_field_rule_rejects() -> None:
    assert violations(CRD, widget(mode="webhook")) == [f"spec: {WEBHOOK_URL}"]


# -- unguarded access to an absent field ------------------------------------------------------------


def test_unguarded_rule_fails_on_value_and_errors_on_absent_field() -> None:
    assert violations(CRD, widget(replicas=0)) == [f"spec: {REPLICAS}"]
    assert violations(CRD, widget(replicas=None)) == [
        f"spec: no such key: replicas evaluating rule: {REPLICAS}"
    ]


# -- what the API server does around CEL ------------------------------------------------------------


def test_defaults_are_applied_before_rules_run() -> None:
    crd = _crd(
        {
            **SCHEMA,
            "x-kubernetes-validations": [
                {"rule": "self.spec.tier == 'standard'", "message": "tier must default to standard"},
            ],
        }
    )
    assert violations(crd, widget()) == []
    assert violations(crd, widget(tier="gold")) == ["<root>: tier must default to standard"]


def test_unknown_fields_openapi_errors_and_type_errors_blocking_cel() -> None:
    assert violations(CRD, widget(colour="red")) == ["spec.colour: unknown field"]
    assert violations(CRD, widget(colour="red"), strict=False) == []
    assert violations(CRD, widget(mode="push", name=None)) == [
        "spec.name: Required value",
        'spec.mode: Unsupported value: "push": supported values: "poll", "webhook"',
    ]
    # a type error stops CEL evaluation (replicas is not even looked at), as in Kubernetes
    assert violations(CRD, widget(replicas="many", b={})) == [
        'spec.replicas: Invalid value: "many": spec.replicas in body must be of type integer'
    ]


def test_status_is_ignored_with_a_status_subresource() -> None:
    obj = widget()
    obj["status"] = {"phase": 3, "bogus": True}
    assert violations(CRD, obj) == []
    assert violations(_crd(SCHEMA), obj) == [
        "status.bogus: unknown field",
        "status.phase: Invalid value: 3: status.phase in body must be of type string",
    ]


def test_ratcheting_skips_unchanged_values_but_not_transition_rules() -> None:
    invalid = widget(name="Bad")
    assert violations(CRD, invalid, old=copy.deepcopy(invalid)) == []
    assert violations(CRD, invalid, old=copy.deepcopy(invalid), ratcheting=False) == [
        f"spec.name: {NAME_FORMAT}"
    ]
    assert violations(CRD, widget(name="Bad2"), old=invalid) == [f"spec.name: {NAME_FORMAT}"]


def test_property_names_are_escaped_like_kubernetes() -> None:
    assert escape_name("foo-bar") == "foo__dash__bar"
    assert escape_name("namespace") == "__namespace__"
    assert escape_name("a.b/c__d") == "a__dot__b__slash__c__underscores__d"
    assert escape_name("1st") is None
    crd = _crd(
        {
            **SCHEMA,
            "properties": {
                **SCHEMA["properties"],
                "spec": {
                    **SPEC_SCHEMA,
                    "x-kubernetes-validations": [
                        {"rule": "!has(self.foo__dash__bar) || self.foo__dash__bar == 'ok'"}
                    ],
                },
            },
        }
    )
    assert compile_all(crd) == []
    assert violations(crd, widget(**{"foo-bar": "ok"})) == []
    assert violations(crd, widget(**{"foo-bar": "no"})) == [
        "spec: failed rule: !has(self.foo__dash__bar) || self.foo__dash__bar == 'ok'"
    ]


# -- rule options -----------------------------------------------------------------------------------

LIB_SCHEMA: Obj = _prop(
    "object",
    properties={
        "s": _prop("string"),
        "n": _prop("integer"),
        "l": _prop("array", items={"type": "integer"}),
        "tags": _prop("array", items={"type": "string"}, **{"x-kubernetes-list-type": "set"}),
        "m": _prop("object", additionalProperties={"type": "string"}),
        "u": _prop("string"),
        "ip": _prop("string"),
        "d": _prop("string", format="duration"),
        "t": _prop("string", format="date-time"),
    },
)


def _spec_crd(rules: list[Obj]) -> Obj:
    spec = {**LIB_SCHEMA, "x-kubernetes-validations": rules}
    return _crd({"type": "object", "description": "Root.", "properties": {"spec": spec}})


def test_message_expression_and_field_path() -> None:
    crd = _spec_crd(
        [
            {
                "rule": "self.n < 10",
                "messageExpression": "'n is ' + string(self.n) + ', max 9'",
                "fieldPath": ".n",
            },
            {"rule": "self.n > 0", "message": "static", "messageExpression": "self.missing + 'x'"},
        ]
    )
    assert violations(crd, {"spec": {"n": 5}}) == []
    assert violations(crd, {"spec": {"n": 12}}) == ["spec.n: n is 12, max 9"]
    # a messageExpression that errors falls back to message
    assert violations(crd, {"spec": {"n": 0}}) == ["spec: static"]


def test_optional_old_self_runs_on_create_too() -> None:
    crd = _spec_crd(
        [
            {
                "rule": "oldSelf.hasValue() ? self.n >= oldSelf.value().n : self.n == 1",
                "optionalOldSelf": True,
                "message": "n starts at 1 and never decreases",
            }
        ]
    )
    assert compile_all(crd) == []
    assert violations(crd, {"spec": {"n": 1}}) == []
    assert violations(crd, {"spec": {"n": 2}}) == ["spec: n starts at 1 and never decreases"]
    assert violations(crd, {"spec": {"n": 5}}, old={"spec": {"n": 4}}) == []
    assert violations(crd, {"spec": {"n": 3}}, old={"spec": {"n": 4}}) == [
        "spec: n starts at 1 and never decreases"
    ]


# -- Kubernetes CEL library functions ---------------------------------------------------------------

LIB_OBJ: Obj = {
    "spec": {
        "s": " Hello-World ",
        "n": 7,
        "l": [3, 1, 2],
        "tags": ["b", "a"],
        "m": {"k": "v"},
        "u": "https://example.com:8443/a%20b?x=1&x=2",
        "ip": "10.0.0.1",
        "d": "90m",
        "t": "2024-05-01T10:00:00Z",
    }
}

TRUE_EXPRESSIONS = [
    "self.s.trim() == 'Hello-World'",
    "self.s.lowerAscii() == ' hello-world ' && self.s.upperAscii() == ' HELLO-WORLD '",
    "self.s.trim().split('-') == ['Hello', 'World'] && 'a,b,c'.split(',', 2) == ['a', 'b,c']",
    "self.s.indexOf('o') == 5 && self.s.lastIndexOf('o') == 8 && self.s.indexOf('zz') == -1",
    "self.s.startsWith(' He') && self.s.endsWith('d ') && self.s.contains('-')",
    "self.s.trim().substring(6) == 'World' && self.s.charAt(1) == 'H' && 'abc'.replace('b', 'B') == 'aBc'",
    "['a', 'b'].join('+') == 'a+b' && ['a'].join() == 'a'",
    "self.s.find('[A-Z][a-z]+') == 'Hello' && size(self.s.findAll('o')) == 2 && self.s.find('x') == ''",
    "size(self.s) == 13 && self.s.size() == 13 && self.l.size() == 3 && size(self.m) == 1",
    "self.l.exists(x, x == 2) && self.l.all(x, x > 0) && self.l.exists_one(x, x > 2)",
    "self.l.filter(x, x > 1) == [3, 2] && self.l.map(x, x * 2) == [6, 2, 4]",
    "self.l.map(x, x > 1, -x) == [-3, -2] && self.m.all(k, self.m[k] == 'v')",
    "2 in self.l && 'k' in self.m && self.m.k == 'v' && self.m['k'] == 'v' && !('z' in self.m)",
    "self.n > 5 ? self.n % 4 == 3 : false",
    "self.n / 2 == 3 && self.n - 10 == -3 && self.n * self.n == 49",
    "'abc' < 'abd' && self.s > ' A'",
    "self.tags == ['a', 'b']",  # listType=set compares without order
    "sets.contains(['a', 'b', 'c'], self.tags) && sets.equivalent(self.tags, ['a', 'b'])",
    "self.l.isSorted() == false && [1, 2].isSorted()",
    "self.l.sum() == 6 && self.l.min() == 1 && self.l.max() == 3",
    "self.l.indexOf(1) == 1",
    "isURL(self.u) && !isURL('not a url') && url(self.u).getScheme() == 'https'",
    "url(self.u).getHost() == 'example.com:8443' && url(self.u).getHostname() == 'example.com'",
    "url(self.u).getPort() == '8443' && url(self.u).getEscapedPath() == '/a%20b'",
    "url(self.u).getQuery()['x'] == ['1', '2']",
    "isIP(self.ip) && ip(self.ip).family() == 4 && !isIP('10.0.0.256') && ip('::1').isLoopback()",
    "cidr('10.0.0.0/8').containsIP(self.ip) && cidr('10.0.0.0/8').containsCIDR('10.1.0.0/16')",
    "self.d > duration('1h') && self.t < timestamp('2025-01-01T00:00:00Z')",
    "int('3') == 3 && string(self.n) == '7' && type(self.n) == int && dyn(self.n) == 7",
]


@pytest.mark.parametrize("expression", TRUE_EXPRESSIONS)
def test_library_function_evaluates_true_and_its_negation_fails(expression: str) -> None:
    crd = _spec_crd([{"rule": expression}])
    assert compile_all(crd) == []
    assert violations(crd, LIB_OBJ) == []
    negated = _spec_crd([{"rule": f"!({expression})", "message": "negation failed"}])
    assert violations(negated, LIB_OBJ) == ["spec: negation failed"]


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("self.l[5] == 1", "index out of bounds"),
        ("self.n / (self.n - 7) == 1", "modulus or divide by zero"),
        ("self.n + 9223372036854775807 > 0", "integer overflow"),
        ("self.m.nope == 'v'", "no such key: nope"),
        ("self.s.charAt(99) == 'x'", "index out of range: 99"),
        (
            "url('relative/path').getHost() == ''",
            "URL parse error during conversion from string: relative/path",
        ),
    ],
)
def test_runtime_errors_are_violations(expression: str, error: str) -> None:
    assert violations(_spec_crd([{"rule": expression}]), LIB_OBJ) == [
        f"spec: {error} evaluating rule: {expression}"
    ]


# -- compile_all ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("self.nme == 'x'", "undefined field 'nme'"),
        ("has(self.nme)", "undefined field 'nme'"),
        ("self.l.all(x, x.foo == 1)", "type 'int' does not support field selection (.foo)"),
        ("self.s", "rule must evaluate to a bool, not string"),
        ("self.n == 'x'", "found no matching overload for '_==_' applied to '(int, string)'"),
        ("self.s.lowerCase() == 'x'", "undeclared reference to 'lowerCase'"),
        ("self.n.startsWith('x')", "found no matching overload for 'startsWith' applied to 'int.(1 args)'"),
        ("other == 1", "undeclared reference to 'other'"),
        ("has(self)", "invalid argument to has() macro"),
        ("self.s ==", "syntax error"),
        ("self.?s == 'x'", "optional syntax .?/[?] is not supported by cel-python"),
        ("quantity(self.s).isInteger()", "quantity() is not supported by celcheck"),
    ],
)
def test_compile_all_reports_bad_rules(rule: str, problem: str) -> None:
    (reported, *_) = compile_all(_spec_crd([{"rule": rule}]))
    assert reported.startswith(f"v1alpha1 spec: rule {rule!r}: ") and problem in reported


def test_compile_all_reports_old_self_on_uncorrelatable_items_and_rule_metadata() -> None:
    schema = copy.deepcopy(LIB_SCHEMA)
    schema["properties"]["l"]["items"]["x-kubernetes-validations"] = [{"rule": "self >= oldSelf"}]
    schema["x-kubernetes-validations"] = [
        {"rule": "self.n > 0", "optionalOldSelf": True, "message": "two\nlines", "reason": "Nope"},
        {"rule": "self.n > 0", "fieldPath": ".nope"},
        {"rule": "self.n > 0", "messageExpression": "self.n"},
    ]
    crd = _crd({"type": "object", "description": "Root.", "properties": {"spec": schema}})
    assert compile_all(crd) == [
        "v1alpha1 spec: rule 'self.n > 0': optionalOldSelf may only be set on rules that use oldSelf",
        "v1alpha1 spec: rule 'self.n > 0': message must not contain line breaks",
        "v1alpha1 spec: rule 'self.n > 0': unsupported reason 'Nope'",
        "v1alpha1 spec: rule 'self.n > 0': fieldPath '.nope' does not exist in the schema",
        "v1alpha1 spec: messageExpression 'self.n': messageExpression must evaluate to a string, not int",
        "v1alpha1 spec.l[*]: rule 'self >= oldSelf': oldSelf cannot be used on the uncorrelatable portion "
        "of the schema (below an array that is not x-kubernetes-list-type=map)",
    ]


# -- structural schema (now checked by cloudtriggers.apiserver.crd_validation) -----------------------


def test_structural_problems_are_reported() -> None:
    schema: Obj = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
            "spec": {
                "type": "object",
                "description": "Spec.",
                "properties": {
                    "untyped": {"description": "No type."},
                    "undocumented": {"type": "string"},
                    "choice": {"type": "string", "description": "Choice.", "anyOf": [{"type": "string"}]},
                    "both": {"type": "object", "description": "Both.", "allOf": [{"properties": {"z": {}}}]},
                    "ios": {
                        "x-kubernetes-int-or-string": True,
                        "description": "Int or string.",
                        "anyOf": [{"type": "integer"}, {"type": "string"}],
                    },
                    "any": {
                        "type": "object",
                        "description": "Free-form.",
                        "x-kubernetes-preserve-unknown-fields": True,
                    },
                    "keys": {
                        "type": "array",
                        "description": "Map list.",
                        "x-kubernetes-list-type": "map",
                        "items": {"type": "object", "properties": {"k": _prop("string")}},
                        "x-kubernetes-list-map-keys": ["k"],
                    },
                    "re": {"type": "string", "description": "Regex.", "pattern": "(?<=x)"},
                },
            },
        },
    }
    # The server's ValidateStructural messages (sorted), then the list-map rule; see test_crd_validation.py.
    spec = "spec.validation.openAPIV3Schema.properties[spec].properties"
    assert [str(e) for e in validate_crd(_crd(schema))] == [
        "spec.validation.openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other "
        "than name and generateName, but metadata is implicitly specified",
        f"{spec}[choice].anyOf[0].type: Forbidden: must be empty to be structural",
        f'{spec}[re].pattern: Invalid value: "(?<=x)": must be a valid regular expression, but isn\'t: '
        "error parsing regexp: invalid or unsupported Perl syntax: `(?<=`",
        f"{spec}[untyped].type: Required value: must not be empty for specified object fields",
        f"{spec}[keys].items.properties[k].default: Required value: this property is in "
        "x-kubernetes-list-map-keys, so it must have a default or be a required property",
    ]
