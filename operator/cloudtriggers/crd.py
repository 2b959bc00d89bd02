"""Builds the Trigger CRD (crds/trigger.yaml) from the pydantic models.

pydantic's JSON schema is turned into a Kubernetes structural schema: references inlined,
`X | None` collapsed to X (optional = not required), titles dropped, free-form maps marked
x-kubernetes-preserve-unknown-fields.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from .models import GROUP, KIND, PLURAL, ROOT_RULES, SHORT_NAME, VERSION, TriggerSpec, TriggerStatus

_DROP = {"title", "additionalProperties", "$defs"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        # Field-level keys (description, default, rules) win over the referenced model's.
        rules = node.pop("x-kubernetes-validations", []) + target.pop("x-kubernetes-validations", [])
        target.update(node)
        if rules:
            target["x-kubernetes-validations"] = rules
        node = target
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"unsupported union in schema: {branches}")
        inner = _structural(branches[0], defs)
        if node.get("default", ...) is None:
            node.pop("default")
        inner_rules = inner.pop("x-kubernetes-validations", [])
        inner.update(node)
        rules = inner_rules + node.get("x-kubernetes-validations", [])
        if rules:
            inner["x-kubernetes-validations"] = rules
        node = inner
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("type") == "object" and "properties" not in node:
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra.get("type") == "string":
            node["additionalProperties"] = {"type": "string"}
            return {k: v for k, v in node.items() if k not in {"title", "$defs"}}
        node["x-kubernetes-preserve-unknown-fields"] = True
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
            if "description" not in out[key] and node.get("description"):
                out[key]["description"] = f"One entry of: {node['description']}"
        else:
            out[key] = value
    if out.get("default") == {} or out.get("default") == []:
        out.pop("default")
    return out


def model_schema(model: type[TriggerSpec] | type[TriggerStatus]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _structural(raw, defs)
    schema["type"] = "object"
    return schema


def build_crd() -> dict[str, Any]:
    spec = model_schema(TriggerSpec)
    spec["description"] = "Desired state: exactly one provider block (gitlab, ack or swr) plus policies."
    status = model_schema(TriggerStatus)
    status["description"] = "Observed state, written by the operator."
    status.pop("required", None)
    root = {
        "type": "object",
        "description": "A deployment trigger at Alibaba Cloud ACK, Huawei Cloud SWR or GitLab, kept in step "
        "with this object by the cloudtriggers operator.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion of this object: cloudtriggers.io/v1alpha1.",
            },
            "kind": {"type": "string", "description": "Kind of this object: Trigger."},
            # A real API server refuses anything but `type: object` here (and name/generateName
            # restrictions): the metadata schema is its own.
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": ROOT_RULES,
    }

    def col(
        name: str, path: str, description: str, type_: str = "string", priority: int = 0
    ) -> dict[str, Any]:
        c: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path, "description": description}
        if priority:
            c["priority"] = priority
        return c

    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": [SHORT_NAME],
                "categories": ["cloudtriggers"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        col("Provider", ".status.provider", "Provider block in use."),
                        col("External-ID", ".status.externalId", "Id of the provider trigger."),
                        col("Ready", '.status.conditions[?(@.type=="Ready")].status', "Ready condition."),
                        col(
                            "Reason",
                            '.status.conditions[?(@.type=="Ready")].reason',
                            "Why Ready is what it is.",
                        ),
                        col("Age", ".metadata.creationTimestamp", "Age.", type_="date"),
                        col(
                            "Token-Age",
                            ".status.tokenCreatedAt",
                            "Age of the token in the Secret (rotation).",
                            type_="date",
                            priority=1,
                        ),
                        col(
                            "Message",
                            '.status.conditions[?(@.type=="Ready")].message',
                            "Ready message.",
                            priority=1,
                        ),
                    ],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render_crd() -> str:
    header = (
        "# Generated by `cloudtriggers crd` from operator/cloudtriggers/models.py. Do not edit by hand.\n"
    )
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)
