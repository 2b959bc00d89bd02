"""The Helm chart, rendered by a real helm binary with default and non-default values."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
import yaml

from cloudtriggers import __version__
from cloudtriggers.settings import Settings
from deploy.deploykit import (
    CHART,
    CRD,
    NAMESPACE,
    RELEASE,
    Obj,
    by_kind,
    helm_fails,
    helm_template,
    one,
    run,
    schema_errors,
    tool,
)

NAMESPACED: dict[str, Any] = {
    "image": {"repository": "registry.example.com/ops/cloudtriggers", "digest": "sha256:" + "ab" * 32},
    "replicaCount": 2,
    "watchNamespaces": ["apps", "ci"],
    "labelSelector": "shard=a",
    "defaultCredentials": {"secret": "ops/gitlab-default", "endpoint": "https://gitlab.example.com"},
    "endpointPolicy": {
        "allowed": ["https://gitlab.internal.example.com", "http://10.20.0.0/16"],
        "denied": ["https://*.secret.example.com"],
        "onlyAllowed": True,
    },
    "resyncPeriod": "1h30m",
    "rate": 2.5,
    "burst": 5,
    "providerConcurrency": 3,
    "logLevel": "debug",
    "logFormat": "text",
    "leaderElection": {"leaseName": "cloudtriggers-shard-a", "leaseDuration": "30s"},
    "extraEnv": [{"name": "CLOUDTRIGGERS_DELETE_TIMEOUT", "value": "5m"}],
    "serviceAccount": {"annotations": {"pod-identity.alibabacloud.com/role-name": "cloudtriggers"}},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "grafanaDashboard": {
        "enabled": True,
        "namespace": "monitoring",
        "annotations": {"grafana_folder": "Ops"},
    },
    "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": None},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "cloudtriggers"}},
        }
    ],
}
MINIMAL: dict[str, Any] = {
    "leaderElection": {"enabled": False},
    "rbac": {"create": False},
    "serviceAccount": {"create": False, "name": "platform-operators"},
    "metrics": {"service": {"enabled": False}},
    "podDisruptionBudget": {"enabled": False},
}
VALUE_SETS = {"defaults": {}, "namespaced": NAMESPACED, "minimal": MINIMAL}


@pytest.fixture(scope="module")
def renders() -> dict[str, list[Obj]]:
    return {name: helm_template(values) for name, values in VALUE_SETS.items()}


def container(objects: list[Obj]) -> dict[str, Any]:
    [c] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(c)


def env_of(objects: list[Obj]) -> dict[str, Any]:
    """The container's env: plain values as strings, valueFrom fieldRefs as ('fieldRef', path)."""
    out: dict[str, Any] = {}
    for e in container(objects)["env"]:
        assert e["name"] not in out, f"{e['name']} is set twice"
        ref = (e.get("valueFrom") or {}).get("fieldRef")
        out[e["name"]] = ("fieldRef", ref["fieldPath"]) if ref else e["value"]
    return out


def test_chart_crd_is_the_generated_crd() -> None:
    chart_crd = CHART / "crds" / "trigger.yaml"
    assert chart_crd.read_bytes() == CRD.read_bytes(), (
        "deploy/helm/cloudtriggers/crds/trigger.yaml differs from crds/trigger.yaml; copy it: "
        "cp crds/trigger.yaml deploy/helm/cloudtriggers/crds/trigger.yaml"
    )


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "cloudtriggers"
    assert chart["appVersion"] == __version__ == "0.1.0"


def test_helm_lint_strict(tmp_path: Any) -> None:
    helm = tool("helm")
    run(helm, "lint", "--strict", str(CHART))
    for name, values in VALUE_SETS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(json.dumps(values))
        run(helm, "lint", "--strict", str(CHART), "-f", str(path))


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_object_validates_against_the_kubernetes_schemas(
    renders: dict[str, list[Obj]], name: str
) -> None:
    objects = [o for o in renders[name] if o["kind"] not in ("ServiceMonitor", "PrometheusRule")]
    assert schema_errors(objects) == []


