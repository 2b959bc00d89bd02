"""The CRD checker refuses what a real kube-apiserver refuses, with the server's messages.

Every expected message is what the Go source named in the test produces (kubernetes/kubernetes,
staging/src/k8s.io/apiextensions-apiserver unless said otherwise); validation.go means
pkg/apis/apiextensions/validation/validation.go, schema/validation.go pkg/apiserver/schema/validation.go.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cloudtriggers.apiserver.crd_validation import FieldError, invalid_status, validate_crd
from cloudtriggers.crd import build_crd

Obj = dict[str, Any]
ROOT = "spec.validation.openAPIV3Schema"
SPEC = f"{ROOT}.properties[spec]"


def _crd(spec_schema: Obj | None = None, *, root: Obj | None = None, **spec: Any) -> Obj:
    """A valid CRD whose root schema is ``root`` (or {spec: spec_schema}); keyword args override spec."""
    schema = root or {
        "type": "object",
        "properties": {"spec": spec_schema or {"type": "object", "properties": {"x": {"type": "string"}}}},
    }
    out: Obj = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}
            ],
        },
    }
    out["spec"].update(spec)
    return out


def errors(crd: Obj, old: Obj | None = None) -> list[str]:
    return [str(e) for e in validate_crd(crd, old)]


def spec_errors(prop: Obj, **spec_schema: Any) -> list[str]:
    """Errors for a CRD whose spec has the single property ``p``."""
    return errors(_crd({"type": "object", "properties": {"p": prop}, **spec_schema}))


P = f"{SPEC}.properties[p]"


# -- the project's CRD ------------------------------------------------------------------------------


def test_the_trigger_crd_is_accepted() -> None:
    assert validate_crd(build_crd()) == []


def test_a_description_on_root_metadata_is_refused_like_a_real_server() -> None:
    """schema/validation.go validateStructuralMetadataInvariants: the error a v1.36 server gave us."""
    crd = build_crd()
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["metadata"]["description"] = (
        "Standard object metadata."
    )
    assert errors(crd) == [
        "spec.validation.openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other "
        "than name and generateName, but metadata is implicitly specified"
    ]


def test_invalid_status_is_the_servers_422_body() -> None:
    """apimachinery api/errors NewInvalid; util/errors aggregate brackets several messages."""
    one = FieldError("Forbidden", "spec.a", "no")
    two = FieldError("Invalid value", "spec.b", "bad", 3)
    status = invalid_status("widgets.example.com", [one, two])
    assert status["code"] == 422 and status["reason"] == "Invalid" and status["status"] == "Failure"
    assert status["message"] == (
        'CustomResourceDefinition.apiextensions.k8s.io "widgets.example.com" is invalid: '
        "[spec.a: Forbidden: no, spec.b: Invalid value: 3: bad]"
    )
    assert status["details"] == {
        "name": "widgets.example.com",
        "group": "apiextensions.k8s.io",
        "kind": "CustomResourceDefinition",
        "causes": [
            {"reason": "FieldValueForbidden", "message": "Forbidden: no", "field": "spec.a"},
            {"reason": "FieldValueInvalid", "message": "Invalid value: 3: bad", "field": "spec.b"},
        ],
    }
    assert invalid_status("x", [one, one])["message"].endswith("is invalid: spec.a: Forbidden: no")


def test_field_error_text_matches_go() -> None:
    """field/errors.go ErrorBody: %q strings, %v numbers, null for nil, nothing for Required/Forbidden."""
    assert str(FieldError("Invalid value", "a", "d", 'x"y')) == 'a: Invalid value: "x\\"y": d'
    assert str(FieldError("Invalid value", "a", "d", 1e6)) == "a: Invalid value: 1e+06: d"
    assert str(FieldError("Invalid value", "a", "d", 2.5)) == "a: Invalid value: 2.5: d"
    assert str(FieldError("Invalid value", "a", "d", None)) == "a: Invalid value: null: d"
    assert str(FieldError("Required value", "a", "", "ignored")) == "a: Required value"
    assert str(FieldError("Too many", "a", "must have at most 2 items", 3)) == (
        "a: Too many: 3: must have at most 2 items"
    )


# -- metadata, names, group, scope, versions (validation.go) ---------------------------------------


def test_name_must_be_plural_dot_group() -> None:
    """ValidateCustomResourceDefinition nameValidationFn."""
    crd = _crd()
    crd["metadata"]["name"] = "gadgets.example.com"
    assert errors(crd) == [
        'metadata.name: Invalid value: "gadgets.example.com": must be spec.names.plural+"."+spec.group'
    ]


def test_group_needs_a_dot() -> None:
    """validateCustomResourceDefinitionSpec: group."""
    crd = _crd(group="example")
    crd["metadata"]["name"] = "widgets.example"
    assert errors(crd) == ['spec.group: Invalid value: "example": should be a domain with at least one dot']


def test_scope_is_an_enum() -> None:
    """validateEnumStrings."""
    assert errors(_crd(scope="Global")) == [
        'spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced"'
    ]


def test_plural_must_be_a_dns_label() -> None:
    """ValidateCustomResourceDefinitionNames with utilvalidation.IsDNS1035Label, whose message is
    RegexError's, its spacing included: each example is followed by "', " and then " or "."""
    crd = _crd(names={"kind": "Widget", "plural": "Widgets", "singular": "widget", "listKind": "WidgetList"})
    crd["metadata"]["name"] = "Widgets.example.com"
    found = errors(crd)
    assert (
        'spec.names.plural: Invalid value: "Widgets": a DNS-1035 label must consist of lower case '
        "alphanumeric "
        "characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. "
        "'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
    ) in found


