"""Helpers for tests/deploy: the tools (helm, kubectl), rendering, schema validation and RBAC checks.

helm and kubectl are real binaries: tests/deploy/install-tools.sh puts them into .venv/bin (CI), or
they are on PATH. Without them the tests that need them are skipped, with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "cloudtriggers"
MANIFESTS = ROOT / "deploy" / "manifests"
DEV = ROOT / "deploy" / "dev"
CRD = ROOT / "crds" / "trigger.yaml"

RELEASE = "cloudtriggers"
NAMESPACE = "cloudtriggers"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas at hand.
KUBE_VERSIONS = ("1.28", "1.35")

Obj = dict[str, Any]


def tool(name: str) -> str:
    """Path of a tool in the virtualenv's bin directory or on PATH.

    Absent, the test is skipped, except in CI (CI=true), where .ci/run must have installed it.
    """
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if found is None:
        how = "bash tests/deploy/install-tools.sh (helm, kubectl) or pip install -e '.[dev]'"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not installed, and CI must run this test: {how}")
        pytest.skip(f"{name} is not installed: {how}")
    return found


def run(*args: str, input: str | None = None) -> str:
    proc = subprocess.run(args, input=input, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc.stdout


def load_all(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def helm_template(
    values: Mapping[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE
) -> list[Obj]:
    """`helm template --include-crds` of the chart with these values (a values file, so types are kept)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        json.dump(dict(values or {}), f)
        f.flush()
        out = run(
            tool("helm"),
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--include-crds",
            "-f",
            f.name,
        )
    return load_all(out)


def helm_fails(values: Mapping[str, Any]) -> str:
    """The error of `helm template` with values the chart must refuse."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        json.dump(dict(values), f)
        f.flush()
        proc = subprocess.run(
            [tool("helm"), "template", RELEASE, str(CHART), "-f", f.name],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode != 0, f"helm accepted {values}"
    return proc.stderr


def kustomize(path: Path) -> list[Obj]:
    return load_all(run(tool("kubectl"), "kustomize", str(path)))


def by_kind(objects: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Iterable[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def key(obj: Obj) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def schema_errors(objects: Iterable[Obj], versions: Iterable[str] = KUBE_VERSIONS) -> list[str]:
    """Every object against the Kubernetes OpenAPI schemas (strict: no unknown fields) of each version.

    Kinds of other APIs (ServiceMonitor, Trigger) have no schema there and are reported as such,
    so that a caller must handle them explicitly.
    """
    import kubernetes_validate

    errors = []
    for version in versions:
        for obj in objects:
            where = f"{'/'.join(key(obj))} on {version}"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{where}: no schema for {obj['apiVersion']}")
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.absolute_path)
                errors.append(f"{where}: {path}: {e.message}")
    return errors


# ---- RBAC ------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Access:
    """One Kubernetes API request in RBAC terms."""

    verb: str
    group: str
    resource: str  # with the subresource: "triggers/status"
    namespace: str | None
    name: str | None

    def __str__(self) -> str:
        where = f"namespace {self.namespace}" if self.namespace else "cluster"
        target = f" {self.name}" if self.name else ""
        return f"{self.verb} {self.group or 'core'}/{self.resource}{target} ({where})"


@dataclass(frozen=True, order=True)
class Grant:
    """One verb on one resource from a rule of a role bound to the operator's ServiceAccount."""

    source: str  # e.g. "ClusterRole/cloudtriggers", for messages
    namespace: str | None  # of the RoleBinding; None: a ClusterRoleBinding (everywhere)
    group: str
    resource: str
    verb: str
    names: tuple[str, ...]  # resourceNames; empty: any

    def allows(self, a: Access) -> bool:
        if (self.group, self.resource, self.verb) != (a.group, a.resource, a.verb):
            return False
        if self.namespace is not None and a.namespace != self.namespace:
            return False  # a RoleBinding grants nothing cluster-scoped, nor in other namespaces
        # resourceNames cannot authorize requests that name no object (create, list, watch).
        return not self.names or a.name in self.names

    def __str__(self) -> str:
        where = f"in {self.namespace}" if self.namespace else "cluster-wide"
        names = f" named {list(self.names)}" if self.names else ""
        return f"{self.verb} {self.group or 'core'}/{self.resource}{names} {where} ({self.source})"


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}
# Discovery: /api, /api/v1, /apis, /apis/<group>, /apis/<group>/<version>, /version. Every
# authenticated user may read these (the system:discovery ClusterRole).
_DISCOVERY = re.compile(r"^/(version|api(/[^/]+)?|apis(/[^/]+){0,2})/?$")


def is_discovery(path: str) -> bool:
    return bool(_DISCOVERY.match(path))


def access_of(method: str, path: str, query: Mapping[str, str]) -> Access:
    """Map an API request to RBAC terms, as the API server's request-info resolver does."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 3:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, rest = parts[1], parts[3:]
    else:
        raise ValueError(f"not a resource request: {method} {path}")
    namespace = None
    # /namespaces/<ns>/<resource>/...; but /api/v1/namespaces/<name>[/status|/finalize] is the namespace.
    if rest[0] == "namespaces" and len(rest) >= 3 and not (group == "" and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], (rest[1] if len(rest) > 1 else None)
    if len(rest) > 2:
        resource += "/" + rest[2]
    method = method.upper()
    if method == "GET":
        verb = "get" if name else ("watch" if query.get("watch") in ("true", "1") else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _VERBS[method]
    return Access(verb, group, resource, namespace, name)


def grants_for(objects: Iterable[Obj], account: str, account_namespace: str) -> list[Grant]:
    """What the rendered RBAC objects grant the ServiceAccount (bindings to it, their roles' rules)."""
    objs = list(objects)
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o.get("rules") or []
        for o in objs
        if o["kind"] in ("ClusterRole", "Role")
    }
    grants = []
    for b in objs:
        if b["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subject = {"kind": "ServiceAccount", "name": account, "namespace": account_namespace}
        if not any({k: s.get(k) for k in subject} == subject for s in b.get("subjects") or []):
            continue
        scope = b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else None
        ref = b["roleRef"]
        role_ns = scope if ref["kind"] == "Role" else None
        rules = roles.get((ref["kind"], role_ns, ref["name"]))
        assert rules is not None, (
            f"{b['kind']} {b['metadata']['name']} binds a missing {ref['kind']} {ref['name']}"
        )
        for rule in rules:
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    for verb in rule.get("verbs") or []:
                        grants.append(
                            Grant(
                                f"{ref['kind']}/{ref['name']}",
                                scope,
                                group,
                                resource,
                                verb,
                                tuple(rule.get("resourceNames") or ()),
                            )
                        )
    return grants
