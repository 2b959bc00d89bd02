"""`cloudtriggers plan` says what the operator then does, for every provider and kind of change, and
writes nothing anywhere while it plans.

Each scenario: plan the manifests against the running world (the emulated API server and the
provider sandboxes, the operator running), check that the plan made no Kubernetes write and no
provider write, apply the manifests, let the operator act, and compare the Events it posted with
the plan's action.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudtriggers.kube import KubeClient
from cloudtriggers.providers import build_providers
from cloudtriggers.review.manifests import Document
from cloudtriggers.review.plan import Plan, Planner
from cloudtriggers.sandbox import LOOPBACK
from cloudtriggers.sandbox.kube import kube_client
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for
from cloudtriggers.settings import Settings
from faults.faultkit import KITS, NS, ProviderKit, trigger_obj

# What the operator posts for each planned action (the first write Event of the Trigger).
EVENT_OF = {
    "create": "Created",
    "update": "Updated",
    "replace": "Replaced",
    "adopt": "Adopted",
    "delete": "Deleted",
}
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(params=sorted(KITS))
def world(request: pytest.FixtureRequest) -> Iterator[tuple[LocalWorld, ProviderKit]]:
    kit = KITS[request.param]
    with LocalWorld(Settings(credentials_poll=0.5, transient_backoff=(0.2, 2.0))) as w:
        kit.setup(w)
        w.start_operator()
        yield w, kit


def _provider_writes(w: LocalWorld) -> int:
    calls = [
        *((c.method, c.path) for c in w.gitlab.calls()),
        *((c.method, c.path) for c in w.ack.calls()),
        *((c.method, c.path) for c in w.swr.calls()),
    ]
    return sum(1 for method, path in calls if method in WRITES or (method == "GET" and "Create" in path))


def plan(w: LocalWorld, docs: list[dict[str, Any]], prune: bool = False) -> Plan:
    """Plan in-process with the operator's own provider clients, and check that planning made no
    Kubernetes write (every request's method is recorded) and no provider write."""
    kube = KubeClient(kube_client(w.kube.url))
    methods: list[str] = []
    send = kube._request

    def record(method: str, path: str, *a: Any, **k: Any) -> Any:
        methods.append(method)
        return send(method, path, *a, **k)

    kube._request = record  # type: ignore[method-assign]
    writes = _provider_writes(w)
    planner = Planner(kube, build_providers(policy=LOOPBACK), Settings())
    existing = kube.list_all_triggers()
    in_files = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs}
    gone = [t for t in existing if (t["metadata"]["namespace"], t["metadata"]["name"]) not in in_files]
    result = planner.plan([Document("m.yaml", str(i), d) for i, d in enumerate(docs, 1)], existing)
    if prune:
        result.changes.extend(planner.plan([], gone, prune=True).changes)
    assert not WRITES & set(methods), f"the plan wrote to Kubernetes: {methods}"
    assert _provider_writes(w) == writes, "the plan wrote at the provider"
    return result


def _action(result: Plan, name: str) -> str:
    [change] = [c for c in result.changes if c.name == name]
    return change.action


def _settled(w: LocalWorld, name: str) -> bool:
    obj = w.trigger(NS, name)
    if obj is None:
        return True
    ready = condition(obj)
    return (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"] and ready.get(
        "reason"
    ) in ("Available", "Observed")


def _new_events(w: LocalWorld, name: str, before: int) -> list[str]:
    return [e["reason"] for e in w.events(NS, name)[before:]]


