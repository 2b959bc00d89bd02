"""ValidatingAdmissionPolicy evaluation, as the API server does it (admissionregistration.k8s.io/v1).

Written from k8s.io/apiserver/pkg/admission/plugin/policy/validating (the dispatcher and the CEL
validator): a policy applies to a request its matchConstraints' resourceRules match (and its
binding's namespaceSelector, matchLabels only here); its variables are evaluated in order, each
seeing the ones before as `variables.<name>`; each validation that is not true denies with its
message (messageExpression, else message, else "failed expression: <expression>"); an evaluation
error denies too under failurePolicy Fail (the default) and is ignored under Ignore. Denials are
worded as the server words them:
    ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied request: <message>
The CEL is cel.py's (cel-python with the Kubernetes libraries), so a policy's expressions are
checked with the same engine as the CRD's rules. `request` has operation, name and namespace only.
Not modelled: paramKind/paramRef, matchConditions, auditAnnotations, Warn/Audit actions, type
checking against the resource's schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import celpy.celtypes as ct

from .cel import _compile, _evaluate, _to_cel


def _value(value: Any) -> Any:
    """JSON as CEL with keys as they are: objects here are untyped, so maps such as labels keep
    their keys (the CRD rules' escaping of property names is for typed schemas' properties)."""
    if isinstance(value, dict):
        return ct.MapType({ct.StringType(k): _value(v) for k, v in value.items()})
    if isinstance(value, list):
        return ct.ListType([_value(v) for v in value])
    return _to_cel(value, None)


__all__ = ["applies", "compile_errors", "denials"]


def _matches(rule_values: list[str], value: str) -> bool:
    return "*" in rule_values or value in rule_values


def applies(
    policy: Mapping[str, Any],
    binding: Mapping[str, Any],
    group: str,
    version: str,
    resource: str,
    operation: str,
    namespace: Mapping[str, Any] | None,
) -> bool:
    spec = policy.get("spec") or {}
    rules = (spec.get("matchConstraints") or {}).get("resourceRules") or []
    if not any(
        _matches(r.get("apiGroups") or [], group)
        and _matches(r.get("apiVersions") or [], version)
        and _matches(r.get("resources") or [], resource)
        and _matches(r.get("operations") or [], operation)
        for r in rules
    ):
        return False
    selector = ((binding.get("spec") or {}).get("matchResources") or {}).get("namespaceSelector") or {}
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def compile_errors(policy: Mapping[str, Any]) -> list[str]:
    """Expressions of the policy that would not compile, as `<field>: <error>`."""
    spec = policy.get("spec") or {}
    out = []
    for i, v in enumerate(spec.get("variables") or []):
        if (c := _compile(str(v.get("expression", "")))).error:
            out.append(f"spec.variables[{i}].expression: {c.error}")
    for i, v in enumerate(spec.get("validations") or []):
        for key in ("expression", "messageExpression"):
            if key in v and (c := _compile(str(v[key]))).error:
                out.append(f"spec.validations[{i}].{key}: {c.error}")
    return out


def denials(
    policy: Mapping[str, Any],
    binding: Mapping[str, Any],
    obj: Mapping[str, Any],
    namespace: Mapping[str, Any] | None,
    old: Mapping[str, Any] | None = None,
) -> list[str]:
    """What the policy denies the request with (empty: admitted), worded as the API server."""
    spec = policy.get("spec") or {}
    ignore = spec.get("failurePolicy") == "Ignore"
    prefix = (
        f"ValidatingAdmissionPolicy '{policy['metadata']['name']}' with binding "
        f"'{binding['metadata']['name']}' denied request: "
    )
    variables: dict[Any, Any] = {}
    activation: dict[str, Any] = {
        "object": _value(dict(obj)),
        "oldObject": _value(dict(old)) if old is not None else None,
        "namespaceObject": _value(dict(namespace)) if namespace is not None else None,
        "request": _value(
            {
                "operation": "CREATE" if old is None else "UPDATE",
                "name": (obj.get("metadata") or {}).get("name", ""),
                "namespace": ((namespace or {}).get("metadata") or {}).get("name", ""),
            }
        ),
        "variables": ct.MapType(variables),
    }
    for v in spec.get("variables") or []:
        # A variable that fails to evaluate is left out: a validation using it then fails with it.
        scope = {**activation, "variables": ct.MapType(variables)}
        value, error = _evaluate(_compile(str(v["expression"])), scope)
        if error is None:
            variables[ct.StringType(v["name"])] = value
    activation["variables"] = ct.MapType(variables)
    out = []
    for v in spec.get("validations") or []:
        expression = str(v["expression"])
        compiled = _compile(expression)
        result, error = (None, compiled.error) if compiled.error else _evaluate(compiled, activation)
        if error is not None:
            if not ignore:
                out.append(f"{prefix}expression '{expression}' resulted in error: {error}")
            continue
        if result is True or (isinstance(result, ct.BoolType) and bool(result)):
            continue
        message = str(v.get("message") or f"failed expression: {expression}")
        if v.get("messageExpression"):
            text, merr = _evaluate(_compile(str(v["messageExpression"])), activation)
            if merr is None and isinstance(text, str) and text.strip():
                message = str(text)
        out.append(prefix + message)
    return out