def test_kind_and_list_kind_differ() -> None:
    """ValidateCustomResourceDefinitionNames."""
    crd = _crd(names={"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "Widget"})
    assert errors(crd) == [
        'spec.names.listKind: Invalid value: "Widget": kind and listKind may not be the same'
    ]


def test_list_kind_and_singular_are_defaulted() -> None:
    """v1 SetDefaults_CustomResourceDefinitionSpec fills singular and listKind before validation."""
    assert errors(_crd(names={"kind": "Widget", "plural": "widgets"})) == []


def test_exactly_one_storage_version() -> None:
    """validateCustomResourceDefinitionSpec; the bad value is the Go dump of spec.versions."""
    crd = _crd()
    crd["spec"]["versions"][0]["storage"] = False
    found = errors(crd)
    assert found[0].startswith(
        "spec.versions: Invalid value: []apiextensions.CustomResourceDefinitionVersion{"
    )
    assert found[0].endswith(": must have exactly one version marked as storage version")
    assert (
        found[1] == "status.storedVersions: Invalid value: []string{}: must have at least one stored version"
    )


def test_version_names_are_dns_labels() -> None:
    """validateCustomResourceDefinitionSpec: versions[i].name."""
    crd = _crd()
    crd["spec"]["versions"][0]["name"] = "V1"
    assert errors(crd)[0].startswith('spec.versions[0].name: Invalid value: "V1": a DNS-1035 label')


def test_schemas_are_required() -> None:
    """validateCustomResourceDefinitionSpec with requireOpenAPISchema."""
    crd = _crd()
    del crd["spec"]["versions"][0]["schema"]
    assert errors(crd) == ["spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"]


def test_different_schemas_keep_per_version_paths() -> None:
    """v1/conversion.go moves the schema to spec.validation only when every version has the same one."""
    crd = _crd()
    second = copy.deepcopy(crd["spec"]["versions"][0])
    second.update(name="v2", storage=False)
    second["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["x"]["uniqueItems"] = True
    crd["spec"]["versions"].append(second)
    assert errors(crd) == [
        "spec.versions[1].schema.openAPIV3Schema.properties[spec].properties[x].uniqueItems: Forbidden: "
        "uniqueItems cannot be set to true since the runtime complexity becomes quadratic"
    ]


def test_preserve_unknown_fields_cannot_be_true() -> None:
    """validatePreserveUnknownFields."""
    assert errors(_crd(preserveUnknownFields=True)) == [
        "spec.preserveUnknownFields: Invalid value: true: cannot set to true, set "
        "x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead"
    ]


def test_group_and_plural_are_immutable() -> None:
    """validateCustomResourceDefinitionSpecUpdate (ValidateImmutableField)."""
    old = _crd()
    new = _crd(group="example.org")
    new["metadata"]["name"] = "widgets.example.org"
    assert errors(new, old) == ['spec.group: Invalid value: "example.org": field is immutable']


# -- subresources and printer columns (validation.go) ----------------------------------------------


def test_scale_paths() -> None:
    """ValidateCustomResourceDefinitionSubresources; one version: moved to spec.subresources."""
    crd = _crd()
    crd["spec"]["versions"][0]["subresources"] = {
        "scale": {"specReplicasPath": ".status.replicas", "statusReplicasPath": "status.replicas"}
    }
    assert errors(crd) == [
        'spec.subresources.scale.specReplicasPath: Invalid value: ".status.replicas": should be a json path '
        "under .spec",
        'spec.subresources.scale.statusReplicasPath: Invalid value: "status.replicas": must be a simple json '
        "path starting with .",
    ]


def test_status_subresource_restricts_the_root() -> None:
    """validateCustomResourceDefinitionValidation: only some fields at the root with a status subresource."""
    crd = _crd(root={"type": "object", "properties": {"spec": {"type": "object"}}, "maxLength": 3})
    crd["spec"]["versions"][0]["subresources"] = {"status": {}}
    assert errors(crd) == []  # maxLength is in allowedFieldsAtRootSchema (and not checked for objects)
    crd = _crd(root={"type": "object", "properties": {"spec": {"type": "object"}}, "maxProperties": 3})
    crd["spec"]["versions"][0]["subresources"] = {"status": {}}
    (found,) = errors(crd)
    assert found.startswith(
        f"{ROOT}: Invalid value: apiextensions.JSONSchemaProps{{...}}: only [Description Type "
    )
    assert found.endswith(
        "XValidations] fields are allowed at the root of the schema if the status subresource is enabled"
    )


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        (
            {"name": "Age", "type": "time", "jsonPath": ".metadata.creationTimestamp"},
            'spec.additionalPrinterColumns[0].type: Invalid value: "time": must be one of '
            "boolean,date,integer,number,string",
        ),
        (
            {"name": "Age", "type": "string", "format": "uuid", "jsonPath": ".a"},
            'spec.additionalPrinterColumns[0].format: Invalid value: "uuid": must be one of '
            "byte,date,date-time,double,float,int32,int64,password",
        ),
        (
            {"name": "Age", "type": "string", "jsonPath": "status.phase"},
            'spec.additionalPrinterColumns[0].JSONPath: Invalid value: "status.phase": must be a simple json '
            "path starting with .",
        ),
        ({"type": "string", "jsonPath": ".a"}, "spec.additionalPrinterColumns[0].name: Required value"),
    ],
)
def test_printer_columns(column: Obj, expected: str) -> None:
    """ValidateCustomResourceColumnDefinition (+ validateSimpleJSONPath; the field is named JSONPath)."""
    crd = _crd()
    crd["spec"]["versions"][0]["additionalPrinterColumns"] = [column]
    assert errors(crd) == [expected]


# -- structural schema (schema/validation.go, complete.go, convert.go) -----------------------------


def test_root_must_be_an_object() -> None:
    """validateStructuralInvariants."""
    assert errors(_crd(root={"type": "string"})) == [
        f'{ROOT}.type: Invalid value: "string": must be object at the root'
    ]


def test_every_field_needs_a_type() -> None:
    """validateStructuralInvariants: fieldLevel."""
    assert spec_errors({"description": "x"}) == [
        f"{P}.type: Required value: must not be empty for specified object fields"
    ]


def test_array_needs_items() -> None:
    """validateStructuralInvariants."""
    assert spec_errors({"type": "array"}) == [f"{P}.items: Required value: must be specified"]


def test_array_items_need_a_type() -> None:
    """validateStructuralInvariants: itemLevel."""
    assert spec_errors({"type": "array", "items": {}}) == [
        f"{P}.items.type: Required value: must not be empty for specified array items"
    ]


def test_junctors_may_not_set_types() -> None:
    """validateNestedValueValidation."""
    assert spec_errors({"type": "string", "anyOf": [{"type": "string"}]}) == [
        f"{P}.anyOf[0].type: Forbidden: must be empty to be structural"
    ]


def test_int_or_string_any_of_pattern_is_allowed() -> None:
    """isIntOrStringAnyOfPattern."""
    prop = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert spec_errors(prop) == []


def test_junctor_fields_must_exist_outside() -> None:
    """validateStructuralCompleteness (root junctors only, as in complete.go)."""
    root = {"type": "object", "properties": {"a": {"type": "string"}}, "allOf": [{"properties": {"b": {}}}]}
    assert errors(_crd(root=root)) == [
        f"{ROOT}.properties[b]: Required value: because it is defined in {ROOT}.allOf[0].properties[b]"
    ]


def test_defaults_under_junctors_are_not_structural() -> None:
    """validateNestedValueValidation: ForbiddenGenerics.Default."""
    assert spec_errors({"type": "string", "allOf": [{"default": "a"}]}) == [
        f"{P}.allOf[0].default: Forbidden: must be undefined to be structural"
    ]


def test_no_additional_properties_at_the_root() -> None:
    """validateStructuralInvariants: rootLevel."""
    root = {"type": "object", "additionalProperties": {"type": "string"}}
    assert errors(_crd(root=root)) == [
        f"{ROOT}.additionalProperties: Forbidden: must not be used at the root"
    ]


def test_properties_and_additional_properties_exclude_each_other() -> None:
    """ValidateCustomResourceDefinitionOpenAPISchema."""
    prop = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "additionalProperties": {"type": "string"},
    }
    assert spec_errors(prop) == [
        f"{P}.additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("$ref", "#/definitions/x", "$ref: Forbidden: $ref is not supported"),
        ("additionalItems", False, "additionalItems: Forbidden: additionalItems is not supported"),
        ("definitions", {"x": {"type": "string"}}, "definitions: Forbidden: definitions is not supported"),
        (
            "uniqueItems",
            True,
            "uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity "
            "becomes quadratic",
        ),
        (
            "x-kubernetes-preserve-unknown-fields",
            False,
            "x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined",
        ),
    ],
)
def test_forbidden_schema_fields(key: str, value: Any, message: str) -> None:
    """specStandardValidatorV3.validate / ValidateCustomResourceDefinitionOpenAPISchema."""
    prop: Obj = {"type": "string", key: value}
    if key == "additionalItems":
        prop = {"type": "array", "items": {"type": "string"}, key: value}
    assert spec_errors(prop) == [f"{P}.{message}"]