def test_plan_says_what_the_operator_then_does(world: tuple[LocalWorld, ProviderKit]) -> None:
    w, kit = world
    web = trigger_obj(w, kit, "web")

    def step(docs: list[dict[str, Any]], name: str, apply: Any, prune: bool = False) -> str:
        result = plan(w, docs, prune=prune)
        action = _action(result, name)
        before = len(w.events(NS, name))
        apply()
        wait_for(lambda: _settled(w, name), timeout=20, what=f"{name} settled after {action}")
        if action == "no-change":
            assert not set(_new_events(w, name, before)) & set(EVENT_OF.values())
        else:
            event = EVENT_OF[action]
            wait_for(lambda: event in _new_events(w, name, before), timeout=20, what=event)
            # No other action's Event (a delete-first replacement posts Created before Replaced).
            others = {e for a, e in EVENT_OF.items() if a != action} - (
                {"Created"} if action == "replace" else set()
            )
            assert not others & set(_new_events(w, name, before)), _new_events(w, name, before)
        return action

    # A new Trigger: create.
    assert step([web], "web", lambda: w.create_trigger(copy.deepcopy(web))) == "create"
    # The same manifest again: nothing.
    assert step([web], "web", lambda: None) == "no-change"
    # An in-place change where the provider has one, a replacement otherwise.
    update = {**web, "spec": {**web["spec"], kit.name: {**web["spec"][kit.name], **kit.update}}}
    expected = "replace" if kit.name == "ack" else "update"  # ACK has no update call
    patch = {"spec": {kit.name: kit.update}}
    assert step([update], "web", lambda: w.patch_trigger(NS, "web", patch)) == expected
    # A change only a new provider object can make.
    replace = {**update, "spec": {**update["spec"], kit.name: {**update["spec"][kit.name], **kit.replace}}}
    patch = {"spec": {kit.name: kit.replace}}
    assert step([replace], "web", lambda: w.patch_trigger(NS, "web", patch)) == "replace"
    # Gone from the files, with --prune: the provider trigger is deleted.
    assert step([], "web", lambda: w.delete_trigger(NS, "web"), prune=True) == "delete"
    assert kit.objects(w) == []


def _gitlab_web(w: LocalWorld) -> tuple[ProviderKit, dict[str, Any], str]:
    """The operator running with one GitLab Trigger "web" made and settled: the kit, its manifest
    and its provider id."""
    kit = KITS["gitlab"]
    kit.setup(w)
    w.start_operator()
    web = trigger_obj(w, kit, "web")
    w.create_trigger(copy.deepcopy(web))
    wait_for(lambda: _settled(w, "web"), timeout=20)
    return kit, web, w.trigger(NS, "web")["status"]["externalId"]  # type: ignore[index]


def test_blockers_and_adoption_are_planned_as_they_turn_out() -> None:
    with LocalWorld(Settings(credentials_poll=0.5)) as w:
        kit, web, ext = _gitlab_web(w)
        twin = trigger_obj(w, kit, "twin", externalId=ext)  # the same provider object
        no_creds = trigger_obj(w, kit, "nocreds")
        no_creds["spec"]["credentialsSecretRef"] = {"name": "absent"}
        invalid = trigger_obj(w, kit, "bad", resyncPeriod="1s")  # what only the operator refuses
        refused = trigger_obj(w, kit, "refused")
        refused["spec"]["gitlab"]["project"] = "justaname"  # what the API server refuses
        result = plan(w, [web, twin, no_creds, invalid, refused])
        by_name = {c.name: c for c in result.changes}
        assert by_name["web"].action == "no-change"
        assert (by_name["twin"].action, by_name["twin"].reason) == ("blocked", "Conflict")
        assert (by_name["nocreds"].action, by_name["nocreds"].reason) == ("blocked", "CredentialsMissing")
        assert (by_name["bad"].action, by_name["bad"].reason) == ("blocked", "InvalidSpec")
        assert by_name["refused"].reason == "InvalidSpec" and "would refuse it" in by_name["refused"].message
        assert result.exit_code() == 1
        for doc in (twin, no_creds, invalid):
            w.create_trigger(copy.deepcopy(doc))
        for name, reason in (("twin", "Conflict"), ("nocreds", "CredentialsMissing"), ("bad", "InvalidSpec")):

            def blocked(name: str = name, reason: str = reason) -> bool:
                return condition(w.trigger(NS, name)).get("reason") == reason

            wait_for(blocked)
        # Adoption: the twin's conflict gone, it takes the trigger over.
        w.delete_trigger(NS, "twin")
        w.patch_trigger(NS, "web", {"spec": {"deletionPolicy": "Orphan"}})
        wait_for(lambda: w.trigger(NS, "twin") is None)
        w.delete_trigger(NS, "web")
        wait_for(lambda: w.trigger(NS, "web") is None)
        adopt = trigger_obj(w, kit, "adopter", externalId=ext)
        result = plan(w, [adopt])
        assert _action(result, "adopter") == "adopt"
        w.create_trigger(copy.deepcopy(adopt))
        wait_for(lambda: "Adopted" in [e["reason"] for e in w.events(NS, "adopter")])


