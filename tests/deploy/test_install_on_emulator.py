"""README's "Install on a cluster", step by step with the real kubectl and helm, against the emulated
API server (which validates CRDs and custom resources as kube-apiserver does; see
tests/unit/test_kube_apiserver_rules.py). The same steps on a real cluster are in tests/e2e.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudtriggers.crd import build_crd
from cloudtriggers.sandbox import local
from cloudtriggers.sandbox.kube import KubeServer
from deploy.deploykit import CHART, CRD, MANIFESTS, NAMESPACE, RELEASE, helm_template, tool

CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
CRD_NAME = "triggers.cloudtriggers.io"


@pytest.fixture()
def cluster(tmp_path: Path) -> Iterator[tuple[KubeServer, Path]]:
    with KubeServer(install_crd=False) as server:  # a fresh cluster: no CRD yet
        config = tmp_path / "kubeconfig"
        server.write_kubeconfig(config)
        yield server, config


def kubectl(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("kubectl"), "--kubeconfig", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def established(server: KubeServer) -> bool:
    crd = server.get(CRDS, None, CRD_NAME) or {}
    return any(
        c["type"] == "Established" and c["status"] == "True"
        for c in (crd.get("status") or {}).get("conditions", [])
    )


def namespace(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def trigger(name: str, namespace: str, **gitlab: Any) -> str:
    body = {
        "apiVersion": "cloudtriggers.io/v1alpha1",
        "kind": "Trigger",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"gitlab": {"url": "https://gitlab.example.com", "project": "group/web", **gitlab}},
    }
    return json.dumps(body)


def test_kubectl_apply_of_the_crd_file_installs_and_serves_triggers(cluster: tuple[KubeServer, Path]) -> None:
    server, config = cluster
    assert "created" in ok(kubectl(config, "apply", "-f", str(CRD)))
    assert established(server)
    stored = server.get(CRDS, None, CRD_NAME)
    assert stored is not None and stored["spec"] == build_crd()["spec"]
    assert "unchanged" in ok(kubectl(config, "apply", "-f", str(CRD)))
    # What a user applies next: a namespace and a Trigger, checked by the server (fieldValidation=Strict).
    ok(kubectl(config, "create", "-f", "-", stdin=namespace("apps")))
    assert "created" in ok(kubectl(config, "apply", "-f", "-", stdin=trigger("web", "apps")))
    bad = kubectl(config, "apply", "-f", "-", stdin=trigger("bad", "apps", url="ftp://gitlab.example.com"))
    assert bad.returncode == 1
    assert (
        'The Trigger "bad" is invalid: spec.gitlab.url: Invalid value: "ftp://gitlab.example.com"'
        in bad.stderr
    )
    unknown = kubectl(config, "apply", "-f", "-", stdin=trigger("odd", "apps", colour="blue"))
    assert (
        unknown.returncode == 1
        and 'strict decoding error: unknown field "spec.gitlab.colour"' in unknown.stderr
    )
    missing = kubectl(config, "apply", "-f", "-", stdin=trigger("web", "nowhere"))
    assert missing.returncode == 1 and 'namespaces "nowhere" not found' in missing.stderr


def test_a_crd_a_real_server_refuses_fails_kubectl_apply_with_its_message(
    cluster: tuple[KubeServer, Path], tmp_path: Path
) -> None:
    _, config = cluster
    crd = build_crd()
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["metadata"]["description"] = (
        "metadata"
    )
    path = tmp_path / "crd.yaml"
    path.write_text(yaml.safe_dump(crd))
    refused = kubectl(config, "apply", "-f", str(path))
    assert refused.returncode == 1
    assert (
        'The CustomResourceDefinition "triggers.cloudtriggers.io" is invalid: '
        "spec.validation.openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other "
        "than name and generateName, but metadata is implicitly specified"
    ) in refused.stderr


def test_helm_template_of_the_chart_applies(cluster: tuple[KubeServer, Path]) -> None:
    server, config = cluster
    rendered = subprocess.run(
        [tool("helm"), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    ok(kubectl(config, "apply", "-f", "-", stdin=namespace(NAMESPACE)))  # helm install --create-namespace
    out = ok(kubectl(config, "apply", "-n", NAMESPACE, "-f", "-", stdin=rendered))
    assert "customresourcedefinition.apiextensions.k8s.io/triggers.cloudtriggers.io created" in out
    assert "deployment.apps/cloudtriggers created" in out
    assert established(server)


def test_the_charts_admission_policy_refuses_what_the_namespace_may_not_use(
    cluster: tuple[KubeServer, Path],
) -> None:
    """admissionPolicy.enabled: kubectl apply of a Trigger whose endpoint its namespace's class does
    not allow fails with the API server's ValidatingAdmissionPolicy message (apiserver/admission.py)."""
    _, config = cluster
    values = {
        "admissionPolicy": {
            "enabled": True,
            "classes": {"default": [], "internal": ["https://*.corp.example"]},
        }
    }
    rendered = yaml.safe_dump_all(helm_template(values))
    ok(kubectl(config, "apply", "-f", "-", stdin=namespace(NAMESPACE)))
    out = ok(kubectl(config, "apply", "-n", NAMESPACE, "-f", "-", stdin=rendered))
    assert "validatingadmissionpolicy.admissionregistration.k8s.io/cloudtriggers-endpoints created" in out
    ok(kubectl(config, "create", "-f", "-", stdin=namespace("apps")))
    ok(kubectl(config, "create", "-f", "-", stdin=namespace("corp")))
    ok(kubectl(config, "label", "namespace", "corp", "cloudtriggers.io/endpoint-class=internal"))
    url = "https://git.corp.example"
    assert "created" in ok(kubectl(config, "apply", "-f", "-", stdin=trigger("web", "corp", url=url)))
    refused = kubectl(config, "apply", "-f", "-", stdin=trigger("web", "apps", url=url))
    assert refused.returncode == 1
    assert (
        "triggers.cloudtriggers.io \"web\" is forbidden: ValidatingAdmissionPolicy 'cloudtriggers-endpoints' "
        "with binding 'cloudtriggers-endpoints' denied request: the endpoint https://git.corp.example is not "
        "allowed in this namespace (endpoint class default)"
    ) in refused.stderr
    # A change that keeps the endpoint is admitted (a label, the operator's finalizer).
    ok(kubectl(config, "label", "namespace", "corp", "cloudtriggers.io/endpoint-class-", "--overwrite"))
    ok(kubectl(config, "label", "-n", "corp", "trigger", "web", "team=a"))
    moved = kubectl(
        config, "apply", "-f", "-", stdin=trigger("web", "corp", url="https://other.corp.example")
    )
    # The object's own rules run before admission policies, as on a real server.
    assert moved.returncode == 1 and "gitlab.url is immutable" in moved.stderr


def test_the_kustomize_manifests_apply(cluster: tuple[KubeServer, Path]) -> None:
    server, config = cluster
    out = ok(kubectl(config, "apply", "-k", str(MANIFESTS)))
    assert f"namespace/{NAMESPACE} created" in out
    assert "customresourcedefinition.apiextensions.k8s.io/triggers.cloudtriggers.io created" in out
    assert established(server)


def test_the_demo_world_refuses_a_crd_the_server_would_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> dict[str, Any]:
        crd = build_crd()
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].pop("type")
        return crd

    monkeypatch.setattr(local, "build_crd", broken)
    world = local.LocalWorld()
    try:
        with pytest.raises(Exception, match="422"):
            world.start()
    finally:
        world.stop()
