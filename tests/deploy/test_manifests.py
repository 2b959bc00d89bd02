"""deploy/manifests: a kustomize base that installs what the chart installs with its default values."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from deploy.deploykit import CRD, MANIFESTS, Obj, helm_template, key, kustomize, schema_errors

# Labels only Helm sets; kustomize users' tools set their own managed-by.
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")


def normalized(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)

    def strip(node: Any) -> None:
        if isinstance(node, dict):
            meta = node.get("metadata")
            if isinstance(meta, dict) and isinstance(meta.get("labels"), dict):
                for label in HELM_ONLY_LABELS:
                    meta["labels"].pop(label, None)
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    strip(out)
    return out


@pytest.fixture(scope="module")
def built() -> list[Obj]:
    return kustomize(MANIFESTS)


def test_crd_copy_is_the_generated_crd() -> None:
    assert (MANIFESTS / "crd.yaml").read_bytes() == CRD.read_bytes(), (
        "deploy/manifests/crd.yaml differs from crds/trigger.yaml; copy it: "
        "cp crds/trigger.yaml deploy/manifests/crd.yaml"
    )


def test_kustomize_output_validates_against_the_kubernetes_schemas(built: list[Obj]) -> None:
    assert schema_errors(built) == []


def test_same_objects_as_the_chart_defaults(built: list[Obj]) -> None:
    # Helm hooks (the uninstall Job that releases the credentials Secrets) have no kustomize
    # equivalent; docs/install.md gives kustomize users the command.
    rendered = [o for o in helm_template() if "helm.sh/hook" not in (o["metadata"].get("annotations") or {})]
    chart = {key(o): normalized(o) for o in rendered}
    base = {key(o): o for o in built}
    # The base also creates the namespace, which `helm install --create-namespace` does for the chart.
    assert base.pop(("Namespace", "", "cloudtriggers"))["metadata"] == {"name": "cloudtriggers"}
    assert sorted(base) == sorted(chart)
    for k, obj in base.items():
        assert obj == chart[k], f"{'/'.join(k)} differs from the chart's default render"
