"""The chart's optional ValidatingAdmissionPolicy: endpoints by namespace class, refused at apply.

Its CEL is evaluated with the engine that checks the CRD's rules (apiserver/cel.py), through
apiserver/admission.py, which words denials as the API server does; the emulated API enforces it
too (tests/deploy/test_install_on_emulator.py applies it with kubectl).
"""

from __future__ import annotations

from typing import Any

import pytest

from cloudtriggers.apiserver.admission import applies, compile_errors, denials
from deploy.deploykit import helm_template, one, schema_errors

CLASSES = {
    "default": ["https://gitlab.com"],
    "internal": [
        "https://gitlab.com",
        "https://*.corp.example:8443",
        "http://sandbox.cloudtriggers-sandbox.svc",
    ],
}
VALUES = {"admissionPolicy": {"enabled": True, "classes": CLASSES}}
POLICY = "cloudtriggers-endpoints"
PREFIX = f"ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: "


@pytest.fixture(scope="module")
def rendered() -> tuple[dict[str, Any], dict[str, Any]]:
    objects = helm_template(VALUES)
    return one(objects, "ValidatingAdmissionPolicy"), one(objects, "ValidatingAdmissionPolicyBinding")


def namespace(cls: str | None = None) -> dict[str, Any]:
    labels = {"kubernetes.io/metadata.name": "apps"}
    if cls is not None:
        labels["cloudtriggers.io/endpoint-class"] = cls
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps", "labels": labels}}


def trigger(block: str, **fields: str) -> dict[str, Any]:
    specs = {
        "gitlab": {"project": "group/web"},
        "ack": {"regionId": "cn-beijing", "clusterId": "c" * 32, "projectId": "default/web"},
        "swr": {"region": "cn-north-4", "organization": "o", "repository": "r", "application": "a"},
    }
    spec = {block: {**specs[block], **fields}, "credentialsSecretRef": {"name": "c"}}
    return {
        "apiVersion": "cloudtriggers.io/v1alpha1",
        "kind": "Trigger",
        "metadata": {"name": "t"},
        "spec": spec,
    }


def test_it_is_off_by_default_and_a_valid_policy_when_on(rendered: Any) -> None:
    assert not [o for o in helm_template({}) if o["kind"].startswith("ValidatingAdmissionPolicy")]
    policy, binding = rendered
    assert schema_errors([policy, binding], versions=("1.35",)) == []
    assert compile_errors(policy) == []
    assert binding["spec"] == {"policyName": POLICY, "validationActions": ["Deny"]}
    assert applies(policy, binding, "cloudtriggers.io", "v1alpha1", "triggers", "CREATE", namespace())
    assert applies(policy, binding, "cloudtriggers.io", "v1alpha1", "triggers", "UPDATE", namespace())
    assert not applies(policy, binding, "cloudtriggers.io", "v1alpha1", "triggers", "DELETE", namespace())
    assert not applies(policy, binding, "", "v1", "secrets", "CREATE", namespace())


@pytest.mark.parametrize(
    ("cls", "obj", "denied"),
    [
        (None, trigger("gitlab"), None),  # no url: https://gitlab.com
        (None, trigger("gitlab", url="https://gitlab.com"), None),
        (None, trigger("gitlab", url="https://GitLab.com/"), None),
        (None, trigger("gitlab", url="https://gitlab.internal.example"), "https://gitlab.internal.example"),
        (None, trigger("gitlab", url="http://gitlab.com"), "http://gitlab.com"),
        (None, trigger("ack"), None),  # the official endpoint
        (None, trigger("ack", endpoint="http://169.254.169.254"), "http://169.254.169.254"),
        (None, trigger("swr", endpoint="https://swr.internal"), "https://swr.internal"),
        ("internal", trigger("gitlab", url="https://git.corp.example:8443"), None),
        ("internal", trigger("gitlab", url="https://a.b.corp.example:8443"), None),
        ("internal", trigger("gitlab", url="https://corp.example:8443"), "https://corp.example:8443"),
        ("internal", trigger("gitlab", url="https://git.corp.example"), "https://git.corp.example"),
        ("internal", trigger("ack", endpoint="http://sandbox.cloudtriggers-sandbox.svc:8931"), None),
        ("internal", trigger("swr", endpoint="https://sandbox.cloudtriggers-sandbox.svc"), "https://sandbox"),
    ],
)
def test_endpoints_by_namespace_class(
    rendered: Any, cls: str | None, obj: dict[str, Any], denied: str | None
) -> None:
    policy, binding = rendered
    got = denials(policy, binding, obj, namespace(cls))
    if denied is None:
        assert got == []
    else:
        [message] = got
        assert message.startswith(PREFIX + "the endpoint " + denied)
        assert message.endswith(f"is not allowed in this namespace (endpoint class {cls or 'default'})")


def test_an_unknown_class_is_refused_by_name(rendered: Any) -> None:
    policy, binding = rendered
    assert denials(policy, binding, trigger("gitlab"), namespace("nope")) == [
        PREFIX
        + "the namespace label cloudtriggers.io/endpoint-class=nope names no endpoint class of this cluster"
    ]


def test_the_schema_refuses_patterns_the_policy_cannot_express() -> None:
    from deploy.deploykit import helm_fails

    for bad in ("https://10.0.0.0/8", "gitlab.com", "https://a.*.example", "https://x/path"):
        assert "/admissionPolicy/classes/default/0" in helm_fails(
            {"admissionPolicy": {"enabled": True, "classes": {"default": [bad]}}}
        )


def test_an_update_that_keeps_the_endpoint_is_admitted(rendered: Any) -> None:
    """A Trigger created before the policy: the operator's finalizer patch and a label change go
    through; a change of the endpoint is checked like a create."""
    policy, binding = rendered
    old = trigger("gitlab", url="https://gitlab.internal.example")
    new = {**old, "metadata": {"name": "t", "finalizers": ["cloudtriggers.io/finalizer"]}}
    assert denials(policy, binding, new, namespace(), old) == []
    moved = trigger("gitlab", url="https://other.internal.example")
    assert len(denials(policy, binding, moved, namespace(), old)) == 1


def test_a_class_that_allows_nothing_refuses_every_endpoint() -> None:
    """An empty class renders as a pattern that never matches: every value of the classes map has
    the same CEL type (a real API server type-checks the map literal)."""
    objects = helm_template(
        {"admissionPolicy": {"enabled": True, "classes": {"default": [], "x": ["https://a.b"]}}}
    )
    policy, binding = (
        one(objects, "ValidatingAdmissionPolicy"),
        one(objects, "ValidatingAdmissionPolicyBinding"),
    )
    classes = next(v["expression"] for v in policy["spec"]["variables"] if v["name"] == "classes")
    assert "'default': [{'s': '-', 'h': '-', 'p': '-'}]" in classes and "[]" not in classes
    assert len(denials(policy, binding, trigger("gitlab"), namespace())) == 1
    assert denials(policy, binding, trigger("ack"), namespace()) == []  # the official endpoint
