"""What the emulated API refuses and does because a real kube-apiserver refuses and does it.

Each test names the Kubernetes source it copies:
* CRDs: k8s.io/apiextensions-apiserver pkg/apis/apiextensions/validation (create/update checks),
  pkg/controller/{naming,establish} (status), pkg/registry/customresourcedefinition/etcd.go and
  pkg/controller/finalizer/crd_finalizer.go (two-phase deletion).
* Custom resources: pkg/apiserver/schema (pruning, defaulting), pkg/apiserver/schema/cel
  (validation.go fieldErrorForReason), pkg/registry/customresource/validator.go (metadata.name),
  k8s.io/apiserver's strict field validation ("strict decoding error: unknown field ...").
* Namespaces: pkg/registry/core/namespace (strategy, two-phase delete), plugin/pkg/admission/
  namespace/lifecycle (404 / 403 / immortal namespaces), pkg/controller/namespace/deletion
  (content deletion, requeue, the ``kubernetes`` finalizer).
* apimachinery pkg/api/validation/objectmeta.go ValidateObjectMetaAccessor(Update) (name, labels,
  annotations, owner references, finalizers; no new finalizers on an object being deleted), run on
  every write by apiserver registry/rest create.go and update.go; pkg/apis/core/validation
  ValidateSecret(Update); storage/names (generateName); server/config.go MaxRequestBodyBytes;
  pkg/controller/garbagecollector (dependents of absent owners are deleted).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any, cast

import kubernetes
import pytest
import requests
from kubernetes.client import (
    ApiextensionsV1Api,
    CoreV1Api,
    CoreV1Event,
    CustomObjectsApi,
    V1CustomResourceDefinition,
    V1Namespace,
    V1ObjectMeta,
    V1Secret,
)
from kubernetes.client.exceptions import ApiException

from cloudtriggers.crd import build_crd
from cloudtriggers.sandbox.kube import TRIGGERS, ClusterEmulator, KubeServer, kube_client
from cloudtriggers.sandbox.local import wait_for
from unit.test_models import SWR

GROUP, VERSION, PLURAL = "cloudtriggers.io", "v1alpha1", "triggers"
CRD_NAME = "triggers.cloudtriggers.io"


@pytest.fixture()
def kube() -> Iterator[KubeServer]:
    with KubeServer(ClusterEmulator(namespace_requeue=0.05, namespace_seed=7)) as server:
        yield server


@pytest.fixture()
def bare() -> Iterator[KubeServer]:
    """No CRD installed: the test installs it as kubectl would."""
    with KubeServer(install_crd=False) as server:
        yield server


@pytest.fixture()
def api(kube: KubeServer) -> Iterator[kubernetes.client.ApiClient]:
    with kube_client(kube.url) as client:
        yield client


def status_of(e: ApiException) -> dict[str, Any]:
    assert e.body is not None
    return dict(json.loads(e.body))


def meta_of(obj: V1Namespace) -> V1ObjectMeta:
    assert obj.metadata is not None
    return obj.metadata


def stored(kube: KubeServer, gvp: str, namespace: str, name: str) -> dict[str, Any]:
    """The object the emulated API holds: the test fails where there is none."""
    obj = kube.get(gvp, namespace, name)
    assert obj is not None, f"{gvp} {namespace}/{name} does not exist"
    return obj


def trigger(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": spec or {"gitlab": {"url": "https://gitlab.example.com", "project": "group/web"}},
    }


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


# -- CRDs -------------------------------------------------------------------------------------------


def test_a_crd_a_real_server_refuses_is_refused_with_its_message(bare: KubeServer) -> None:
    # validation.go validateCustomResourceDefinitionOpenAPISchema: at the root, metadata may only be
    # {type: object} (and restrictions on name/generateName) -- the defect a real cluster found.
    crd = build_crd()
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    root["properties"]["metadata"] = {"type": "object", "description": "standard object metadata"}
    with kube_client(bare.url) as client, pytest.raises(ApiException) as refused:
        ApiextensionsV1Api(client).create_custom_resource_definition(
            V1CustomResourceDefinition.model_validate(crd)
        )
    assert refused.value.status == 422
    status = status_of(refused.value)
    assert status["reason"] == "Invalid" and status["details"]["kind"] == "CustomResourceDefinition"
    assert status["message"] == (
        'CustomResourceDefinition.apiextensions.k8s.io "triggers.cloudtriggers.io" is invalid: '
        "spec.validation.openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other "
        "than name and generateName, but metadata is implicitly specified"
    )
    assert bare.get("apiextensions.k8s.io/v1/customresourcedefinitions", None, CRD_NAME) is None
    # Nothing is served for a refused CRD.
    assert (
        requests.get(f"{bare.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}", timeout=5).status_code
        == 404
    )


def test_an_update_that_breaks_the_crd_is_refused_and_the_old_one_stays(kube: KubeServer) -> None:
    with kube_client(kube.url) as client:
        ext = ApiextensionsV1Api(client)
        current = ext.read_custom_resource_definition(CRD_NAME).to_dict()
        broken = copy.deepcopy(build_crd())
        broken["metadata"]["resourceVersion"] = current["metadata"]["resource_version"]
        broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].pop("type")
        with pytest.raises(ApiException) as refused:
            ext.replace_custom_resource_definition(
                CRD_NAME, V1CustomResourceDefinition.model_validate(broken)
            )
        assert refused.value.status == 422
        assert (
            "spec.validation.openAPIV3Schema.properties[spec].type: Required value"
            in status_of(refused.value)["message"]
        )
        stored = kube.get("apiextensions.k8s.io/v1/customresourcedefinitions", None, CRD_NAME)
        assert stored is not None and stored["spec"] == build_crd()["spec"]


def test_a_stored_crd_is_established_and_served(bare: KubeServer) -> None:
    # naming controller: acceptedNames + NamesAccepted; establishing controller: Established;
    # strategy PrepareForCreate: storedVersions = [the storage version].
    with kube_client(bare.url) as client:
        ApiextensionsV1Api(client).create_custom_resource_definition(
            V1CustomResourceDefinition.model_validate(build_crd())
        )
    crd = bare.get("apiextensions.k8s.io/v1/customresourcedefinitions", None, CRD_NAME)
    assert crd is not None
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert crd["status"]["acceptedNames"]["kind"] == "Trigger"
    assert crd["status"]["storedVersions"] == [VERSION]
    listed = requests.get(f"{bare.url}/apis/{GROUP}/{VERSION}", timeout=5).json()
    assert {r["name"] for r in listed["resources"]} == {PLURAL, f"{PLURAL}/status"}


def test_deleting_the_crd_deletes_every_trigger_then_itself(kube: KubeServer, api: Any) -> None:
    # etcd.go Delete: finalizer customresourcecleanup + Terminating; crd_finalizer.go: instances are
    # deleted (each keeps its own finalizers), the CRD goes when none is left; creates answer 405.
    custom = CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, trigger("free"))
    held = trigger("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, held)
    ApiextensionsV1Api(api).delete_custom_resource_definition(CRD_NAME)
    wait_for(lambda: kube.get(TRIGGERS, "default", "free") is None, what="free deleted")
    crd = kube.get("apiextensions.k8s.io/v1/customresourcedefinitions", None, CRD_NAME)
    assert crd is not None and "customresourcecleanup.apiextensions.k8s.io" in crd["metadata"]["finalizers"]
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Terminating"] == "True"
    assert (kube.get(TRIGGERS, "default", "held") or {})["metadata"].get("deletionTimestamp")
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, trigger("late"))
    assert refused.value.status == 405
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "held", {"metadata": {"finalizers": None}}
    )
    wait_for(
        lambda: kube.get("apiextensions.k8s.io/v1/customresourcedefinitions", None, CRD_NAME) is None,
        what="CRD gone",
    )
    assert requests.get(f"{kube.url}/apis/{GROUP}/{VERSION}/{PLURAL}", timeout=5).status_code == 404


# -- custom resources -------------------------------------------------------------------------------


def test_an_invalid_trigger_is_refused_with_the_servers_message(api: Any) -> None:
    custom = CustomObjectsApi(api)
    bad = trigger("web", gitlab={"url": "ftp://gitlab.example.com", "project": "group/web"})
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, bad)
    status = status_of(refused.value)
    assert refused.value.status == 422 and status["reason"] == "Invalid"
    assert status["message"].startswith(
        'Trigger.cloudtriggers.io "web" is invalid: spec.gitlab.url: Invalid value: "ftp://'
    )
    assert status["details"]["causes"][0]["field"] == "spec.gitlab.url"
    # A CEL rule: fieldErrorForReason(fldPath, sts.Type, message, reason) -> Invalid value: "object".
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, trigger("none", credentialsSecretRef={"name": "x"})
        )
    assert status_of(refused.value)["message"] == (
        'Trigger.cloudtriggers.io "none" is invalid: spec: Invalid value: "object": '
        "exactly one provider block (gitlab, ack or swr) must be set"
    )
    # validator.go: metadata.name is a DNS-1123 subdomain.
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, trigger("Web_1"))
    assert (
        'metadata.name: Invalid value: "Web_1": a lowercase RFC 1123 subdomain'
        in status_of(refused.value)["message"]
    )


def test_a_trigger_with_several_errors_is_refused_as_new_invalid_writes_it() -> None:
    """apimachinery/pkg/api/errors NewInvalid: one cause per error (type, ErrorBody(), field), the
    message `<Kind>.<group> "<name>" is invalid: ` and ErrorList.ToAggregate() (one error as-is,
    several as [e1, e2], a repeated text once); details name, group, kind, causes in that order.
    The same builder as the CRD and metadata refusals (crd_validation.invalid)."""
    from cloudtriggers.apiserver.resources import Refused, admit

    bad = trigger("web", gitlab={"url": "ftp://gitlab.example.com", "project": "group/web"})
    bad["spec"]["gitlab"]["description"] = "x" * 300
    bad["spec"]["resyncPeriod"] = "soon"
    with pytest.raises(Refused) as refused:
        admit(build_crd(), bad, None, VERSION, strict=False)
    status = refused.value.status
    causes = status["details"]["causes"]
    assert [(c["reason"], c["field"]) for c in causes] == [
        ("FieldValueInvalid", "spec.gitlab.url"),
        ("FieldValueTooLong", "spec.gitlab.description"),
        ("FieldValueInvalid", "spec.resyncPeriod"),
    ]
    assert causes[2]["message"].startswith('Invalid value: "soon": spec.resyncPeriod in body should match')
    texts = [f"{c['field']}: {c['message']}" for c in causes]
    assert status["message"] == 'Trigger.cloudtriggers.io "web" is invalid: [' + ", ".join(texts) + "]"
    assert list(status["details"]) == ["name", "group", "kind", "causes"]
    assert (status["code"], status["reason"], status["status"]) == (422, "Invalid", "Failure")


def test_a_field_error_read_back_from_its_text_renders_the_same() -> None:
    from cloudtriggers.apiserver.crd_validation import FieldError

    for text, reason in [
        ('spec.x: Invalid value: "object": exactly one provider block', "FieldValueInvalid"),
        ("spec.items[0].name: Required value", "FieldValueRequired"),
        ("spec.y: Forbidden: may not be set", "FieldValueForbidden"),
        ('spec.z: Unsupported value: "c": supported values: "a", "b"', "FieldValueNotSupported"),
        ("spec.l: Too many: 3: must have at most 2 items", "FieldValueTooMany"),
    ]:
        error = FieldError.parse(text)
        assert (str(error), error.reason, error.field) == (text, reason, text.split(": ")[0])
    with pytest.raises(ValueError):
        FieldError.parse("spec.x: something else")


def test_unknown_fields_are_pruned_or_refused_under_strict_validation_and_defaults_apply(
    kube: KubeServer, api: Any
) -> None:
    body = trigger("web")
    body["spec"]["gitlab"]["colour"] = "blue"
    body["status"] = {"externalId": "forged"}  # the status subresource: ignored on create
    url = f"{kube.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
    strict = requests.post(url, params={"fieldValidation": "Strict"}, json=body, timeout=5)
    assert strict.status_code == 400
    assert strict.json()["message"] == 'strict decoding error: unknown field "spec.gitlab.colour"'
    CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
    stored = kube.get(TRIGGERS, "default", "web")
    assert stored is not None
    assert "colour" not in stored["spec"]["gitlab"]  # pruned
    assert "status" not in stored
    assert stored["spec"]["deletionPolicy"] == "Delete"  # the schema's default


def test_status_writes_are_validated_against_the_status_schema(kube: KubeServer, api: Any) -> None:
    custom = CustomObjectsApi(api)
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, trigger("web"))
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "web", {"status": {"externalId": "7", "phase": "Ready"}}
    )
    stored = kube.get(TRIGGERS, "default", "web")
    assert stored is not None and stored["status"] == {"externalId": "7"}  # phase is not in the schema


# -- namespaces -------------------------------------------------------------------------------------


def test_every_cluster_has_its_namespaces_and_a_new_one_is_active(kube: KubeServer, api: Any) -> None:
    core = CoreV1Api(api)
    names = {meta_of(n).name for n in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    created = core.create_namespace(V1Namespace.model_validate(namespace("team-a")))
    assert created.spec is not None and created.status is not None
    assert created.spec.finalizers == ["kubernetes"] and created.status.phase == "Active"
    assert meta_of(created).labels == {"kubernetes.io/metadata.name": "team-a"}
    with pytest.raises(ApiException) as refused:
        core.create_namespace(V1Namespace.model_validate(namespace("Team_A")))
    assert refused.value.status == 422


def test_nothing_is_created_in_a_namespace_that_does_not_exist(api: Any) -> None:
    with pytest.raises(ApiException) as refused:
        CoreV1Api(api).create_namespaced_secret(
            "nowhere", V1Secret.model_validate({"metadata": {"name": "s"}})
        )
    assert refused.value.status == 404
    assert status_of(refused.value)["message"] == 'namespaces "nowhere" not found'


def test_immortal_namespaces_cannot_be_deleted(api: Any) -> None:
    for name in ("default", "kube-system", "kube-public"):
        with pytest.raises(ApiException) as refused:
            CoreV1Api(api).delete_namespace(name)
        assert refused.value.status == 403
        assert (
            status_of(refused.value)["message"]
            == f'namespaces "{name}" is forbidden: this namespace may not be deleted'
        )


def test_a_terminating_namespace_refuses_new_content_events_included(kube: KubeServer, api: Any) -> None:
    core = CoreV1Api(api)
    core.create_namespace(V1Namespace.model_validate(namespace("team-a")))
    held = {"metadata": {"name": "keep", "finalizers": ["example.com/hold"]}}
    core.create_namespaced_secret("team-a", V1Secret.model_validate(held))
    core.delete_namespace("team-a")
    ns = core.read_namespace("team-a")
    assert ns.status is not None
    assert ns.status.phase == "Terminating" and meta_of(ns).deletion_timestamp
    for create, name in (
        (
            lambda: core.create_namespaced_secret(
                "team-a", V1Secret.model_validate({"metadata": {"name": "new"}})
            ),
            "secrets",
        ),
        (
            lambda: core.create_namespaced_event(
                "team-a",
                CoreV1Event.model_validate({"metadata": {"generateName": "x."}, "involvedObject": {}}),
            ),
            "events",
        ),
    ):
        with pytest.raises(ApiException) as refused:
            create()
        assert refused.value.status == 403
        message = status_of(refused.value)["message"]
        assert message.startswith(f'{name} "')
        assert message.endswith(
            "is forbidden: unable to create new content in namespace team-a because it is being terminated"
        )
        # The cause clients test for (client-go: HasStatusCause(err, NamespaceTerminatingCause)).
        assert status_of(refused.value)["details"]["causes"] == [
            {
                "reason": "NamespaceTerminating",
                "message": "namespace team-a is being terminated",
                "field": "metadata.namespace",
            }
        ]
    # Updates are still allowed (a finalizer can be removed), but no finalizer may be added.
    with pytest.raises(ApiException) as refused:
        core.patch_namespaced_secret(
            "keep", "team-a", {"metadata": {"finalizers": ["example.com/hold", "x.io/more"]}}
        )
    assert refused.value.status == 422
    assert status_of(refused.value)["message"] == (
        'Secret "keep" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the '
        'object is being deleted, found new finalizers []string{"x.io/more"}'
    )


def test_the_namespace_controller_deletes_the_content_then_the_namespace(kube: KubeServer, api: Any) -> None:
    core = CoreV1Api(api)
    custom = CustomObjectsApi(api)
    core.create_namespace(V1Namespace.model_validate(namespace("team-a")))
    core.create_namespaced_secret("team-a", V1Secret.model_validate({"metadata": {"name": "free"}}))
    core.create_namespaced_secret(
        "team-a", V1Secret.model_validate({"metadata": {"name": "keep", "finalizers": ["example.com/hold"]}})
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, "team-a", PLURAL, trigger("web"))
    core.delete_namespace("team-a")
    wait_for(
        lambda: not kube.get("v1/secrets", "team-a", "free") and not kube.get(TRIGGERS, "team-a", "web"),
        what="free content deleted",
    )
    # A finalizer keeps its object, and the object keeps the namespace, requeue after requeue.
    time.sleep(0.5)  # several requeues at namespace_requeue=0.05 (8 s x 0.05)
    ns = kube.get("v1/namespaces", None, "team-a")
    assert ns is not None and ns["spec"]["finalizers"] == ["kubernetes"]
    remaining = {c["type"]: c for c in ns["status"]["conditions"]}
    assert remaining["NamespaceFinalizersRemaining"]["message"].endswith("example.com/hold")
    core.patch_namespaced_secret("keep", "team-a", {"metadata": {"finalizers": None}})
    wait_for(lambda: kube.get("v1/namespaces", None, "team-a") is None, what="namespace gone")
    orders = kube.emulator.namespace_orders
    assert orders and all(name == "team-a" and seed == 7 for name, seed, _ in orders)
    assert "v1/secrets" in orders[0][2] and f"{GROUP}/{VERSION}/{PLURAL}" in orders[0][2]


def test_the_deletion_order_follows_the_seed() -> None:
    def order(seed: int) -> list[str]:
        with KubeServer(ClusterEmulator(namespace_seed=seed, namespace_requeue=0.05)) as server:
            with kube_client(server.url) as client:
                CoreV1Api(client).create_namespace(V1Namespace.model_validate(namespace("x")))
                CoreV1Api(client).delete_namespace("x")
            wait_for(lambda: server.get("v1/namespaces", None, "x") is None, what="x gone")
            return server.emulator.namespace_orders[0][2]

    assert order(1) == order(1)
    assert order(1) != order(2)


def test_a_dependent_of_an_absent_owner_is_collected(kube: KubeServer, api: Any) -> None:
    # garbagecollector.attemptToDeleteItem: all owners absent (by uid) -> the dependent is deleted.
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Trigger", "name": "gone", "uid": "0000-absent"}
    CoreV1Api(api).create_namespaced_secret(
        "default", V1Secret.model_validate({"metadata": {"name": "orphan", "ownerReferences": [owner]}})
    )
    wait_for(lambda: kube.get("v1/secrets", "default", "orphan") is None, what="orphan collected")


def test_openapi_v3_says_the_server_validates_fields(kube: KubeServer) -> None:
    # cli-runtime QueryParamVerifierV3: a PATCH with the kind's x-kubernetes-group-version-kind and a
    # fieldValidation query parameter means "send fieldValidation=Strict, the server checks".
    root = requests.get(f"{kube.url}/openapi/v3", timeout=5).json()
    ref = root["paths"][f"apis/{GROUP}/{VERSION}"]["serverRelativeURL"]
    doc = requests.get(f"{kube.url}{ref}", timeout=5).json()
    (path,) = [p for p in doc["paths"] if p.endswith(f"/{PLURAL}/{{name}}")]
    patch = doc["paths"][path]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": GROUP, "version": VERSION, "kind": "Trigger"}
    assert {"name": "fieldValidation", "in": "query"}.items() <= next(
        p for p in patch["parameters"] if p["name"] == "fieldValidation"
    ).items()


def refusal(call: Any) -> dict[str, Any]:
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 422
    return status_of(refused.value)


def test_every_write_goes_through_the_metadata_rules(kube: KubeServer, api: Any) -> None:
    # rest/create.go BeforeCreate and update.go validateCommonFields run apimachinery
    # ValidateObjectMetaAccessor (api/validation/objectmeta.go) on every kind; a core kind's strategy
    # runs core ValidateObjectMeta first, with its name rule (Secrets: a DNS subdomain).
    core = CoreV1Api(api)
    secrets = f"{kube.url}/api/v1/namespaces/default/secrets"

    def refused(**meta: Any) -> dict[str, Any]:
        """A create the client library would not even send (its models check some fields)."""
        rsp = requests.post(secrets, json={"metadata": {"name": "s", **meta}}, timeout=5)
        assert rsp.status_code == 422, rsp.text
        return dict(rsp.json())

    status = refused(name="a" * 254)
    assert status["message"] == (
        'Secret "' + "a" * 254 + '" is invalid: metadata.name: Invalid value: "' + "a" * 254 + '": '
        "must be no more than 253 characters"
    )
    assert status["details"]["kind"] == "Secret" and "group" not in status["details"]
    core.create_namespaced_secret("default", V1Secret.model_validate({"metadata": {"name": "a" * 253}}))

    status = refused(labels={"app": "not valid!"})
    assert status["details"]["causes"][0]["field"] == "metadata.labels"
    assert "a valid label must be an empty string" in status["message"]
    status = refused(annotations={"note": "x" * (256 * 1024)})
    assert "metadata.annotations: Too long: may not be more than 262144 bytes" in status["message"]
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u1", "controller": True}
    status = refused(ownerReferences=[owner, {**owner, "name": "p", "uid": "u2"}])
    assert "Only one reference can have Controller set to true" in status["message"]
    status = refused(ownerReferences=[{k: v for k, v in owner.items() if k != "uid"}])
    assert 'metadata.ownerReferences.uid: Invalid value: "": uid must not be empty' in status["message"]
    # core validateKubeFinalizerName: a core kind's finalizer without a domain must be a standard one.
    status = refused(finalizers=["nodomain"])
    assert "name is neither a standard finalizer name nor is it fully qualified" in status["message"]

    # The same rules on an update.
    core.create_namespaced_secret("default", V1Secret.model_validate({"metadata": {"name": "s"}}))
    status = refusal(
        lambda: core.patch_namespaced_secret("s", "default", {"metadata": {"labels": {"-bad": "x"}}})
    )
    assert status["details"]["causes"][0]["field"] == "metadata.labels"

    # storage/names SimpleNameGenerator: a generateName longer than 58 is cut, then 5 random characters.
    event = core.create_namespaced_event(
        "default",
        CoreV1Event.model_validate(
            {
                "metadata": {"generateName": "e" * 100 + "."},
                "involvedObject": {"kind": "Secret", "name": "s", "namespace": "default"},
                "reason": "R",
                "message": "m",
            }
        ),
    )
    assert event.metadata.name is not None
    assert len(event.metadata.name) == 63 and event.metadata.name.startswith("e" * 58)


def test_a_secret_is_validated_as_validate_secret_does(api: Any) -> None:
    # pkg/apis/core/validation ValidateSecret (data keys, 1 MiB) and ValidateSecretUpdate (type,
    # `immutable`).
    core = CoreV1Api(api)
    status = refusal(
        lambda: core.create_namespaced_secret(
            "default", V1Secret.model_validate({"metadata": {"name": "k"}, "data": {"bad/key": ""}})
        )
    )
    assert status["details"]["causes"][0]["field"] == "data[bad/key]"
    assert "a valid config key must consist of alphanumeric characters" in status["message"]
    huge = {"a": "x" * (1024 * 1024 + 1)}
    status = refusal(
        lambda: core.create_namespaced_secret(
            "default", V1Secret.model_validate({"metadata": {"name": "h"}, "stringData": huge})
        )
    )
    assert "data: Too long: may not be more than 1048576 bytes" in status["message"]

    core.create_namespaced_secret(
        "default",
        V1Secret.model_validate({"metadata": {"name": "i"}, "immutable": True, "stringData": {"a": "1"}}),
    )
    status = refusal(lambda: core.patch_namespaced_secret("i", "default", {"stringData": {"a": "2"}}))
    assert (
        status["message"]
        == 'Secret "i" is invalid: data: Forbidden: field is immutable when `immutable` is set'
    )
    status = refusal(lambda: core.patch_namespaced_secret("i", "default", {"type": "kubernetes.io/tls"}))
    assert 'type: Invalid value: "kubernetes.io/tls": field is immutable' in status["message"]
    core.patch_namespaced_secret(
        "i", "default", {"metadata": {"labels": {"ok": "yes"}}}
    )  # metadata may change


GITLAB = {"url": "https://gitlab.example.com", "project": "group/web"}


def test_a_trigger_name_too_long_for_its_default_secret_is_refused_at_apply(api: Any) -> None:
    # The CRD's rule on the whole object (CEL sees metadata.name there): "<name>-trigger" must fit
    # in a Secret name (253), unless spec.secretName names another or the provider writes none (SWR).
    custom = CustomObjectsApi(api)
    long = "t" * 246
    status = refusal(
        lambda: custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, trigger(long))
    )
    assert status["message"] == (
        f'Trigger.cloudtriggers.io "{long}" is invalid: <root>: Invalid value: "object": '
        "metadata.name is longer than 245 characters, so the default output Secret name "
        '(metadata.name + "-trigger") would be longer than 253; set spec.secretName'
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, trigger("t" * 245))
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, trigger(long, secretName="web-token", gitlab=GITLAB)
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, trigger("s" * 253, swr=SWR))


def test_a_delete_propagates_as_its_policy_says(kube: KubeServer, api: Any) -> None:
    # store.go deletionFinalizersForGarbageCollection turns propagationPolicy into the GC's
    # finalizers; pkg/controller/garbagecollector acts on them: Foreground deletes the dependents
    # first (only blockOwnerDeletion ones hold the owner), Orphan strips the owner's references.
    custom, core = CustomObjectsApi(api), CoreV1Api(api)
    path = f"{kube.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"

    def owned(name: str, **extra: Any) -> str:
        meta = {"name": name, "finalizers": ["cloudtriggers.io/finalizer"]}
        obj = custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, {**trigger(name), "metadata": meta}
        )
        assert isinstance(obj, dict)
        ref = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Trigger",
            "name": name,
            "uid": obj["metadata"]["uid"],
            **extra,
        }
        core.create_namespaced_secret(
            "default",
            V1Secret.model_validate({"metadata": {"name": f"{name}-out", "ownerReferences": [ref]}}),
        )
        return str(obj["metadata"]["uid"])

    def release(name: str) -> None:  # what the operator does once its finalize is done
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, name, {"metadata": {"finalizers": []}}
        )

    # Foreground: the Secret goes while the operator's finalizer still holds the Trigger.
    owned("fg")
    rsp = requests.delete(f"{path}/fg", json={"propagationPolicy": "Foreground"}, timeout=5)
    assert rsp.status_code == 200  # endpoints/handlers/delete.go: 202 only with orphanDependents=false
    assert "foregroundDeletion" in rsp.json()["metadata"]["finalizers"]
    wait_for(lambda: kube.get("v1/secrets", "default", "fg-out") is None, what="dependent deleted first")
    wait_for(
        lambda: (
            stored(kube, TRIGGERS, "default", "fg")["metadata"]["finalizers"]
            == ["cloudtriggers.io/finalizer"]
        ),
        what="foregroundDeletion taken off",
    )
    release("fg")
    wait_for(lambda: kube.get(TRIGGERS, "default", "fg") is None, what="owner gone")

    # A dependent with blockOwnerDeletion holds the owner until it is gone itself.
    owned("blk", blockOwnerDeletion=True)
    core.patch_namespaced_secret("blk-out", "default", {"metadata": {"finalizers": ["example.com/hold"]}})
    requests.delete(f"{path}/blk", params={"propagationPolicy": "Foreground"}, timeout=5).raise_for_status()
    wait_for(
        lambda: stored(kube, "v1/secrets", "default", "blk-out")["metadata"].get("deletionTimestamp"),
        what="deleting",
    )
    time.sleep(0.3)
    assert "foregroundDeletion" in stored(kube, TRIGGERS, "default", "blk")["metadata"]["finalizers"]
    core.patch_namespaced_secret("blk-out", "default", {"metadata": {"finalizers": []}})
    wait_for(
        lambda: (
            "foregroundDeletion" not in stored(kube, TRIGGERS, "default", "blk")["metadata"]["finalizers"]
        ),
        what="unblocked",
    )
    release("blk")

    # Orphan: the Secret stays, without the reference; the owner goes once nothing else holds it.
    uid = owned("orph")
    release("orph")  # only the GC's own finalizer will hold it
    requests.delete(f"{path}/orph", json={"propagationPolicy": "Orphan"}, timeout=5).raise_for_status()
    wait_for(lambda: kube.get(TRIGGERS, "default", "orph") is None, what="owner gone")
    secret = kube.get("v1/secrets", "default", "orph-out")
    assert secret is not None and uid not in json.dumps(secret["metadata"].get("ownerReferences") or [])

    # Background (kubectl's default): the owner goes, then the collector takes the dependent.
    owned("bg")
    release("bg")
    requests.delete(f"{path}/bg", timeout=5).raise_for_status()
    wait_for(lambda: kube.get("v1/secrets", "default", "bg-out") is None, what="dependent collected")

    # ValidateDeleteOptions and the preconditions.
    owned("bad")
    rsp = requests.delete(f"{path}/bad", json={"propagationPolicy": "Sideways"}, timeout=5)
    assert rsp.status_code == 422
    assert rsp.json()["message"] == (
        'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "Sideways": '
        'supported values: "Foreground", "Background", "Orphan", "nil"'
    )
    rsp = requests.delete(f"{path}/bad", json={"preconditions": {"uid": "not-it"}}, timeout=5)
    assert (
        rsp.status_code == 409 and "Precondition failed: UID in precondition: not-it" in rsp.json()["message"]
    )
    assert stored(kube, TRIGGERS, "default", "bad")["metadata"].get("deletionTimestamp") is None


def test_an_update_is_checked_as_the_store_and_the_patch_handler_check_it(kube: KubeServer, api: Any) -> None:
    # store.go Update: the written resourceVersion is the precondition (409 with NewConflict's
    # message), and a replace without one is refused by the kinds that do not allow unconditional
    # updates (custom resources, Leases: 422); patch.go checkName: a patch may not rename (400).
    custom = CustomObjectsApi(api)
    obj = cast(
        dict[str, Any],
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, trigger("web")),
    )
    url = f"{kube.url}/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}/web"
    json_patch = {"Content-Type": "application/json-patch+json"}

    stale = [{"op": "replace", "path": "/metadata/resourceVersion", "value": "1"}]
    rsp = requests.patch(url, data=json.dumps(stale), headers=json_patch, timeout=5)
    assert rsp.status_code == 409
    assert rsp.json()["message"] == (
        'Operation cannot be fulfilled on triggers.cloudtriggers.io "web": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    unconditional = {k: v for k, v in obj.items()}
    unconditional["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    rsp = requests.put(url, json=unconditional, timeout=5)
    assert rsp.status_code == 422
    assert rsp.json()["message"] == (
        'triggers.cloudtriggers.io "web" is invalid: metadata.resourceVersion: Invalid value: 0: '
        "must be specified for an update"
    )
    assert rsp.json()["details"] == {
        "name": "web",
        "group": GROUP,
        "kind": PLURAL,
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "message": "Invalid value: 0: must be specified for an update",
                "field": "metadata.resourceVersion",
            }
        ],
    }
    assert requests.put(url, json=obj, timeout=5).status_code == 200  # with it: fine
    # A Secret's strategy allows an unconditional replace.
    CoreV1Api(api).create_namespaced_secret("default", V1Secret.model_validate({"metadata": {"name": "s"}}))
    secret_url = f"{kube.url}/api/v1/namespaces/default/secrets/s"
    assert (
        requests.put(secret_url, json={"metadata": {"name": "s"}, "data": {}}, timeout=5).status_code == 200
    )

    rename = [{"op": "replace", "path": "/metadata/name", "value": "other"}]
    rsp = requests.patch(url, data=json.dumps(rename), headers=json_patch, timeout=5)
    assert rsp.status_code == 400
    assert rsp.json()["message"] == "the name of the object (other) does not match the name on the URL (web)"
    move = {"metadata": {"namespace": "kube-system"}}
    merge = {"Content-Type": "application/merge-patch+json"}
    rsp = requests.patch(url, data=json.dumps(move), headers=merge, timeout=5)
    assert rsp.status_code == 400
    assert (
        cast(dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "web"))[
            "metadata"
        ]["name"]
        == "web"
    )


def test_an_event_is_validated_as_legacy_validate_event_does(kube: KubeServer) -> None:
    # pkg/apis/core/validation/events.go legacyValidateEvent: the involved object's namespace must be
    # the Event's; an Event with an eventTime must name its reporting controller, instance and action.
    url = f"{kube.url}/api/v1/namespaces/default/events"
    involved = {"kind": "Trigger", "name": "web", "namespace": "default"}
    event = {
        "metadata": {"generateName": "web."},
        "involvedObject": involved,
        "reason": "Created",
        "message": "m",
    }
    assert requests.post(url, json=event, timeout=5).status_code == 201
    elsewhere = {**event, "involvedObject": {**involved, "namespace": "apps"}}
    rsp = requests.post(url, json=elsewhere, timeout=5)
    assert rsp.status_code == 422
    assert (
        'involvedObject.namespace: Invalid value: "apps": does not match event.namespace'
        in rsp.json()["message"]
    )
    timed = {**event, "eventTime": "2026-12-06T18:00:00.000000Z", "action": "Create"}
    rsp = requests.post(url, json=timed, timeout=5)
    assert rsp.status_code == 422 and "reportingController: Required value" in rsp.json()["message"]
    reported = {**timed, "reportingComponent": "kopf", "reportingInstance": "dev"}
    assert requests.post(url, json=reported, timeout=5).status_code == 201
    long = {**reported, "message": "é" * 600}  # 1,200 bytes: Go's len counts bytes
    rsp = requests.post(url, json=long, timeout=5)
    assert (
        rsp.status_code == 422
        and 'message: Invalid value: "": can have at most 1024 characters' in rsp.json()["message"]
    )


def test_a_custom_resource_name_longer_than_253_is_refused(api: Any) -> None:
    # customresource/validator.go NameIsDNSSubdomain -> IsDNS1123Subdomain: the length too, not only
    # the pattern (a 254-character name of valid characters was taken).
    custom = CustomObjectsApi(api)
    status = refusal(
        lambda: custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, trigger("a" * 254))
    )
    assert (
        'metadata.name: Invalid value: "' + "a" * 254 + '": must be no more than 253 characters'
        in status["message"]
    )