def test_defaults_install_the_operator_cluster_wide(renders: dict[str, list[Obj]]) -> None:
    objects = renders["defaults"]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == [
        ("ClusterRole", "cloudtriggers"),
        ("ClusterRole", "cloudtriggers-release-credentials"),  # the uninstall hook's
        ("ClusterRoleBinding", "cloudtriggers"),
        ("ClusterRoleBinding", "cloudtriggers-release-credentials"),
        ("CustomResourceDefinition", "triggers.cloudtriggers.io"),
        ("Deployment", "cloudtriggers"),
        ("Job", "cloudtriggers-release-credentials"),
        ("PodDisruptionBudget", "cloudtriggers"),
        ("Role", "cloudtriggers-leader-election"),
        ("RoleBinding", "cloudtriggers-leader-election"),
        ("Service", "cloudtriggers-metrics"),
        ("ServiceAccount", "cloudtriggers"),
        ("ServiceAccount", "cloudtriggers-release-credentials"),
    ]
    for o in objects:
        if o["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"]["namespace"] == NAMESPACE, o["kind"]
    env = env_of(objects)
    assert env["CLOUDTRIGGERS_LEADER_ELECTION"] == "true"
    assert "CLOUDTRIGGERS_NAMESPACES" not in env
    assert container(objects)["image"] == f"cloudtriggers:{__version__}"


def test_deployment_is_restricted_and_probed(renders: dict[str, list[Obj]]) -> None:
    for name, objects in renders.items():
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        c = container(objects)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert c["args"] == ["run"]
        assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert set(c["resources"]) == {"requests", "limits"}
        assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {"cpu", "memory"}
        # The only writable place is an emptyDir at /tmp.
        assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
        assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
        assert env_of(objects)["POD_NAMESPACE"] == ("fieldRef", "metadata.namespace")


