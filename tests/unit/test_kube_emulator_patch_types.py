"""The emulated API server picks a PATCH's patch type from its Content-Type, never from the body's
shape, and refuses the types the resource does not take, as kube-apiserver does.

What a real server does, from kubernetes/kubernetes:

* staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go, ``PatchResource``: the patch type is
  ``types.PatchType(contentType)`` with anything from the first ``;`` removed ("Remove "; charset="
  if included in header"); a type not in the resource's ``patchTypes`` is answered with
  ``negotiation.NewUnsupportedMediaTypeError(patchTypes)`` before anything else is looked at.
  ``applyJSPatch``: a JSON patch that does not decode as a list of operations is 400 BadRequest; a
  merge patch that is not an object replaces the whole object (RFC 7386), which then does not decode
  (422 Invalid). ``strategicPatchObject``: a strategic merge patch that is not an object is 400.
* staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/customresource_handler.go, ``ServeHTTP``:
  a custom resource takes application/json-patch+json, application/merge-patch+json and
  application/apply-patch+yaml only, so a strategic merge patch of a Trigger is 415 with the Status
  message "the body of the request was in an unknown format - accepted media types include:
  application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
  (staging/src/k8s.io/apiserver/pkg/endpoints/handlers/negotiation/errors.go).
* staging/src/k8s.io/apiserver/pkg/endpoints/installer.go: a built-in kind's PATCH route also takes
  application/strategic-merge-patch+json; go-restful refuses any other Content-Type (a missing one
  too) with "415: Unsupported Media Type", wrapped in a Status (reason UnsupportedMediaType).

The emulator approximates a strategic merge patch by a JSON merge patch (list merge keys and
``$patch`` directives are not modelled) and does not model server-side apply.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from kubernetes.client import CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from cloudtriggers.sandbox.kube import TRIGGERS, KubeServer, kube_client

GROUP, VERSION, PLURAL = "cloudtriggers.io", "v1alpha1", "triggers"
NS = "default"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
CUSTOM_415 = (
    "the body of the request was in an unknown format - accepted media types include: "
    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
)


@pytest.fixture()
def kube() -> Iterator[KubeServer]:
    server = KubeServer().start()
    try:
        trigger = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Trigger",
            "metadata": {"name": "web", "labels": {"keep": "yes"}},
            "spec": {"gitlab": {"project": "team/prod"}, "credentialsSecretRef": {"name": "gl"}},
        }
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "gl", "labels": {"keep": "yes", "drop": "me"}},
            "stringData": {"token": "t1"},
        }
        collections = {
            f"{server.url}/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}": trigger,
            f"{server.url}/api/v1/namespaces/{NS}/secrets": secret,
        }
        for url, body in collections.items():
            answer = requests.post(url, json=body, timeout=5)
            assert answer.status_code == 201, answer.text
        yield server
    finally:
        server.stop()


def trigger_url(kube: KubeServer, name: str = "web") -> str:
    return f"{kube.url}/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}/{name}"


def secret_url(kube: KubeServer, name: str = "gl") -> str:
    return f"{kube.url}/api/v1/namespaces/{NS}/secrets/{name}"


def patch(url: str, body: Any, content_type: str | None) -> requests.Response:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return requests.patch(url, data=json.dumps(body).encode(), headers=headers, timeout=5)


def stored_trigger(kube: KubeServer) -> dict[str, Any]:
    obj = kube.get(TRIGGERS, NS, "web")
    assert obj is not None
    return obj


def assert_415(answer: requests.Response, message: str) -> None:
    assert answer.status_code == 415, answer.text
    status = answer.json()
    assert (status["kind"], status["status"], status["code"]) == ("Status", "Failure", 415)
    assert status["reason"] == "UnsupportedMediaType"
    assert status["message"] == message


@pytest.mark.parametrize("content_type", [MERGE_PATCH, f"{MERGE_PATCH}; charset=utf-8"])
def test_a_merge_patch_of_a_trigger_is_applied_by_its_content_type(
    kube: KubeServer, content_type: str
) -> None:
    answer = patch(trigger_url(kube), {"metadata": {"labels": {"team": "a", "keep": None}}}, content_type)
    assert answer.status_code == 200, answer.text
    assert stored_trigger(kube)["metadata"]["labels"] == {"team": "a"}


def test_a_json_patch_of_a_trigger_is_applied_by_its_content_type(kube: KubeServer) -> None:
    ops = [{"op": "add", "path": "/metadata/labels/team", "value": "a"}]
    answer = patch(trigger_url(kube), ops, f"{JSON_PATCH};charset=utf-8")
    assert answer.status_code == 200, answer.text
    assert stored_trigger(kube)["metadata"]["labels"] == {"keep": "yes", "team": "a"}


def test_a_json_patch_array_sent_as_a_merge_patch_is_not_taken_for_operations(kube: KubeServer) -> None:
    """RFC 7386: the array would replace the whole object, which then is no object: 422 Invalid."""
    before = stored_trigger(kube)
    ops = [{"op": "add", "path": "/metadata/labels/team", "value": "a"}]
    answer = patch(trigger_url(kube), ops, MERGE_PATCH)
    assert answer.status_code == 422, answer.text
    assert answer.json()["reason"] == "Invalid"
    assert answer.json()["message"].startswith(' "" is invalid: patch: Invalid value: "[{')
    assert stored_trigger(kube) == before


def test_a_merge_patch_object_sent_as_a_json_patch_is_refused(kube: KubeServer) -> None:
    before = stored_trigger(kube)
    answer = patch(trigger_url(kube), {"metadata": {"labels": {"team": "a"}}}, JSON_PATCH)
    assert answer.status_code == 400, answer.text
    assert answer.json()["reason"] == "BadRequest"
    assert answer.json()["message"] == "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
    assert stored_trigger(kube) == before


@pytest.mark.parametrize("subresource", ["", "/status"])
def test_a_strategic_merge_patch_of_a_trigger_is_415(kube: KubeServer, subresource: str) -> None:
    before = stored_trigger(kube)
    body = {"metadata": {"labels": {"team": "a"}}, "status": {"externalId": "7"}}
    assert_415(patch(trigger_url(kube) + subresource, body, STRATEGIC), CUSTOM_415)
    assert stored_trigger(kube) == before


def test_the_content_type_is_checked_before_the_object_is_looked_up(kube: KubeServer) -> None:
    assert_415(patch(trigger_url(kube, "absent"), {"metadata": {}}, STRATEGIC), CUSTOM_415)
    assert patch(trigger_url(kube, "absent"), {"metadata": {}}, MERGE_PATCH).status_code == 404


def test_a_strategic_merge_patch_of_a_secret_is_applied(kube: KubeServer) -> None:
    body = {"metadata": {"labels": {"team": "a", "drop": None}}, "stringData": {"token": "t2"}}
    answer = patch(secret_url(kube), body, f"{STRATEGIC}; charset=utf-8")
    assert answer.status_code == 200, answer.text
    secret = kube.get("v1/secrets", NS, "gl")
    assert secret is not None
    assert secret["metadata"]["labels"] == {"keep": "yes", "team": "a"}  # null deleted "drop"
    assert secret["data"] == {"token": "dDI="}


def test_a_strategic_merge_patch_that_is_not_an_object_is_400(kube: KubeServer) -> None:
    answer = patch(secret_url(kube), [{"op": "remove", "path": "/metadata/labels"}], STRATEGIC)
    assert answer.status_code == 400, answer.text
    assert answer.json()["reason"] == "BadRequest"


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "text/plain", "application/apply-patch+cbor"]
)
def test_a_patch_without_a_patch_content_type_is_415(kube: KubeServer, content_type: str | None) -> None:
    """A missing Content-Type too: requests sends none for a bytes body unless told."""
    trigger_before, secret_before = stored_trigger(kube), kube.get("v1/secrets", NS, "gl")
    body = {"metadata": {"labels": {"team": "a"}}}
    assert_415(patch(trigger_url(kube), body, content_type), CUSTOM_415)
    assert_415(patch(secret_url(kube), body, content_type), "415: Unsupported Media Type")
    assert stored_trigger(kube) == trigger_before
    assert kube.get("v1/secrets", NS, "gl") == secret_before


def test_server_side_apply_is_not_refused_as_an_unsupported_media_type(kube: KubeServer) -> None:
    """A real server takes application/apply-patch+yaml; the emulator does not model server-side
    apply and applies a JSON body by its shape, as it did before Content-Types counted."""
    answer = patch(trigger_url(kube), {"metadata": {"labels": {"team": "a"}}}, "application/apply-patch+yaml")
    assert answer.status_code == 200, answer.text


def test_what_the_kubernetes_client_sends_is_accepted(kube: KubeServer) -> None:
    """kubernetes-client python 37: ``patch_namespaced_custom_object`` sends
    application/merge-patch+json whatever the body (custom_objects_api.py); ``patch_namespaced_secret``
    selects application/json-patch+json, which rest.py turns into a strategic merge patch for a body
    that is not a list. So an operations list needs ``_content_type`` for a custom object."""
    with kube_client(kube.url) as api:
        custom, core = CustomObjectsApi(api), CoreV1Api(api)
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "web", {"metadata": {"labels": None}}
        )
        core.patch_namespaced_secret("gl", NS, {"metadata": {"labels": {"drop": None}}})
        ops = [{"op": "add", "path": "/metadata/labels", "value": {"team": "a"}}]
        with pytest.raises(ApiException) as refused:
            custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "web", ops)
        assert refused.value.status == 422  # sent as a merge patch: not operations
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, "web", ops, _content_type=JSON_PATCH
        )
        core.patch_namespaced_secret("gl", NS, [{"op": "remove", "path": "/metadata/labels/keep"}])
    assert stored_trigger(kube)["metadata"]["labels"] == {"team": "a"}
    secret = kube.get("v1/secrets", NS, "gl")
    assert secret is not None and not secret["metadata"].get("labels")


def test_header_names_are_case_insensitive(kube: KubeServer) -> None:
    """HTTP header names are case-insensitive (RFC 9110 §5.1), and Go's net/http canonicalises them:
    a client that spells them in lower case (HTTP/2 always does) gets what any other gets."""
    body = json.dumps({"metadata": {"labels": {"team": "a"}}})
    answer = requests.patch(trigger_url(kube), data=body, headers={"content-type": MERGE_PATCH}, timeout=5)
    assert answer.status_code == 200, answer.text
    assert stored_trigger(kube)["metadata"]["labels"]["team"] == "a"
    protobuf = requests.post(
        f"{kube.url}/api/v1/namespaces/{NS}/secrets",
        data=b"\x6b\x38\x73\x00",
        headers={"content-type": "application/vnd.kubernetes.protobuf"},
        timeout=5,
    )
    assert protobuf.status_code == 415 and "JSON bodies only" in protobuf.text
