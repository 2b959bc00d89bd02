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


def _case(id: str, obj: dict[str, Any], old: dict[str, Any] | None = None, says: str = "") -> Any:
    return pytest.param(obj, old, says, id=id)


_OLD_GITLAB = trigger(gitlab={**GITLAB, "url": "https://gitlab.example.com"})
_NO_CLUSTER = {k: v for k, v in SWR.items() if k != "clusterId"}

# Every manifest the API server must refuse, with what its message says (tests/unit/test_review.py
# checks that `cloudtriggers validate` reports each with the emulated server's own message).
REJECTED = [
    _case("no-provider-block", trigger(), says="exactly one provider block"),
    _case("two-provider-blocks", trigger(gitlab=GITLAB, ack=ACK), says="exactly one provider block"),
    _case("provider-kind-changes", trigger(ack=ACK), trigger(gitlab=GITLAB), says="cannot change kind"),
    _case(
        "gitlab-url-changes",
        trigger(gitlab={**GITLAB, "url": "https://other.example.com"}),
        _OLD_GITLAB,
        says="gitlab.url is immutable",
    ),
    _case(
        "ack-cluster-changes",
        trigger(ack={**ACK, "clusterId": "cother"}),
        trigger(ack=ACK),
        says="clusterId is immutable",
    ),
    _case("deletion-policy-enum", trigger(gitlab=GITLAB, deletionPolicy="Keep")),
    _case("management-policy-enum", trigger(gitlab=GITLAB, managementPolicy="Observe")),
    _case("ack-type-enum", trigger(ack={**ACK, "type": "statefulset"})),
    _case("ack-action-enum", trigger(ack={**ACK, "action": "restart"})),
    _case("swr-app-type-enum", trigger(swr={**SWR, "appType": "daemonsets"})),
    _case("swr-trigger-mode-enum", trigger(swr={**SWR, "triggerMode": "ecs"})),
    _case(
        "gitlab-observe-only-without-id",
        trigger(gitlab=GITLAB, managementPolicy="ObserveOnly"),
        says="ObserveOnly needs spec.externalId",
    ),
    _case(
        "ack-observe-only-without-id",
        trigger(ack=ACK, managementPolicy="ObserveOnly"),
        says="ObserveOnly needs spec.externalId",
    ),
    _case("observe-only-empty-id", trigger(gitlab=GITLAB, managementPolicy="ObserveOnly", externalId="")),
    *(
        _case(f"swr-name-{name or 'empty'}"[:40], trigger(swr={**SWR, "name": name}))
        for name in ["1web", "-web", "web-", "web__all", "web-_all", "web.all", "", "x" * 65]
    ),
    _case("swr-without-cluster", trigger(swr=_NO_CLUSTER), says="needs clusterId or clusterName"),
    _case(
        "swr-condition-for-all",
        trigger(swr={**SWR, "triggerType": "all", "condition": "v1"}),
        says="condition",
    ),
    _case("gitlab-project-empty", trigger(gitlab={"project": ""})),
    _case("gitlab-project-no-group", trigger(gitlab={"project": "justaname"})),
    _case("gitlab-url-no-scheme", trigger(gitlab={**GITLAB, "url": "gitlab.example.com"})),
    _case("gitlab-description-empty", trigger(gitlab={**GITLAB, "description": ""})),
    _case("ack-region-empty", trigger(ack={**ACK, "regionId": ""})),
    _case("ack-project-no-namespace", trigger(ack={**ACK, "projectId": "web"})),
    _case("ack-endpoint-no-scheme", trigger(ack={**ACK, "endpoint": "cs-vpc.cn-beijing.aliyuncs.com"})),
    _case("swr-organization-uppercase", trigger(swr={**SWR, "organization": "Group"})),
    _case("swr-application-empty", trigger(swr={**SWR, "application": ""})),
    _case("resync-period-words", trigger(gitlab=GITLAB, resyncPeriod="ten minutes")),
    _case("secret-name-not-dns", trigger(gitlab=GITLAB, secretName="Not_A_Name")),
    _case(
        "credentials-ref-empty",
        {**trigger(gitlab=GITLAB), "spec": {"gitlab": GITLAB, "credentialsSecretRef": {"name": ""}}},
    ),
]


@pytest.mark.parametrize(("obj", "old", "says"), REJECTED)
def test_rejected(obj: dict[str, Any], old: dict[str, Any] | None, says: str) -> None:
    found = violations(CRD, copy.deepcopy(obj), copy.deepcopy(old))
    assert found, "expected the API server to reject this object"
    assert says in "\n".join(found)


def test_changing_fields_inside_the_same_block_is_fine() -> None:
    assert violations(CRD, trigger(gitlab={**GITLAB, "description": "x"}), trigger(gitlab=GITLAB)) == []
    # projectId changes are allowed: they are replacements.
    assert violations(CRD, trigger(ack={**ACK, "projectId": "default/other"}), trigger(ack=ACK)) == []


def test_observe_only_with_an_id_is_fine_and_swr_needs_none() -> None:
    assert violations(CRD, trigger(gitlab=GITLAB, managementPolicy="ObserveOnly", externalId="10")) == []
    assert violations(CRD, trigger(swr=SWR, managementPolicy="ObserveOnly")) == []


@pytest.mark.parametrize("name", ["All_tags", "web-all-tags", "a", "Tags_regular_expression", "x" * 64])
def test_swr_names_accepted(name: str) -> None:
    assert violations(CRD, trigger(swr={**SWR, "name": name})) == []