def test_dollar_schema_only_fails_structural_conversion() -> None:
    """NewStructural's error is shown only when nothing else failed."""
    assert spec_errors({"type": "string", "$schema": "x"}) == [
        f"{ROOT}: Invalid value: \"\": OpenAPIV3Schema 'schema' is not supported"
    ]


def test_type_null_is_forbidden() -> None:
    """specStandardValidatorV3.validate (requireValidPropertyType first)."""
    assert spec_errors({"type": "null"}) == [
        f'{P}.type: Unsupported value: "null": supported values: "array", "boolean", "integer", "number", '
        '"object", "string"',
        f"{P}.type: Forbidden: type cannot be set to null, use nullable as an alternative",
    ]


def test_nullable_root() -> None:
    """validateCustomResourceDefinitionValidation."""
    root = {"type": "object", "nullable": True, "properties": {"spec": {"type": "object"}}}
    assert errors(_crd(root=root)) == [f"{ROOT}.nullable: Forbidden: nullable cannot be true at the root"]


def test_invalid_pattern() -> None:
    """validateValueValidation with Go's regexp.Compile error."""
    assert spec_errors({"type": "string", "pattern": "(?!a)"}) == [
        f'{P}.pattern: Invalid value: "(?!a)": must be a valid regular expression, but isn\'t: error parsing '
        "regexp: invalid or unsupported Perl syntax: `(?!`"
    ]