def test_the_plan_command_with_a_kubeconfig(tmp_path: Path) -> None:
    kit = KITS["swr"]
    with LocalWorld(Settings(credentials_poll=0.5)) as w:
        kit.setup(w)
        config = tmp_path / "kubeconfig"
        w.kube.write_kubeconfig(config)
        manifest = tmp_path / "t.yaml"
        other = {"apiVersion": "v1", "kind": "ConfigMap"}
        manifest.write_text(yaml.safe_dump_all([trigger_obj(w, kit, "web"), other]))
        cmd = [sys.executable, "-m", "cloudtriggers.cli", "plan", "-f", str(manifest)]
        cmd += ["--kubeconfig", str(config)]
        env = {**os.environ, "CLOUDTRIGGERS_ALLOWED_ENDPOINTS": "http://127.0.0.1"}

        def run(*extra: str, environ: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
            args = [*cmd, *extra]
            return subprocess.run(args, capture_output=True, text=True, env=environ, check=False, timeout=60)

        proc = run("-o", "json")
        assert proc.returncode == 2, proc.stderr  # changes
        out = json.loads(proc.stdout)
        assert [(t["name"], t["action"]) for t in out["triggers"]] == [("web", "create")]
        text = run()
        assert text.returncode == 2 and "+ Trigger apps/web (swr): create" in text.stdout
        assert "Plan: 1 to create, 0 to update, 0 to replace, 0 to delete." in text.stdout
        # Without the loopback allowance, the sandbox endpoint is refused: a blocker.
        strict = {k: v for k, v in env.items() if k != "CLOUDTRIGGERS_ALLOWED_ENDPOINTS"}
        blocked = run(environ=strict)
        assert blocked.returncode == 1 and "blocked: EndpointNotAllowed" in blocked.stdout
        prune = run("--prune")
        assert prune.returncode == 1 and "--prune needs --namespace or --selector" in prune.stderr
        assert w.swr.calls() == [] or all(c.method == "GET" for c in w.swr.calls())


def test_recreate_and_rotate_are_planned_as_they_turn_out() -> None:
    with LocalWorld(Settings(credentials_poll=0.5)) as w:
        _, web, ext = _gitlab_web(w)
        # Deleted at GitLab behind the operator's back: the next pass recreates it.
        w.gitlab.delete_trigger("group/web", int(ext))
        result = plan(w, [web])
        [change] = result.changes
        assert (change.action, change.new_token) == ("recreate", True)
        before = len(w.events(NS, "web"))
        w.patch_trigger(
            NS, "web", {"metadata": {"annotations": {"cloudtriggers.io/reconcile-requested-at": "1"}}}
        )
        wait_for(lambda: "Recreated" in _new_events(w, "web", before), timeout=20)
        # A rotation asked for in the manifest's annotation.
        wait_for(lambda: _settled(w, "web"), timeout=20)
        rotate = copy.deepcopy(web)
        rotate["metadata"]["annotations"] = {"cloudtriggers.io/rotate-requested-at": "now"}
        rotate["spec"]["rotation"] = {"overlap": "0s"}
        result = plan(w, [rotate])
        [change] = result.changes
        assert (change.action, change.new_token) == ("rotate", True)
        before = len(w.events(NS, "web"))
        w.patch_trigger(NS, "web", {"metadata": rotate["metadata"], "spec": {"rotation": {"overlap": "0s"}}})
        wait_for(lambda: "Rotated" in _new_events(w, "web", before), timeout=20)
