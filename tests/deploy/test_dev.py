"""The development setup: deploy/dev (sandboxes and examples), the Tiltfile and scripts/e2e-kind.sh.

None of them can run here (no Docker, no cluster); what can be checked is: the manifests validate,
the examples pointed at the sandboxes become Ready with the real operator, and the kind script
issues the right commands (against stub tools).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from cloudtriggers.apiserver.cel import violations
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for
from cloudtriggers.settings import Settings
from deploy.deploykit import CRD, DEV, ROOT, Obj, by_kind, kustomize, one, run, schema_errors, tool

E2E_SCRIPT = ROOT / "scripts" / "e2e-kind.sh"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# examples.py imports its neighbour as `sandbox`.
sandbox = _load("sandbox", DEV / "sandbox.py")
examples = _load("cloudtriggers_dev_examples", DEV / "examples.py")


@pytest.fixture(scope="module")
def dev_objects() -> list[Obj]:
    return kustomize(DEV)


def test_sandbox_manifests_validate_and_serve_sandbox_py(dev_objects: list[Obj]) -> None:
    assert schema_errors(dev_objects) == []
    service = one(dev_objects, "Service", sandbox.SERVICE)
    assert service["metadata"]["namespace"] == sandbox.NAMESPACE
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == sandbox.PORTS
    deployment = one(dev_objects, "Deployment", "sandbox")
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "cloudtriggers:dev"
    assert c["command"][:2] == ["python", "/sandbox/sandbox.py"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == sandbox.PORTS
    [config] = by_kind(dev_objects, "ConfigMap")
    assert config["data"]["sandbox.py"] == (DEV / "sandbox.py").read_text()


def test_examples_point_at_the_sandboxes_with_their_credentials() -> None:
    objects = examples.render()
    triggers = by_kind(objects, "Trigger")
    # Every example file is there, one namespace per provider.
    docs = [d for path in (ROOT / "examples").glob("*.yaml") for d in yaml.safe_load_all(path.read_text())]
    assert len(triggers) == len([d for d in docs if d and d["kind"] == "Trigger"])
    assert schema_errors([o for o in objects if o["kind"] != "Trigger"]) == []
    crd = yaml.safe_load(CRD.read_text())
    for t in triggers:
        assert violations(crd, t) == [], t["metadata"]["name"]
        provider = examples.provider_of(t)
        block = t["spec"][provider]
        assert t["metadata"]["namespace"] == examples.namespace_of(provider)
        assert block["url" if provider == "gitlab" else "endpoint"] == sandbox.service_url(provider)
        secret = one(objects, "Secret", t["spec"]["credentialsSecretRef"]["name"])
        assert secret["metadata"]["namespace"] == t["metadata"]["namespace"]
        assert secret["stringData"] == sandbox.CREDENTIALS[provider]
        # The sandbox has what the example points at.
        if provider == "gitlab":
            assert block["project"] in sandbox.GITLAB_PROJECTS
        elif provider == "ack":
            region, apps = sandbox.ACK_CLUSTERS[block["clusterId"]]
            assert (region, block["projectId"] in apps) == (block["regionId"], True)
        else:
            assert (block["organization"], block["repository"]) in sandbox.SWR_REPOSITORIES


@pytest.fixture
def running_sandboxes() -> Iterator[dict[str, Any]]:
    providers = examples.implemented()
    started = sandbox.start(providers, "127.0.0.1", ports=dict.fromkeys(providers, 0))
    try:
        yield started
    finally:
        for s in started.values():
            s.stop()


def test_examples_become_ready_against_the_dev_sandboxes(running_sandboxes: dict[str, Any]) -> None:
    """What Tilt and the kind script set up, in-process: the operator makes every example Ready."""
    objects = examples.render(running_sandboxes, {p: s.url for p, s in running_sandboxes.items()})
    triggers = by_kind(objects, "Trigger")
    assert {examples.provider_of(t) for t in triggers} == set(running_sandboxes)
    with LocalWorld(Settings(credentials_poll=0.5)) as world:
        world.start_operator()
        for o in by_kind(objects, "Secret"):
            world.apply_secret(o["metadata"]["namespace"], o["metadata"]["name"], o["stringData"])
        for t in triggers:
            world.create_trigger(t)
        for t in triggers:
            ns, name = t["metadata"]["namespace"], t["metadata"]["name"]

            def ready(ns: str = ns, name: str = name) -> dict[str, Any] | None:
                obj = world.trigger(ns, name)
                return obj if condition(obj).get("status") == "True" else None

            assert wait_for(ready, timeout=20, what=f"{ns}/{name} Ready")["status"]["externalId"]


def test_tiltfile_is_consistent_with_the_repository() -> None:
    text = (ROOT / "Tiltfile").read_text()
    ast.parse(text)  # Starlark is a dialect of Python's syntax
    for path in ("crds/trigger.yaml", "deploy/helm/cloudtriggers", "deploy/dev", "deploy/dev/examples.py"):
        assert f"'{path}'" in text and (ROOT / path).exists(), path
    assert "sync('operator/cloudtriggers', SITE_PACKAGES + '/cloudtriggers')" in text
    values = yaml.safe_load((ROOT / "deploy/helm/cloudtriggers/values.yaml").read_text())
    assert f"'{values['httpPort']}:{values['httpPort']}'" in text
    for port in sandbox.PORTS.values():
        assert f"'{port}:{port}'" in text


def test_e2e_script_passes_shellcheck() -> None:
    run(tool("shellcheck"), str(E2E_SCRIPT), str(ROOT / "tests/deploy/install-tools.sh"))
    assert os.access(E2E_SCRIPT, os.X_OK)


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_e2e_script_issues_the_steps_in_order(tmp_path: Path) -> None:
    """Run scripts/e2e-kind.sh with stub docker, kind, kubectl, helm and pytest; check the commands."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in ("docker", "kind", "helm"):
        _stub(bin_dir / name, f'echo "{name} $*" >> "{log}"\n')
    _stub(
        bin_dir / "kubectl",
        f'echo "kubectl $*" >> "{log}"\n'
        'if [[ "$*" == *"-o yaml"* ]]; then echo "kind: Namespace"; fi\n'
        'if [[ "$*" == *"-f -"* ]]; then cat >/dev/null; fi\n',
    )
    _stub(
        bin_dir / "python",
        f'if [[ "$1 $2" == "-m pytest" ]]; then echo "pytest $*" >> "{log}"; exit 0; fi\n'
        f'exec "{sys.executable}" "$@"\n',
    )
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHON": str(bin_dir / "python"),
    }
    env.pop("PROVIDERS", None)
    proc = subprocess.run(["bash", str(E2E_SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    namespaces = [examples.namespace_of(p) for p in examples.implemented()]

    def index(prefix: str) -> int:
        found = [i for i, c in enumerate(calls) if c.startswith(prefix)]
        assert found, f"no call starting with {prefix!r} in:\n" + "\n".join(calls)
        return found[0]

    steps = [
        "kind create cluster --name cloudtriggers-e2e",
        "docker build --target runtime --tag cloudtriggers:dev .",
        "kind load docker-image cloudtriggers:dev --name cloudtriggers-e2e",
        "kubectl apply -k deploy/dev",
        "helm install cloudtriggers deploy/helm/cloudtriggers",
        "kubectl wait --for=condition=Established crd/triggers.cloudtriggers.io",
        f"kubectl -n {namespaces[0]} wait --for=condition=Ready trigger --all",
        "pytest -m pytest tests/e2e",
        "helm uninstall cloudtriggers",
        "kind delete cluster --name cloudtriggers-e2e",
    ]
    positions = [index(s) for s in steps]
    assert positions == sorted(positions), calls
    helm_install = calls[index("helm install")]
    assert f"--set watchNamespaces={{{','.join(namespaces)}}}" in helm_install
    assert "--set image.tag=dev" in helm_install and "--set image.pullPolicy=Never" in helm_install