# -- root rules: metadata, kind, apiVersion, embedded resources ------------------------------------


def test_root_metadata_only_restricts_name() -> None:
    """validateStructuralMetadataInvariants: name/generateName restrictions are fine, labels are not."""
    ok = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}}
    assert errors(_crd(root={"type": "object", "properties": {"metadata": ok}})) == []
    labels = {"type": "object", "properties": {"labels": {"type": "object"}}}
    assert errors(_crd(root={"type": "object", "properties": {"metadata": labels}})) == [
        f"{ROOT}.properties[metadata]: Forbidden: must not specify anything other than name and "
        "generateName, "
        "but metadata is implicitly specified"
    ]


def test_root_metadata_must_be_an_object() -> None:
    """validateStructuralMetadataInvariants: type."""
    root = {"type": "object", "properties": {"metadata": {"type": "string"}}}
    assert errors(_crd(root=root)) == [
        f'{ROOT}.properties[metadata].type: Invalid value: "string": must be object'
    ]


def test_kind_at_the_root_must_be_a_string() -> None:
    """validateStructuralInvariants: kind/apiVersion."""
    root = {"type": "object", "properties": {"kind": {"type": "integer"}}}
    assert errors(_crd(root=root)) == [
        f'{ROOT}.properties[kind].type: Invalid value: "integer": must be string'
    ]