def test_namespaced_values(renders: dict[str, list[Obj]]) -> None:
    objects = renders["namespaced"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == NAMESPACED["nodeSelector"]
    assert pod["tolerations"] == NAMESPACED["tolerations"]
    assert pod["topologySpreadConstraints"] == NAMESPACED["topologySpreadConstraints"]
    assert container(objects)["image"] == "registry.example.com/ops/cloudtriggers@sha256:" + "ab" * 32
    env = env_of(objects)
    assert env["CLOUDTRIGGERS_NAMESPACES"] == "apps,ci"
    assert env["CLOUDTRIGGERS_LABEL_SELECTOR"] == "shard=a"
    assert env["CLOUDTRIGGERS_DEFAULT_CREDENTIALS_SECRET"] == "ops/gitlab-default"
    assert env["CLOUDTRIGGERS_LEASE_NAME"] == "cloudtriggers-shard-a"
    assert env["CLOUDTRIGGERS_LEASE_NAMESPACE"] == ("fieldRef", "metadata.namespace")
    assert env["CLOUDTRIGGERS_DELETE_TIMEOUT"] == "5m"
    rule = one(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"][0]["rules"][0]["alert"] == "CloudtriggersTriggerNotReady"
    dashboard = one(objects, "ConfigMap")
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Ops"}

    # A Role and RoleBinding per watched namespace, the same rules in each.
    roles = {
        r["metadata"]["namespace"]: r for r in by_kind(objects, "Role") if r["metadata"]["name"] == RELEASE
    }
    assert sorted(roles) == ["apps", "ci"]
    assert roles["apps"]["rules"] == roles["ci"]["rules"]
    bindings = [b for b in by_kind(objects, "RoleBinding") if b["metadata"]["name"] == RELEASE]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["apps", "ci"]
    # Cluster-wide, only reads of cluster-scoped resources.
    cluster_rules = one(objects, "ClusterRole")["rules"]
    assert {r for rule in cluster_rules for r in rule["resources"]} == {
        "namespaces",
        "customresourcedefinitions",
    }
    assert {v for rule in cluster_rules for v in rule["verbs"]} == {"get", "list", "watch"}
    # The default credentials Secret, outside the watched namespaces: that one Secret, read only.
    creds = one(objects, "Role", "cloudtriggers-default-credentials")
    assert creds["metadata"]["namespace"] == "ops"
    assert creds["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["gitlab-default"], "verbs": ["get"]}
    ]
    lease_role = one(objects, "Role", "cloudtriggers-leader-election")
    assert lease_role["rules"][1]["resourceNames"] == ["cloudtriggers-shard-a"]

    assert one(objects, "PodDisruptionBudget")["spec"] == {
        "minAvailable": 1,
        "selector": {
            "matchLabels": {"app.kubernetes.io/name": "cloudtriggers", "app.kubernetes.io/instance": RELEASE}
        },
    }
    assert (
        one(objects, "ServiceAccount", RELEASE)["metadata"]["annotations"]
        == NAMESPACED["serviceAccount"]["annotations"]
    )


def test_service_monitor_scrapes_the_metrics_service(renders: dict[str, list[Obj]]) -> None:
    # monitoring.coreos.com has no schema in kubernetes-validate: check what makes it scrape at all.
    objects = renders["namespaced"]
    monitor, service = one(objects, "ServiceMonitor"), one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # The Service reaches the pods' http port.
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert not by_kind(renders["defaults"], "ServiceMonitor")


def test_minimal_values_leave_out_the_optional_objects(renders: dict[str, list[Obj]]) -> None:
    objects = renders["minimal"]
    assert sorted(o["kind"] for o in objects) == ["CustomResourceDefinition", "Deployment", "Job"]
    # The uninstall hook runs as the user's own ServiceAccount, which outlives the release.
    job = one(objects, "Job")["spec"]["template"]["spec"]
    assert job["serviceAccountName"] == "platform-operators"
    deployment = one(objects, "Deployment")
    # Without leader election two pods must never overlap, not even during an update.
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "platform-operators"
    env = env_of(objects)
    assert env["CLOUDTRIGGERS_LEADER_ELECTION"] == "false"
    assert not {"CLOUDTRIGGERS_LEASE_NAME", "CLOUDTRIGGERS_LEASE_DURATION"} & set(env)


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_env_is_what_the_operator_reads(
    renders: dict[str, list[Obj]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every CLOUDTRIGGERS_* variable the chart sets is a setting, and parses to the value given."""
    values = VALUE_SETS[name]
    env = env_of(renders[name])
    fields = {f"CLOUDTRIGGERS_{f.upper()}" for f in Settings.model_fields}
    unknown = {k for k in env if k.startswith("CLOUDTRIGGERS_")} - fields
    assert not unknown, f"not settings of the operator (ignored silently): {sorted(unknown)}"
    fieldrefs = {"metadata.namespace": NAMESPACE, "metadata.name": "cloudtriggers-5d8f-x2x"}
    for k in list(os.environ):
        if k.startswith("CLOUDTRIGGERS_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, fieldrefs[v[1]] if isinstance(v, tuple) else v)
    s = Settings()
    le = values.get("leaderElection", {})
    assert s.namespaces == values.get("watchNamespaces", [])
    assert s.label_selector == values.get("labelSelector", "")
    assert s.resync_period == {"10m": 600, "1h30m": 5400}[values.get("resyncPeriod", "10m")]
    assert s.rate == values.get("rate")  # unset by default: no cap, the pace adapts
    assert s.burst == values.get("burst")
    assert s.provider_concurrency == values.get("providerConcurrency", 8)
    assert s.log_level == values.get("logLevel", "info")
    assert s.log_format == values.get("logFormat", "json")
    assert s.http_port == 8080
    assert s.default_credentials_secret == values.get("defaultCredentials", {}).get("secret", "")
    assert s.default_credentials_endpoint == values.get("defaultCredentials", {}).get("endpoint", "")
    policy = values.get("endpointPolicy", {})
    assert s.allowed_endpoints == policy.get("allowed", [])
    assert s.denied_endpoints == policy.get("denied", [])
    assert s.only_allowed_endpoints is policy.get("onlyAllowed", False)
    assert s.endpoint_policy().only_allowed is policy.get("onlyAllowed", False)
    assert s.leader_election is le.get("enabled", True)
    if s.leader_election:
        assert s.lease_name == le.get("leaseName", RELEASE)
        assert s.lease_namespace == NAMESPACE
        assert s.lease_duration == {"15s": 15, "30s": 30}[le.get("leaseDuration", "15s")]
        assert s.identity == fieldrefs["metadata.name"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "/leaderElection/enabled"),
        ({"resyncPeriod": "10 minutes"}, "/resyncPeriod"),
        ({"rate": 0}, "/rate"),
        ({"logFormat": "xml"}, "/logFormat"),
        ({"watchNamespaces": ["Apps"]}, "/watchNamespaces/0"),
        ({"defaultCredentials": {"secret": "no-namespace"}}, "/defaultCredentials/secret"),
        ({"httpPort": 0}, "/httpPort"),
        ({"image": {"repository": "x", "digest": "latest"}}, "/image/digest"),
        ({"resyncperiod": "10m"}, "resyncperiod"),  # a typo is an error, not ignored
        ({"endpointPolicy": {"allowed": ["gitlab.example.com"]}}, "/endpointPolicy/allowed/0"),
        ({"endpointPolicy": {"allow": []}}, "allow"),
    ],
)
def test_schema_refuses_bad_values(values: dict[str, Any], message: str) -> None:
    assert message in helm_fails(values)


def test_template_refuses_two_replicas_without_leader_election_even_without_the_schema() -> None:
    proc = subprocess.run(
        [
            *(tool("helm"), "template", RELEASE, str(CHART), "--skip-schema-validation"),
            *("--set", "replicaCount=2", "--set", "leaderElection.enabled=false"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "replicaCount > 1 needs leaderElection.enabled=true" in proc.stderr


def test_rbac_rules_name_no_wildcards(renders: dict[str, list[Obj]]) -> None:
    for objects in renders.values():
        for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role"):
            for rule in role["rules"]:
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)


def test_uninstall_releases_the_credentials_secrets(renders: dict[str, list[Obj]]) -> None:
    """helm uninstall runs `cloudtriggers release-credentials` after the operator is gone (post-delete),
    with its own ServiceAccount and RBAC (the release's are deleted by then); test_rbac checks that
    they grant exactly what the command uses."""
    for name, objects in renders.items():
        job = one(objects, "Job")
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-delete", name
        [c] = job["spec"]["template"]["spec"]["containers"]
        assert c["image"] == container(objects)["image"]
        assert c["args"][:3] == ["release-credentials", "--settle", c["args"][2]]
        assert float(c["args"][2]) > one(objects, "Deployment")["spec"]["template"]["spec"].get(
            "terminationGracePeriodSeconds", 30
        )
        hooks = [o for o in objects if (o["metadata"].get("annotations") or {}).get("helm.sh/hook")]
        assert {o["metadata"]["annotations"]["helm.sh/hook"] for o in hooks} == {"post-delete"}
    namespaced = one(renders["namespaced"], "Job")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert namespaced[3:] == ["--namespace", "apps", "--namespace", "ci"]
    assert helm_template({"releaseCredentialsOnUninstall": False}) == [
        o for o in renders["defaults"] if not (o["metadata"].get("annotations") or {}).get("helm.sh/hook")
    ]


def test_notes_tell_how_to_check_upgrade_and_uninstall() -> None:
    install = ("install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE)
    out = run(tool("helm"), *install, "--set", "watchNamespaces={apps}")
    notes = out[out.index("NOTES:") :]
    assert "It manages Triggers in the namespaces apps." in notes
    assert f"rollout status deployment/{RELEASE}" in notes
    assert "helm show crds" in notes
    assert "kubectl delete triggers --all --all-namespaces --wait" in notes
