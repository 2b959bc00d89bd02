"""`cloudtriggers validate`: offline, and what it says is what the API server says.

Every manifest tests/unit/test_crd_cel.py expects the API server to refuse is sent to the emulated
API server (which refuses as kube-apiserver does: tests/unit/test_kube_apiserver_rules.py) and given
to validate; both must refuse it with the same message.
"""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes.client import CoreV1Api, CustomObjectsApi, V1Namespace
from kubernetes.client.exceptions import ApiException

from cloudtriggers.review.manifests import Document, load
from cloudtriggers.review.validate import check, validate
from cloudtriggers.sandbox.kube import KubeServer, kube_client
from unit.test_crd_cel import ACK, GITLAB, REJECTED, trigger

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[CustomObjectsApi, KubeServer]]:
    with KubeServer() as kube:
        api = kube_client(kube.url)
        CoreV1Api(api).create_namespace(V1Namespace.model_validate({"metadata": {"name": "apps"}}))
        yield CustomObjectsApi(api), kube


def _answer(api: CustomObjectsApi, obj: dict[str, Any], old: dict[str, Any] | None) -> str:
    """The emulated server's message for kubectl apply of obj (an update of old when given)."""
    args = ("cloudtriggers.io", "v1alpha1", "apps", "triggers")
    name = obj["metadata"]["name"]
    with contextlib.suppress(ApiException):
        api.delete_namespaced_custom_object(*args, name)
    try:
        if old is None:
            api.create_namespaced_custom_object(*args, copy.deepcopy(obj), field_validation="Strict")
        else:
            stored = cast(dict[str, Any], api.create_namespaced_custom_object(*args, copy.deepcopy(old)))
            new = copy.deepcopy(obj)
            new["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
            api.replace_namespaced_custom_object(*args, name, new, field_validation="Strict")
    except ApiException as e:
        assert e.body is not None
        return str(json.loads(e.body)["message"])
    return ""


@pytest.mark.parametrize(("obj", "old", "says"), REJECTED)
def test_validate_refuses_what_the_server_refuses_with_its_message(
    server: tuple[CustomObjectsApi, KubeServer], obj: dict[str, Any], old: dict[str, Any] | None, says: str
) -> None:
    api, _ = server
    expected = _answer(api, obj, old)
    assert expected, "the emulated server admitted it"
    result = check(Document("t.yaml", "1", obj), old)
    assert not result.valid
    assert result.message == expected
    assert says in result.message
    assert all(p.by == "apiserver" for p in result.problems)


def test_the_repositorys_manifests_are_valid() -> None:
    report = validate(load([str(ROOT / "examples")]))
    assert report.valid and report.summary()["triggers"] >= 3, report.as_text()


def test_what_only_the_operator_refuses_is_reported_as_its_invalid_spec() -> None:
    obj = trigger(gitlab=GITLAB, resyncPeriod="1s")  # the schema's pattern accepts it
    [problem] = check(Document("t.yaml", "1", obj)).problems
    assert (problem.field, problem.by) == ("spec.resyncPeriod", "operator")
    assert "at least 5s" in problem.message


def test_transition_rules_need_the_previous_version(tmp_path: Path) -> None:
    before, after = tmp_path / "main.yaml", tmp_path / "branch.yaml"
    before.write_text(yaml.safe_dump(trigger(ack=ACK)))
    after.write_text(yaml.safe_dump(trigger(ack={**ACK, "clusterId": "cother"})))
    assert validate(load([str(after)])).valid  # as a create, it is fine
    report = validate(load([str(after)]), load([str(before)]))
    assert not report.valid and "clusterId is immutable" in report.results[0].message


def test_files_lists_stdin_and_the_command(tmp_path: Path) -> None:
    good, bad = trigger(gitlab=GITLAB), trigger(gitlab={"project": "justaname"})
    bad["metadata"]["name"] = "bad"
    listed = {"apiVersion": "v1", "kind": "List", "items": [good, {"apiVersion": "v1", "kind": "ConfigMap"}]}
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.yaml").write_text(yaml.safe_dump_all([listed, bad]))
    (tmp_path / "d" / "notes.txt").write_text("not a manifest")
    cmd = [sys.executable, "-m", "cloudtriggers.cli", "validate"]
    proc = subprocess.run(
        [*cmd, "-f", str(tmp_path / "d"), "-o", "json"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["summary"] == {"triggers": 2, "valid": 1, "invalid": 1, "skipped": 1}
    [refused] = [t for t in out["triggers"] if not t["valid"]]
    assert (refused["file"], refused["document"], refused["name"]) == (
        str(tmp_path / "d" / "a.yaml"),
        "2",
        "bad",
    )
    assert (
        refused["errors"][0]["field"] == "spec.gitlab.project" and refused["errors"][0]["by"] == "apiserver"
    )
    ok = subprocess.run(
        [*cmd, "-f", "-"], input=yaml.safe_dump(good), capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0 and "1 Trigger(s): 1 valid, 0 invalid" in ok.stdout
    missing = subprocess.run(
        [*cmd, "-f", str(tmp_path / "nope")], capture_output=True, text=True, check=False
    )
    assert missing.returncode == 1 and "no such file or directory" in missing.stderr