def test_no_defaults_in_top_level_metadata() -> None:
    """ValidateCustomResourceDefinitionOpenAPISchema withForbiddenDefaults("in top-level metadata")."""
    root = {"type": "object", "properties": {"apiVersion": {"type": "string", "default": "v1"}}}
    assert errors(_crd(root=root)) == [
        f"{ROOT}.properties[apiVersion].default: Forbidden: must not be set in top-level apiVersion"
    ]


def test_metadata_may_not_appear_in_junctors() -> None:
    """validateNestedValueValidation: metadata in a nested context."""
    prop = {
        "type": "object",
        "properties": {"metadata": {"type": "object"}},
        "anyOf": [{"properties": {"metadata": {}}}],
    }
    assert spec_errors(prop) == [
        f"{P}.anyOf[0].properties[metadata]: Forbidden: must not be specified in a nested context"
    ]


def test_embedded_resource_needs_an_object() -> None:
    """validateStructuralInvariants: x-kubernetes-embedded-resource."""
    # both apply; ValidateStructural sorts by message
    assert spec_errors({"type": "string", "x-kubernetes-embedded-resource": True}) == [
        f"{P}.properties: Required value: must not be empty if x-kubernetes-embedded-resource is true "
        "without "
        "x-kubernetes-preserve-unknown-fields",
        f'{P}.type: Invalid value: "string": must be object if x-kubernetes-embedded-resource is true',
    ]
    assert spec_errors({"type": "object", "x-kubernetes-embedded-resource": True}) == [
        f"{P}.properties: Required value: must not be empty if x-kubernetes-embedded-resource is true "
        "without "
        "x-kubernetes-preserve-unknown-fields"
    ]


def test_embedded_resource_metadata_is_checked_too() -> None:
    """validateStructuralInvariants: checkMetadata for embedded resources."""
    prop = {
        "type": "object",
        "x-kubernetes-embedded-resource": True,
        "properties": {"kind": {"type": "boolean"}},
    }
    assert spec_errors(prop) == [f'{P}.properties[kind].type: Invalid value: "boolean": must be string']


def test_int_or_string_excludes_preserve() -> None:
    """validateExtensions."""
    prop = {"x-kubernetes-int-or-string": True, "x-kubernetes-preserve-unknown-fields": True}
    assert spec_errors(prop) == [
        f"{P}.x-kubernetes-preserve-unknown-fields: Invalid value: true: must be false if "
        "x-kubernetes-int-or-string is true"
    ]


# -- list and map types (validation.go) -------------------------------------------------------------


def _list(item_props: Obj, **extra: Any) -> Obj:
    return {
        "type": "array",
        "items": {"type": "object", "properties": item_props, **extra.pop("items", {})},
        **extra,
    }


def test_map_list_keys_must_be_required_or_defaulted() -> None:
    """validateMapListKeysMapSet."""
    prop = _list(
        {"k": {"type": "string"}}, **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"]}
    )
    assert spec_errors(prop) == [
        f"{P}.items.properties[k].default: Required value: this property is in "
        "x-kubernetes-list-map-keys, so "
        "it must have a default or be a required property"
    ]
    prop["items"]["required"] = ["k"]
    assert spec_errors(prop) == []


def test_map_list_keys_must_exist_and_be_scalar() -> None:
    """ValidateCustomResourceDefinitionOpenAPISchema: list-type map."""
    keys = {
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["k", "o"],
        "items": {"required": ["k", "o"]},
    }
    prop = _list({"k": {"type": "string"}, "o": {"type": "object"}}, **keys)
    assert spec_errors(prop) == [
        f'{P}.items.properties[o].type: Invalid value: "object": must be a scalar type if parent array\'s '
        "x-kubernetes-list-type is map"
    ]
    keys = {
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["z"],
        "items": {"required": ["z"]},
    }
    assert spec_errors(_list({"k": {"type": "string"}}, **keys)) == [
        f'{P}.x-kubernetes-list-map-keys: Invalid value: []string{{"z"}}: entries must all be names '
        "of item properties"
    ]