def test_swr_rules_that_pass() -> None:
    assert violations(CRD, trigger(swr={**_NO_CLUSTER, "triggerMode": "cci"})) == []
    assert violations(CRD, trigger(swr={**SWR, "triggerType": "tag", "condition": "v1;v2"})) == []


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


def _containers(value: Any) -> list[Any]:
    found: list[Any] = []
    if isinstance(value, dict):
        found.append(value)
        for v in value.values():
            found += _containers(v)
    elif isinstance(value, list):
        found.append(value)
        for v in value:
            found += _containers(v)
    return found


def test_the_object_admitted_shares_nothing_mutable_with_the_write_or_the_schema() -> None:
    # What the emulated API server stores must not change when the client's body, the schema's
    # defaults or the old object are changed later (the API server decodes each write anew).
    from cloudtriggers.apiserver.cel import admit

    posted = trigger(gitlab=dict(GITLAB), rotation={"overlap": "1h"})
    posted["metadata"]["labels"] = {"team": "web"}
    posted["metadata"]["finalizers"] = ["cloudtriggers.io/finalizer"]
    schema_before = copy.deepcopy(CRD)
    stored = admit(CRD, posted).body
    assert stored["spec"]["gitlab"]["project"] == "group/web" and stored["metadata"]["labels"] == {
        "team": "web"
    }
    theirs = {id(c) for c in _containers(posted) + _containers(CRD)}
    assert not [c for c in _containers(stored) if id(c) in theirs]
    stored["spec"]["gitlab"]["project"] = "other/x"
    stored["metadata"]["labels"]["team"] = "x"
    assert schema_before == CRD and posted["spec"]["gitlab"]["project"] == "group/web"


def test_pruning_copies_defaults_and_kept_unknown_fields_once_and_recurses_into_defaults() -> None:
    # apiextensions-apiserver's structural defaulting applies defaults inside a defaulted object too.
    from cloudtriggers.apiserver.cel import _prune_and_default

    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "opts": {
                "type": "object",
                "default": {"tags": ["a"]},
                "properties": {"tags": {"type": "array", "items": {"type": "string"}}, "n": {"default": 3}},
            },
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    value: dict[str, Any] = {"free": {"deep": {"list": [1, {"k": "v"}]}}, "gone": {"x": 1}}
    schema_before, value_before = copy.deepcopy(schema), copy.deepcopy(value)
    unknown: list[str] = []
    out = _prune_and_default(schema, value, "", unknown, root=True)
    assert out == {"free": {"deep": {"list": [1, {"k": "v"}]}}, "opts": {"tags": ["a"], "n": 3}}
    assert unknown == ["gone"]
    theirs = {id(c) for c in _containers(value) + _containers(schema)}
    assert not [c for c in _containers(out) if id(c) in theirs]
    out["opts"]["tags"].append("b")
    out["free"]["deep"]["list"][1]["k"] = "w"
    assert schema == schema_before and value == value_before


def test_a_rule_that_reads_a_few_fields_sees_only_them_and_gives_the_same_answer() -> None:
    # The emulated API's CEL is an interpreter (~0.3-1 ms a rule): a rule on the whole object that
    # reads three fields is evaluated on those fields only, and cached by them, so status writes
    # (which change none of them) do not evaluate it again. The answer must not change.
    from cloudtriggers.apiserver import cel

    root_rule = str(
        CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"][0]["rule"]
    )
    assert cel._compile(root_rule).paths == frozenset(
        {("spec", "swr"), ("spec", "secretName"), ("metadata", "name")}
    )
    assert cel._compile("self == oldSelf").paths is None  # self read whole: nothing projected
    assert cel._compile("size(self) > 0").paths is None
    assert cel._compile("self.a[0].b == 1").paths == frozenset({("a",)})  # the chain stops at an index
    assert cel._compile("self.foo__dash__bar == 1").paths is None  # escaped names: left whole
    assert cel.project({"a": {"b": 1, "c": 2}, "d": 3}, frozenset({("a", "b")})) == {"a": {"b": 1}}
    assert cel.project({"a": {"b": 1, "c": 2}}, frozenset({("a", "b"), ("a",)})) == {"a": {"b": 1, "c": 2}}

    long = trigger(gitlab=GITLAB)
    long["metadata"]["name"] = "w" * 246
    says = violations(CRD, long)
    assert len(says) == 1 and says[0].startswith("<root>: metadata.name is longer than 245 characters")
    assert violations(CRD, {**long, "spec": {**long["spec"], "secretName": "web-token"}}) == []

    evaluated: list[str] = []
    real = cel._evaluate

    def counting(compiled: Any, activation: Any) -> Any:
        evaluated.append(compiled.source)
        return real(compiled, activation)

    ok = trigger(gitlab=GITLAB)
    ok["metadata"]["name"] = "counted-" + "x" * 20
    mp = pytest.MonkeyPatch()
    mp.setattr(cel, "_evaluate", counting)
    try:
        ok = cel.admit(CRD, ok).body
        for n in range(3):  # status writes: only the status changes
            new = copy.deepcopy(ok)
            new["status"] = {"externalId": str(n)}
            admitted = cel.admit(CRD, new, ok, status_write=True)
            assert admitted.errors == []
            ok = admitted.body
    finally:
        mp.undo()
    assert evaluated.count(root_rule) == 1
