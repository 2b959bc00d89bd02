"""The CRD in crds/ is what the models generate, and it is a structural schema that reads well."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cloudtriggers.crd import build_crd, render_crd

ROOT = Path(__file__).resolve().parents[2]


def _schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def test_checked_in_crd_is_not_stale() -> None:
    assert (ROOT / "crds" / "trigger.yaml").read_text() == render_crd(), (
        "crds/trigger.yaml is stale: run `cloudtriggers crd > crds/trigger.yaml`"
    )


def test_crd_names_status_subresource_and_columns() -> None:
    crd = yaml.safe_load(render_crd())
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "triggers.cloudtriggers.io"
    assert spec["names"]["shortNames"] == ["trg"] and spec["scope"] == "Namespaced"
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Provider", "External-ID", "Ready", "Reason", "Age"]


def test_every_field_has_a_type_and_description() -> None:
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        if not node.get("description"):
            missing.append(f"{path}: description")
        if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            missing.append(f"{path}: type")
        for key in ("$ref", "anyOf", "allOf", "oneOf", "definitions", "$defs"):
            if key in node:
                missing.append(f"{path}: {key} is not structural")
        for name, child in (node.get("properties") or {}).items():
            if path == "" and name == "metadata":
                # The API server owns the root metadata schema and refuses a description there.
                assert child == {"type": "object"}
                continue
            walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(_schema(), "")
    assert missing == []


def test_status_declares_every_field_the_operator_writes() -> None:
    status = _schema()["properties"]["status"]["properties"]
    for field in (
        "provider",
        "externalId",
        "observedGeneration",
        "lastSyncTime",
        "secretName",
        "tokenSha256",
        "conditions",
        "atProvider",
        "pendingCreate",
        "pendingDelete",
    ):
        assert field in status, field
    assert status["atProvider"].get("x-kubernetes-preserve-unknown-fields") is True