def test_map_list_needs_keys_and_object_items() -> None:
    """ValidateCustomResourceDefinitionOpenAPISchema: list-type map."""
    prop = {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "map"}
    assert spec_errors(prop) == [
        f"{P}.x-kubernetes-list-map-keys: Required value: must not be empty if x-kubernetes-list-type is map",
        f'{P}.items.type: Invalid value: "string": must be object if parent array\'s '
        "x-kubernetes-list-type is map",
    ]


def test_list_type_needs_an_array_and_a_known_value() -> None:
    """ValidateCustomResourceDefinitionOpenAPISchema: x-kubernetes-list-type."""
    assert spec_errors({"type": "string", "x-kubernetes-list-type": "set"}) == [
        f'{P}.type: Invalid value: "string": must be array if x-kubernetes-list-type is specified'
    ]
    assert spec_errors({"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "bag"}) == [
        f'{P}.x-kubernetes-list-type: Unsupported value: "bag": supported values: "atomic", "set", "map"'
    ]


def test_set_items_must_be_atomic() -> None:
    """ValidateCustomResourceDefinitionOpenAPISchema with requireAtomicSetType (value is items' list type)."""
    prop = _list({"a": {"type": "string"}}, **{"x-kubernetes-list-type": "set"})
    assert spec_errors(prop) == [
        f"{P}.items.x-kubernetes-map-type: Invalid value: null: must be atomic as item of a list with "
        "x-kubernetes-list-type=set"
    ]


def test_list_map_keys_need_list_type_map() -> None:
    """ValidateCustomResourceDefinitionOpenAPISchema: x-kubernetes-list-map-keys."""
    prop = _list({"k": {"type": "string"}}, **{"x-kubernetes-list-map-keys": ["k"]})
    assert spec_errors(prop) == [
        f"{P}.x-kubernetes-list-type: Required value: must be map if x-kubernetes-list-map-keys is non-empty"
    ]


def test_map_type() -> None:
    """ValidateCustomResourceDefinitionOpenAPISchema: x-kubernetes-map-type."""
    assert spec_errors({"type": "object", "x-kubernetes-map-type": "bag"}) == [
        f'{P}.x-kubernetes-map-type: Unsupported value: "bag": supported values: "atomic", "granular"'
    ]
    assert spec_errors({"type": "string", "x-kubernetes-map-type": "atomic"}) == [
        f'{P}.type: Invalid value: "string": must be object if x-kubernetes-map-type is specified'
    ]


# -- defaults (schema/defaulting/validation.go) -----------------------------------------------------


def test_defaults_must_have_the_right_type() -> None:
    """ValidateDefaults -> kube-openapi type validator via kubeOpenAPIResultToFieldErrors (TypeInvalid)."""
    assert spec_errors({"type": "integer", "default": "ten"}) == [
        f'{P}.default: Invalid value: "string":  in body must be of type integer: "string"'
    ]


def test_defaults_must_be_in_the_enum() -> None:
    """ValidateDefaults -> EnumFailCode -> field.NotSupported."""
    assert spec_errors({"type": "string", "enum": ["a", "b"], "default": "c"}) == [
        f'{P}.default: Unsupported value: "c": supported values: "a", "b"'
    ]


def test_defaults_must_be_pruned() -> None:
    """ValidateDefaults with requirePrunedDefaults (pruning.Prune changed the value)."""
    prop = {"type": "object", "properties": {"a": {"type": "string"}}, "default": {"a": "x", "b": "y"}}
    assert spec_errors(prop) == [
        f'{P}.default: Invalid value: map[string]interface {{}}{{"a":"x", "b":"y"}}: must not have '
        "unknown fields"
    ]


def test_defaulted_value_must_pass_the_cel_rules() -> None:
    """ValidateDefaults runs cel.NewValidator on the default (failed rule message from "
    "ruleMessageOrDefault)."""
    prop = {
        "type": "string",
        "default": "Bad",
        "x-kubernetes-validations": [{"rule": "self == self.lowerAscii()"}],
    }
    assert spec_errors(prop) == [f'{P}.default: Invalid value: "Bad": failed rule: self == self.lowerAscii()']
    prop["default"] = "good"
    assert spec_errors(prop) == []


def test_defaulted_object_failing_a_rule_omits_the_value() -> None:
    """schema/cel/validation.go: objects and arrays are reported with field.OmitValueType."""
    prop = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "default": {"a": 1},
        "x-kubernetes-validations": [{"rule": "self.a > 1", "message": "a must be above 1"}],
    }
    assert spec_errors(prop) == [f"{P}.default: Invalid value: a must be above 1"]


