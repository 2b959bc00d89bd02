"""On a real cluster: the repository's install files are accepted, and deleting a namespace deletes
every provider trigger in it with nothing left behind (the two defects the last real-cluster try found).

The same namespace scenario runs in tests/faults against the emulated namespace controller, under
chosen and random deletion orders. Skipped cleanly without KUBECONFIG.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from e2e.cluster import KUBECONFIG, ClusterMixin, have_cluster

pytestmark = pytest.mark.e2e

if not have_cluster():
    pytest.skip("no KUBECONFIG: the e2e tests need a real cluster", allow_module_level=True)

from cloudtriggers.sandbox.local import LocalWorld  # noqa: E402
from cloudtriggers.settings import Settings  # noqa: E402
from deploy.deploykit import CHART, CRD, MANIFESTS, RELEASE, helm_template, tool  # noqa: E402
from faults.faultkit import KITS  # noqa: E402
from integration.test_rotation_operator import REFUSED_SETTINGS, refused_secret_scenario  # noqa: E402
from nsdeletion import delete_namespace, populate  # noqa: E402

PER_PROVIDER = 10  # as in the report: 10 Triggers of each provider, 30 in all


def kubectl(*args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [tool("kubectl"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "KUBECONFIG": KUBECONFIG},
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


@pytest.mark.parametrize(
    "path",
    [CRD, CHART / "crds" / "trigger.yaml", MANIFESTS / "crd.yaml"],
    ids=lambda p: str(p.relative_to(CRD.parents[1])),
)
def test_every_copy_of_the_crd_is_accepted_by_the_api_server(path: Path) -> None:
    assert "customresourcedefinition.apiextensions.k8s.io/triggers.cloudtriggers.io" in kubectl(
        "apply", "--dry-run=server", "-f", str(path)
    )


class World(ClusterMixin, LocalWorld):
    pass


@pytest.fixture
def world() -> Iterator[World]:
    w = World(Settings(http_port=0))
    w.start()
    try:
        yield w
    finally:
        w.stop()


def test_the_chart_and_the_manifests_are_accepted_by_the_api_server(world: World) -> None:
    rendered = subprocess.run(
        [tool("helm"), "template", RELEASE, str(CHART), "--namespace", world.ns, "--include-crds"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "deployment.apps/cloudtriggers" in kubectl(
        "apply", "--dry-run=server", "-n", world.ns, "-f", "-", stdin=rendered
    )
    # The kustomize manifests, moved into the test's namespace (a dry run does not create theirs).
    docs = [
        d for d in yaml.safe_load_all(kubectl("kustomize", str(MANIFESTS))) if d and d["kind"] != "Namespace"
    ]
    for d in docs:
        if "namespace" in d["metadata"]:
            d["metadata"]["namespace"] = world.ns
        for subject in d.get("subjects") or []:
            subject["namespace"] = world.ns
    applied = kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert "deployment.apps/cloudtriggers" in applied


def test_deleting_a_namespace_deletes_every_provider_trigger(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    kits = [KITS[p] for p in sorted(KITS)]
    creds = {kit.name: kit.prepare(world) for kit in kits}
    world.start_operator()
    populate(world, kits, creds, world.ns, PER_PROVIDER)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        outcome = delete_namespace(world, kits, world.ns, timeout=180)
    # Routine: the API server refusing new content in the namespace (our Deleted Events among it)
    # is expected, not a warning per Trigger.
    noisy = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("cloudtriggers") and r.levelno >= logging.WARNING
    ]
    print(f"namespace with {PER_PROVIDER * len(kits)} Triggers gone in {outcome.seconds:.1f} s")
    assert outcome.left == {}, f"provider triggers left alive: {outcome.left}"
    assert outcome.orphaned == 0
    assert outcome.held > 0
    assert outcome.seconds < 60  # the delete timeout (120 s) was never what ended it
    assert noisy == []


def test_the_charts_admission_policy_refuses_at_apply(world: World) -> None:
    """admissionPolicy.enabled on a real API server (1.30+): a Trigger whose endpoint the namespace's
    class does not allow is refused by kubectl with the server's message; an allowed one is created."""
    release = f"{world.ns}-vap"  # the policy is cluster-scoped: a name of this test's own
    values = {"admissionPolicy": {"enabled": True, "classes": {"default": ["https://gitlab.example.com"]}}}
    policy = [
        o for o in helm_template(values, release=release) if o["kind"].startswith("ValidatingAdmission")
    ]
    rendered = yaml.safe_dump_all(policy)
    kubectl("apply", "-f", "-", stdin=rendered)
    try:

        def trigger(name: str, url: str) -> str:
            spec = {"gitlab": {"url": url, "project": "g/w"}, "credentialsSecretRef": {"name": "none"}}
            meta = {"name": name, "namespace": world.ns}
            return yaml.safe_dump(
                {"apiVersion": "cloudtriggers.io/v1alpha1", "kind": "Trigger", "metadata": meta, "spec": spec}
            )

        # A new policy takes a moment to be enforced by every API server instance.
        deadline = time.monotonic() + 30
        while True:
            proc = subprocess.run(
                [tool("kubectl"), "apply", "--dry-run=server", "-f", "-"],
                input=trigger("denied", "https://gitlab.internal.example"),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env={**os.environ, "KUBECONFIG": KUBECONFIG},
            )
            if proc.returncode != 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert proc.returncode != 0
        assert f"ValidatingAdmissionPolicy '{release}-cloudtriggers-endpoints'" in proc.stderr
        assert "the endpoint https://gitlab.internal.example is not allowed in this namespace" in proc.stderr
        assert "created" in kubectl(
            "apply", "--dry-run=server", "-f", "-", stdin=trigger("ok", "https://gitlab.example.com")
        )
    finally:
        kubectl("delete", "--ignore-not-found", "-f", "-", stdin=rendered)


def test_a_trigger_name_too_long_for_its_secret_is_refused_at_apply(world: World) -> None:
    """The CRD's rule on the whole object: "<name>-trigger" must fit a Secret's name (253), else the
    API server would refuse the output Secret on every pass; kubectl says so at apply."""

    def apply(name: str) -> subprocess.CompletedProcess[str]:
        spec = {"gitlab": {"url": "https://gitlab.example.com", "project": "g/w"}}
        doc = {"apiVersion": "cloudtriggers.io/v1alpha1", "kind": "Trigger", "spec": spec}
        doc["metadata"] = {"name": name, "namespace": world.ns}
        return subprocess.run(
            [tool("kubectl"), "apply", "--dry-run=server", "-f", "-"],
            input=yaml.safe_dump(doc),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "KUBECONFIG": KUBECONFIG},
        )

    refused = apply("t" * 246)
    assert refused.returncode != 0
    assert "set spec.secretName" in refused.stderr
    assert apply("t" * 245).returncode == 0


def test_an_output_secret_the_api_server_refuses_is_said_on_the_trigger() -> None:
    """A real API server's ValidateSecretUpdate refuses a new token in a Secret made immutable: the
    Trigger says SecretRefused with the server's message, nothing is lost or made twice."""
    w = World(REFUSED_SETTINGS)
    w.start()
    try:
        refused_secret_scenario(w, w.ns)
    finally:
        w.stop()
