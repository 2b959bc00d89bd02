"""What `kubectl apply` accepts and rejects, by evaluating our CRD's schema and CEL rules offline."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudtriggers.apiserver.cel import compile_all, violations
from cloudtriggers.apiserver.crd_validation import validate_crd
from cloudtriggers.crd import build_crd

ROOT = Path(__file__).resolve().parents[2]
CRD = build_crd()

GITLAB = {"project": "group/web"}
ACK = {"regionId": "cn-beijing", "clusterId": "c5cdf7e3938bc4f8eb0e44b21a80f1234", "projectId": "default/web"}
SWR = {
    "region": "cn-north-4",
    "organization": "group",
    "repository": "web/api",
    "application": "web",
    "clusterNamespace": "default",
    "clusterId": "5b28c12f-1111-2222-3333-0255ac100b05",
}


def trigger(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cloudtriggers.io/v1alpha1",
        "kind": "Trigger",
        "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"credentialsSecretRef": {"name": "creds"}, **spec},
    }


def test_rules_compile_and_schema_is_structural() -> None:
    assert compile_all(CRD) == []
    assert validate_crd(CRD) == []


@pytest.mark.parametrize("block", [{"gitlab": GITLAB}, {"ack": ACK}, {"swr": SWR}])
def test_one_provider_block_is_accepted(block: dict[str, Any]) -> None:
    assert violations(CRD, trigger(**block)) == []


def test_examples_are_accepted() -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Trigger":
                assert violations(CRD, doc) == [], path.name


def _rejected(obj: dict[str, Any], old: dict[str, Any] | None = None) -> str:
    found = violations(CRD, obj, old)
    assert found, "expected the API server to reject this object"
    return "\n".join(found)


def test_zero_or_two_provider_blocks_are_rejected() -> None:
    assert "exactly one provider block" in _rejected(trigger())
    assert "exactly one provider block" in _rejected(trigger(gitlab=GITLAB, ack=ACK))


def test_provider_kind_cannot_change_on_update() -> None:
    old = trigger(gitlab=GITLAB)
    new = trigger(ack=ACK)
    assert "cannot change kind" in _rejected(new, old)
    # Changing fields inside the same block is fine.
    assert violations(CRD, trigger(gitlab={**GITLAB, "description": "x"}), old) == []


def test_immutable_fields() -> None:
    old = trigger(gitlab={**GITLAB, "url": "https://gitlab.example.com"})
    assert "gitlab.url is immutable" in _rejected(
        trigger(gitlab={**GITLAB, "url": "https://other.example.com"}), old
    )
    old_ack = trigger(ack=ACK)
    assert "clusterId is immutable" in _rejected(trigger(ack={**ACK, "clusterId": "cother"}), old_ack)
    # projectId changes are allowed: they are replacements.
    assert violations(CRD, trigger(ack={**ACK, "projectId": "default/other"}), old_ack) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("deletionPolicy", "Keep"),
        ("managementPolicy", "Observe"),
    ],
)
def test_enums(field: str, value: str) -> None:
    assert _rejected(trigger(gitlab=GITLAB, **{field: value}))


def test_enums_in_blocks() -> None:
    assert _rejected(trigger(ack={**ACK, "type": "statefulset"}))
    assert _rejected(trigger(ack={**ACK, "action": "restart"}))
    assert _rejected(trigger(swr={**SWR, "appType": "daemonsets"}))
    assert _rejected(trigger(swr={**SWR, "triggerMode": "ecs"}))


def test_observe_only_needs_external_id_for_gitlab_and_ack_not_swr() -> None:
    assert "ObserveOnly needs spec.externalId" in _rejected(
        trigger(gitlab=GITLAB, managementPolicy="ObserveOnly")
    )
    assert "ObserveOnly needs spec.externalId" in _rejected(trigger(ack=ACK, managementPolicy="ObserveOnly"))
    assert _rejected(trigger(gitlab=GITLAB, managementPolicy="ObserveOnly", externalId=""))
    assert violations(CRD, trigger(gitlab=GITLAB, managementPolicy="ObserveOnly", externalId="10")) == []
    assert violations(CRD, trigger(swr=SWR, managementPolicy="ObserveOnly")) == []


@pytest.mark.parametrize("name", ["All_tags", "web-all-tags", "a", "Tags_regular_expression", "x" * 64])
def test_swr_names_accepted(name: str) -> None:
    assert violations(CRD, trigger(swr={**SWR, "name": name})) == []


@pytest.mark.parametrize("name", ["1web", "-web", "web-", "web__all", "web-_all", "web.all", "", "x" * 65])
def test_swr_names_rejected(name: str) -> None:
    assert _rejected(trigger(swr={**SWR, "name": name}))


def test_swr_rules() -> None:
    no_cluster = {k: v for k, v in SWR.items() if k != "clusterId"}
    assert "needs clusterId or clusterName" in _rejected(trigger(swr=no_cluster))
    assert violations(CRD, trigger(swr={**no_cluster, "triggerMode": "cci"})) == []
    assert "condition" in _rejected(trigger(swr={**SWR, "triggerType": "all", "condition": "v1"}))
    assert violations(CRD, trigger(swr={**SWR, "triggerType": "tag", "condition": "v1;v2"})) == []


@pytest.mark.parametrize(
    "spec",
    [
        {"gitlab": {"project": ""}},
        {"gitlab": {"project": "justaname"}},
        {"gitlab": {**GITLAB, "url": "gitlab.example.com"}},
        {"gitlab": {**GITLAB, "description": ""}},
        {"ack": {**ACK, "regionId": ""}},
        {"ack": {**ACK, "projectId": "web"}},
        {"ack": {**ACK, "endpoint": "cs-vpc.cn-beijing.aliyuncs.com"}},
        {"swr": {**SWR, "organization": "Group"}},
        {"swr": {**SWR, "application": ""}},
        {"gitlab": GITLAB, "resyncPeriod": "ten minutes"},
        {"gitlab": GITLAB, "secretName": "Not_A_Name"},
        {"gitlab": GITLAB, "credentialsSecretRef": {"name": ""}},
    ],
)
def test_bad_strings_are_rejected(spec: dict[str, Any]) -> None:
    obj = trigger(**spec)
    if "credentialsSecretRef" in spec:
        obj["spec"]["credentialsSecretRef"] = spec["credentialsSecretRef"]
    assert _rejected(obj)


def test_defaults_are_applied_like_the_api_server() -> None:
    # celcheck defaults the object as the API server would; the CEL rules must hold on the result.
    obj = trigger(gitlab=GITLAB)
    assert violations(CRD, copy.deepcopy(obj)) == []
    schema = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert schema["deletionPolicy"]["default"] == "Delete"
    assert schema["managementPolicy"]["default"] == "Full"
    assert schema["gitlab"]["properties"]["url"]["default"] == "https://gitlab.com"


def test_readme_trigger_examples_are_accepted() -> None:
    """Every complete Trigger manifest in README.md passes the CRD's schema and CEL rules."""
    import re

    text = (ROOT / "README.md").read_text()
    docs = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    triggers = [d for d in docs if isinstance(d, dict) and d.get("kind") == "Trigger"]
    assert len(triggers) >= 4  # the reference and one per provider
    for doc in triggers:
        assert violations(CRD, doc) == [], doc["metadata"]["name"]