# -- x-kubernetes-validations (validation.go, schema/cel/compilation.go) ---------------------------


def _rule(rule: Obj, prop: Obj | None = None) -> list[str]:
    prop = prop or {"type": "object", "properties": {"a": {"type": "string", "maxLength": 10}}}
    return spec_errors({**prop, "x-kubernetes-validations": [rule]})


R = f"{P}.x-kubernetes-validations[0]"


def test_rule_is_required() -> None:
    """ValidateCustomResourceDefinitionOpenAPISchema: XValidations."""
    assert _rule({"rule": " "}) == [f"{R}.rule: Required value: rule is not specified"]


def test_message_without_line_breaks() -> None:
    """ValidateCustomResourceDefinitionOpenAPISchema: XValidations."""
    assert _rule({"rule": "true", "message": "a\nb"}) == [
        f'{R}.message: Invalid value: "a\\nb": message must not contain line breaks'
    ]


def test_reason_is_an_enum() -> None:
    """supportedValidationReason."""
    assert _rule({"rule": "true", "reason": "Nope"}) == [
        f'{R}.reason: Unsupported value: "Nope": supported values: "FieldValueDuplicate", '
        '"FieldValueForbidden", '
        '"FieldValueInvalid", "FieldValueRequired"'
    ]


def test_field_path_must_exist() -> None:
    """pathValid -> cel.ValidFieldPath."""
    assert _rule({"rule": "true", "fieldPath": ".nope"}) == [
        f'{R}.fieldPath: Invalid value: ".nope": fieldPath must be a valid path'
    ]
    assert _rule({"rule": "true", "fieldPath": ".a"}) == []


def test_rule_must_compile_and_return_a_bool() -> None:
    """compileRule: compilation errors and "cel expression must evaluate to a bool"."""
    (found,) = _rule({"rule": "self.nope == 'x'"})
    assert found.startswith(
        f"{R}.rule: Invalid value: apiextensions.ValidationRule{{Rule:\"self.nope == 'x'\""
    )
    assert ": compilation failed: " in found and "undefined field 'nope'" in found
    (found,) = _rule({"rule": "self.a"})
    assert found.endswith(": cel expression must evaluate to a bool")


def test_message_expression_must_return_a_string() -> None:
    """compileRule: messageExpression."""
    (found,) = _rule({"rule": "true", "messageExpression": "1"})
    assert found.startswith(f"{R}.messageExpression: Invalid value: apiextensions.ValidationRule{{")
    assert found.endswith(": messageExpression must evaluate to a string")


def test_old_self_only_where_correlatable() -> None:
    """ValidateCustomResourceDefinitionOpenAPISchema withForbidOldSelfValidations for non-map lists."""
    prop = {
        "type": "array",
        "maxItems": 5,
        "items": {
            "type": "string",
            "maxLength": 5,
            "x-kubernetes-validations": [{"rule": "self == oldSelf"}],
        },
    }
    assert spec_errors(prop) == [
        f'{P}.items.x-kubernetes-validations[0].rule: Invalid value: "self == oldSelf": oldSelf '
        "cannot be used "
        f"on the uncorrelatable portion of the schema within {P}"
    ]


def test_optional_old_self_needs_old_self() -> None:
    """ValidateCustomResourceDefinitionOpenAPISchema: optionalOldSelf."""
    assert _rule({"rule": "true", "optionalOldSelf": True}) == [
        f"{R}.optionalOldSelf: Invalid value: true: may not be set if oldSelf is not used in rule"
    ]
    assert _rule({"rule": "oldSelf.hasValue() || self.a == ''", "optionalOldSelf": True}) == []


