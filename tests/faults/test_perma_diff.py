"""The perpetual-diff guard: a field the provider keeps changing back is repaired a few times, then named.

A provider that normalizes a value (or another tool that keeps editing it) would otherwise make the
operator write on every resync forever (operator-practice.md §3.4). After `perma_diff_repairs`
identical repairs in a row the Trigger stops, says Ready=False with the field, both values and what to
do, in its condition and in a Warning Event, and costs one observation per resync; a spec change
repairs again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cloudtriggers.metrics import PERMA_DIFF_STOPS
from cloudtriggers.providers.base import AccountLimiter, Provider
from cloudtriggers.providers.gitlab import GitLabProvider
from cloudtriggers.providers.swr import SwrProvider
from cloudtriggers.reconcile import Reconciler
from cloudtriggers.sandbox import LOOPBACK
from cloudtriggers.sandbox.gitlab import MAINTAINER, GitLabSandbox
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for
from cloudtriggers.sandbox.swr import SwrSandbox
from cloudtriggers.settings import Settings
from fakekube import FakeKube
from faults.faultkit import NS, TALLY


@dataclass
class Case:
    name: str
    kube: FakeKube
    rec: Reconciler
    spec: dict[str, Any]
    spec_change: dict[str, Any]
    writes: Any  # () -> int: write requests at the provider
    calls: Any  # () -> int: all requests at the provider
    meddle: Any  # (external id) -> None: change the field back at the provider


@pytest.fixture(params=["gitlab", "swr"])
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    kube = FakeKube()
    limiter = AccountLimiter(rate=1000, burst=1000)
    if request.param == "gitlab":
        with GitLabSandbox() as gl:
            user = gl.add_user("bot")
            pid = gl.add_project("group/web", {"bot": MAINTAINER})
            kube.put_secret(NS, "creds", {"token": user.token})
            provider: Provider = GitLabProvider(policy=LOOPBACK, limiter=limiter, timeout=(2.0, 5.0))
            yield Case(
                "gitlab",
                kube,
                Reconciler(kube, {"gitlab": provider}, Settings()),
                {
                    "gitlab": {"url": gl.url, "project": "group/web"},
                    "credentialsSecretRef": {"name": "creds"},
                },
                {"gitlab": {"url": gl.url, "project": "group/web", "description": "redeploy web"}},
                lambda: len([c for c in gl.calls() if c.method != "GET"]),
                lambda: len(gl.calls()),
                lambda ext, value="Apps/Web": gl.set_description(pid, int(ext), value),
            )
    else:
        with SwrSandbox() as sw:
            account = sw.add_account("bot")
            sw.add_repository("group", "web")
            kube.put_secret(NS, "creds", {"accessKey": account.access_key, "secretKey": account.secret_key})
            provider = SwrProvider(policy=LOOPBACK, limiter=limiter, timeout=(2.0, 5.0))
            block = {
                "region": "cn-north-4",
                "organization": "group",
                "repository": "web",
                "application": "web",
                "clusterNamespace": "default",
                "clusterName": "prod",
                "endpoint": sw.url,
            }
            yield Case(
                "swr",
                kube,
                Reconciler(kube, {"swr": provider}, Settings()),
                {"swr": block, "credentialsSecretRef": {"name": "creds"}},
                {"swr": {**block, "enabled": False}},
                lambda: len([c for c in sw.calls() if c.method != "GET"]),
                lambda: len(sw.calls()),
                lambda ext: sw.edit_trigger("group", "web", ext, enable="false"),
            )


def test_identical_repairs_stop_after_three_and_name_the_field(case: Case) -> None:
    kube, rec = case.kube, case.rec
    kube.apply(NS, "web", case.spec)
    rec.reconcile(NS, "web")
    assert kube.cond(NS, "web")["reason"] == "Available"
    ext = kube.status(NS, "web")["externalId"]
    created = case.writes()
    for _ in range(3):
        case.meddle(ext)
        rec.reconcile(NS, "web")
        assert kube.cond(NS, "web")["reason"] == "Available"
    assert case.writes() == created + 3  # three repairs went out
    case.meddle(ext)
    before = case.calls()
    stops = PERMA_DIFF_STOPS.labels(NS, "web", case.name)._value.get()
    for _ in range(5):  # five more resyncs: observations only, no write
        out = rec.reconcile(NS, "web")
        assert out.requeue_after is not None and out.requeue_after > 60  # the resync, not a retry
    assert case.writes() == created + 3
    assert PERMA_DIFF_STOPS.labels(NS, "web", case.name)._value.get() == stops + 5  # for the alert
    per_resync = (case.calls() - before) / 5
    ready, synced = kube.cond(NS, "web"), kube.cond(NS, "web", "Synced")
    assert ready["status"] == "False" and synced["status"] == "False"
    field = "description" if case.name == "gitlab" else "enabled"
    assert f"differs in {field}:" in ready["message"] and "change the spec" in ready["message"]
    warnings = [e for e in kube.events if e.get("type") == "Warning"]
    assert len(warnings) == 1 and field in warnings[0]["message"], warnings
    shown = (
        json.dumps(kube.status(NS, "web")).lower().replace("tokensha256", "").replace("tokencreatedat", "")
    )
    assert "token" not in shown
    TALLY.add("perpetual diff: calls per resync once stopped", case.name, int(per_resync))
    # A spec change ends the stop at once: GitLab gets the new description written; for SWR the new
    # spec asks for what the provider holds (enabled: false), so it is in sync without a write.
    kube.apply(NS, "web", {**case.spec, **case.spec_change})
    rec.reconcile(NS, "web")
    assert kube.cond(NS, "web")["reason"] == "Available"
    assert case.writes() == created + (4 if case.name == "gitlab" else 3)


@pytest.mark.parametrize("case", ["gitlab"], indirect=True)  # needs a free-text field: GitLab's description
def test_different_values_each_time_are_not_a_perpetual_diff(case: Case) -> None:
    kube, rec = case.kube, case.rec
    kube.apply(NS, "web", case.spec)
    rec.reconcile(NS, "web")
    created = case.writes()
    for i in range(6):  # someone edits it to something new each time: each edit is repaired
        case.meddle(kube.status(NS, "web")["externalId"], f"edited {i}")
        rec.reconcile(NS, "web")
        assert kube.cond(NS, "web")["reason"] == "Available"
    assert case.writes() == created + 6


# -- the operator in-process ----------------------------------------------------------------------


def test_operator_stops_a_perpetual_repair_loop() -> None:
    """Through kopf: forced reconciles (the annotation), an Event, and a spec change that heals it."""
    with LocalWorld(Settings(credentials_poll=0.5)) as w:
        user = w.gitlab.add_user("bot")
        pid = w.gitlab.add_project("group/web", {"bot": MAINTAINER})
        w.apply_secret(NS, "gl", {"token": user.token})

        def normalize(method: str, path: str, status: int) -> None:
            if method == "PUT" and status == 200:  # the server "normalizes" every description it is given
                for t in w.gitlab.triggers(pid):
                    w.gitlab.set_description(pid, t["id"], str(t["description"]).lower())

        w.start_operator()
        w.create_trigger(
            {
                "apiVersion": "cloudtriggers.io/v1alpha1",
                "kind": "Trigger",
                "metadata": {"name": "web", "namespace": NS},
                "spec": {
                    "gitlab": {"url": w.gitlab.url, "project": "group/web", "description": "Web"},
                    "credentialsSecretRef": {"name": "gl"},
                },
            }
        )
        wait_for(lambda: condition(w.trigger(NS, "web")).get("reason") == "Available", what="Ready")
        w.gitlab.after_request = normalize
        w.gitlab.set_description(pid, w.gitlab.triggers(pid)[0]["id"], "web")  # drifted once
        base = len(w.gitlab.calls("GET", "/triggers/"))
        for i in range(6):
            w.patch_trigger(
                NS, "web", {"metadata": {"annotations": {"cloudtriggers.io/reconcile-requested-at": str(i)}}}
            )
            wait_for(
                lambda i=i: len(w.gitlab.calls("GET", "/triggers/")) >= base + i + 1,  # type: ignore[misc]
                what=f"forced reconcile {i}",
            )
        wait_for(lambda: condition(w.trigger(NS, "web")).get("status") == "False", what="stopped")
        assert len(w.gitlab.calls("PUT")) == 3
        message = condition(w.trigger(NS, "web")).get("message", "")
        assert "differs in description: spec 'Web', gitlab 'web'" in message, message
        assert any("differs in description" in e.get("message", "") for e in w.events(NS, "web"))
        w.gitlab.after_request = None
        w.patch_trigger(NS, "web", {"spec": {"gitlab": {"description": "web"}}})
        wait_for(lambda: condition(w.trigger(NS, "web")).get("reason") == "Available", what="healed")