# -- CEL cost (validation.go getExpressionCost, schema/cel/compilation.go, cel-go checker/cost.go) ---


def _matches_under_array(items: Obj, array: Obj) -> list[str]:
    rule = {"rule": "self.matches('^a.*$')"}
    prop = {
        "type": "array",
        **array,
        "items": {"type": "string", **items, "x-kubernetes-validations": [rule]},
    }
    return spec_errors(prop)


def test_regex_on_unbounded_strings_in_an_unbounded_list_is_too_expensive() -> None:
    """getExpressionCost: cost x maxCardinality(3 MiB / min size) exceeds StaticEstimatedCostLimit."""
    assert _matches_under_array({}, {}) == [
        f"{P}.items.x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget "
        "by factor "
        "of more than 100x (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where "
        "arrays, maps, and strings are declared)",
        f"{P}.items.x-kubernetes-validations[0].rule: Forbidden: contributed to estimated rule cost total "
        "exceeding cost limit for entire OpenAPIv3 schema",
        f"{ROOT}: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema "
        "exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, "
        "maxProperties, and maxLength where arrays, maps, and strings are declared)",
    ]


def test_the_same_rule_with_bounds_fits() -> None:
    """With maxItems and maxLength both the per-rule and the per-CRD budgets hold."""
    assert _matches_under_array({"maxLength": 64}, {"maxItems": 10}) == []


@pytest.mark.parametrize(("max_items", "factor"), [(20, "1.258294x"), (100, "6.3x")])
def test_max_items_alone_is_not_enough_and_the_factor_is_printed_like_go(max_items: int, factor: str) -> None:
    """getCostErrorMessage: %f below 1.5x, %.1f above; matches() costs (3145726+1)*0.1 x ceil(5*0.25),
    plus 1 for self (cel-go coster: MatchesString), times maxItems: 629147 x 20 = 12582940."""
    assert _matches_under_array({}, {"maxItems": max_items}) == [
        f"{P}.items.x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget "
        "by factor "
        f"of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength "
        "where arrays, "
        "maps, and strings are declared)"
    ]


def test_cost_of_all_over_a_list_multiplies_by_its_size() -> None:
    """costComprehension: range size x (step + condition) for an all() macro."""
    prop: dict[str, Any] = {
        "type": "array",
        "items": {"type": "string"},
        "x-kubernetes-validations": [{"rule": "self.all(x, x.contains('a'))"}],
    }
    assert any("estimated rule cost exceeds budget" in e for e in spec_errors(prop))
    prop["maxItems"] = 5
    prop["items"]["maxLength"] = 5
    assert spec_errors(prop) == []


def test_unsupported_cost_is_reported_not_counted_as_zero() -> None:
    """The port refuses to estimate what it does not model (sets.* has its own cel-go estimator)."""
    prop = {
        "type": "array",
        "maxItems": 3,
        "items": {"type": "string", "maxLength": 3},
        "x-kubernetes-validations": [{"rule": "sets.contains(self, ['a'])"}],
    }
    assert spec_errors(prop) == [
        f"{P}.x-kubernetes-validations[0].rule: Internal error: cloudtriggers does not model the CEL cost of "
        "function sets.contains()"
    ]


def test_type_names_and_comprehension_macros_are_costed() -> None:
    """cel-go coster: type identifiers cost 1; exists_one/map/filter expand to comprehensions (macro.go)."""
    prop = {
        "type": "array",
        "maxItems": 4,
        "items": {"type": "integer"},
        "x-kubernetes-validations": [
            {"rule": "type(self) == list"},
            {"rule": "self.exists_one(x, x == 1) && self.map(x, x * 2).filter(y, y > 2).size() < 3"},
        ],
    }
    assert spec_errors(prop) == []


def test_unchanged_schemas_skip_the_per_rule_limit_on_update() -> None:
    """ValidateCustomResourceDefinitionUpdate: versionsWithUnchangedSchemas -> suppressPerExpressionCost."""
    rule = {"rule": "self.matches('^a.*$')"}
    prop = {"type": "array", "maxItems": 20, "items": {"type": "string", "x-kubernetes-validations": [rule]}}
    crd = _crd({"type": "object", "properties": {"p": prop}})
    assert len(errors(crd)) == 1
    assert errors(crd, old=crd) == []
