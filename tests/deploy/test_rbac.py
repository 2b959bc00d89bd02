"""The chart's RBAC grants exactly what the operator uses: no request is refused, no rule is unused.

The requests are recorded, not listed by hand: the operator runs in-process against the emulated
Kubernetes API through scenarios that reach every API call of the code (create, in-place update,
recreate after drift, default credentials, missing credentials, delete, a delete that keeps
failing), and cloudtriggers.leader takes, renews and releases the Lease the chart configures. Each
recorded request is mapped to (verb, apiGroup, resource, namespace, name) and checked against the
rendered roles, in both modes: cluster-wide and watchNamespaces. kopf's own observers run too
(scanning on): they list and watch CRDs and, with watchNamespaces, namespaces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import aiohttp.web
import attrs
import kmock
import pytest

from cloudtriggers.credentials import release_all
from cloudtriggers.kube import SECRET_FINALIZER, KubeClient
from cloudtriggers.leader import LeaseElector
from cloudtriggers.runner import OperatorParts, build_operator
from cloudtriggers.sandbox.gitlab import MAINTAINER
from cloudtriggers.sandbox.kopfthread import KopfThread, login_handler_for
from cloudtriggers.sandbox.kube import ClusterEmulator, KubeServer, kube_client
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for
from cloudtriggers.settings import Settings
from deploy.deploykit import (
    NAMESPACE,
    RELEASE,
    Access,
    Grant,
    access_of,
    grants_for,
    helm_template,
    is_discovery,
    one,
)

SCENARIO_AGENT = "cloudtriggers-rbac-scenario"  # the test's own requests, left out of the recording
HOOK_AGENT = "cloudtriggers-release-credentials-hook"
HOOK_ACCOUNT = f"{RELEASE}-release-credentials"
APPS = "apps"
DEFAULT_CREDENTIALS = ("ops", "gitlab-default")  # outside the watched namespace on purpose
MODES = {"cluster-wide": [], "namespaced": [APPS]}


@attrs.define(kw_only=True)
class RecordingEmulator(ClusterEmulator):
    """Keeps (method, path, query, User-Agent) of every request; kmock's own log may be trimmed."""

    log: list[tuple[str, str, dict[str, str], str]] = attrs.field(factory=list, init=False)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        self.log.append(
            (
                request.method.value,
                request.url.path,
                dict(request.params),
                request.headers.get("User-Agent", ""),
            )
        )
        return await super()._handle(request)


class RecordingWorld(LocalWorld):
    """LocalWorld whose operator runs as `cloudtriggers run` does, and which tells its requests apart."""

    def __init__(self, settings: Settings, namespaces: list[str]) -> None:
        super().__init__(settings)
        self.emulator = RecordingEmulator()
        self.kube = KubeServer(self.emulator, install_crd=False)
        self.namespaces = namespaces
        self.first_request = 0

    def start(self) -> RecordingWorld:
        super().start()  # installs the CRD
        assert self.api is not None
        self.api.user_agent = SCENARIO_AGENT
        self.first_request = len(self.emulator.log)
        return self

    def start_operator(self, prepare: Callable[[OperatorParts], None] | None = None) -> OperatorParts:
        self.parts = parts = build_operator(
            self.settings, kube_client(self.kube.url), login=login_handler_for(self.kube.url)
        )
        if prepare is not None:
            prepare(parts)
        kopf_settings = parts.settings
        kopf_settings.scanning.disabled = False  # kopf's real observers: CRDs and (namespaced) namespaces
        kopf_settings.watching.server_timeout = 30
        kopf_settings.networking.request_timeout = 10
        kopf_settings.networking.error_backoffs = [0.1, 0.2, 0.5, 1]
        self.operator = KopfThread(self.parts.registry, kopf_settings, namespaces=self.namespaces or None)
        self.operator.start()
        return parts

    def accesses(self, agent: str | None = None) -> set[Access]:
        """The operator's accesses, or (agent) those of the requests sent with that User-Agent."""
        used = set()
        for method, path, query, sent_by in self.emulator.log[self.first_request :]:
            mine = sent_by == agent if agent else sent_by not in (SCENARIO_AGENT, HOOK_AGENT)
            if mine and not is_discovery(path):
                used.add(access_of(method, path, query))
        return used

    # -- scenario helpers ---------------------------------------------------------------------------

    def trigger_obj(self, name: str, *, credentials: str | None = "gl") -> dict[str, Any]:
        spec: dict[str, Any] = {"gitlab": {"url": self.gitlab.url, "project": "group/web"}}
        if credentials:
            spec["credentialsSecretRef"] = {"name": credentials}
        return {
            "apiVersion": "cloudtriggers.io/v1alpha1",
            "kind": "Trigger",
            "metadata": {"name": name, "namespace": APPS},
            "spec": spec,
        }

    def reason(self, name: str, reason: str, type_: str = "Ready") -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.trigger(APPS, name)
            c = condition(obj, type_)
            generation = (obj or {}).get("metadata", {}).get("generation")
            return obj if c.get("reason") == reason and c.get("observedGeneration") == generation else None

        return wait_for(probe, timeout=15, what=f"{name}: {type_} reason={reason}")


def run_scenario(w: RecordingWorld, lease_name: str, lease_namespace: str) -> None:
    user = w.gitlab.add_user("bot")
    project = w.gitlab.add_project("group/web", {"bot": MAINTAINER})
    w.create_namespace(lease_namespace)  # the release's namespace, where the Lease lives
    w.apply_secret(APPS, "gl", {"token": user.token})
    w.apply_secret(*DEFAULT_CREDENTIALS, {"token": user.token})
    w.settings.default_credentials_endpoint = w.gitlab.url
    w.start_operator()

    # Create: status, the output Secret, an Event.
    w.create_trigger(w.trigger_obj("web"))
    ext = w.reason("web", "Available")["status"]["externalId"]
    # Update in place.
    w.patch_trigger(APPS, "web", {"spec": {"gitlab": {"description": "redeploy web"}}})
    w.reason("web", "Available")
    # Drift: deleted at the provider, recreated on request; the output Secret is updated.
    w.gitlab.delete_trigger(project, int(ext))
    w.patch_trigger(
        APPS, "web", {"metadata": {"annotations": {"cloudtriggers.io/reconcile-requested-at": "now"}}}
    )

    def recreated() -> str | None:
        new = (w.trigger(APPS, "web") or {}).get("status", {}).get("externalId")
        return new if new not in (None, ext) else None

    new_id = wait_for(recreated, what="a new trigger")
    assert [str(t["id"]) for t in w.gitlab.triggers(project)] == [new_id]
    # The operator's default credentials, in another namespace.
    w.create_trigger(w.trigger_obj("default-creds", credentials=None))
    w.reason("default-creds", "Available")
    # Missing credentials.
    w.create_trigger(w.trigger_obj("no-creds", credentials="later"))
    w.reason("no-creds", "CredentialsMissing")
    # Delete: the provider trigger, then the finalizer; then the credentials Secret is released.
    assert held(w, "gl")
    w.delete_trigger(APPS, "web")
    wait_for(lambda: w.trigger(APPS, "web") is None, what="web to be deleted")
    wait_for(lambda: not held(w, "gl"), what="the credentials Secret to be released")
    # A delete that keeps failing (GitLab answers 503): the operator asks whether the namespace terminates.
    w.create_trigger(w.trigger_obj("stuck"))
    w.reason("stuck", "Available")
    w.gitlab.fail_next(1000, 503)
    w.delete_trigger(APPS, "stuck")
    w.reason("stuck", "Deleting", "Synced")

    # Leader election as `cloudtriggers run --leader-election` does it (leader.lead): take the Lease,
    # renew it, another replica finds it held, release it.
    leader = LeaseElector(kube_client(w.kube.url), lease_name, lease_namespace, "pod-a", duration=15)
    standby = LeaseElector(kube_client(w.kube.url), lease_name, lease_namespace, "pod-b", duration=15)
    assert leader.try_acquire_or_renew()
    assert leader.try_acquire_or_renew()
    assert not standby.try_acquire_or_renew()
    leader.release()
    assert standby.try_acquire_or_renew()


def held(w: RecordingWorld, secret: str) -> bool:
    finalizers = ((w.kube.get("v1/secrets", APPS, secret) or {}).get("metadata") or {}).get("finalizers")
    return SECRET_FINALIZER in (finalizers or [])


@pytest.fixture(scope="module", params=list(MODES))
def recorded(request: pytest.FixtureRequest) -> Iterator[tuple[str, set[Access], list[dict[str, Any]]]]:
    """(mode, the operator's API accesses, the chart rendered for that mode)."""
    mode = request.param
    namespaces = MODES[mode]
    values = {
        "watchNamespaces": namespaces,
        "defaultCredentials": {"secret": "/".join(DEFAULT_CREDENTIALS), "endpoint": "http://127.0.0.1"},
    }
    rendered = helm_template(values)
    env = {
        e["name"]: e for e in one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    lease_name = env["CLOUDTRIGGERS_LEASE_NAME"]["value"]
    assert env["CLOUDTRIGGERS_LEASE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"

    settings = Settings(
        http_port=0,
        namespaces=namespaces,
        default_credentials_secret="/".join(DEFAULT_CREDENTIALS),
        credentials_poll=0.5,
        credentials_sweep=0.5,  # the sweep lists the held credentials Secrets during the scenario
    )
    world = RecordingWorld(settings, namespaces).start()
    try:
        run_scenario(world, lease_name, NAMESPACE)
        world.stop_operator()
        # helm uninstall's post-delete hook, as the Job runs it.
        assert held(world, "gl")  # "stuck" still uses it
        hook = KubeClient(kube_client(world.kube.url))
        hook.user_agent = HOOK_AGENT
        assert release_all(hook, namespaces, say=lambda _: None) == 1
        assert not held(world, "gl")
    finally:
        world.stop()
    used = world.accesses()
    HOOK_USES[mode] = world.accesses(HOOK_AGENT)
    yield mode, used, rendered


HOOK_USES: dict[str, set[Access]] = {}


def test_the_uninstall_hook_is_granted_exactly_what_it_uses(
    recorded: tuple[str, set[Access], list[dict[str, Any]]],
) -> None:
    mode, _, rendered = recorded
    used = HOOK_USES[mode]
    assert Access("patch", "", "secrets", APPS, "gl") in used
    grants = grants_for(rendered, HOOK_ACCOUNT, NAMESPACE)
    assert sorted(str(a) for a in used if not any(g.allows(a) for g in grants)) == []
    assert [str(g) for g in grants if not any(g.allows(a) for a in used)] == []


def test_the_scenario_reached_the_operators_api_calls(recorded: tuple[str, set[Access], Any]) -> None:
    mode, used, _ = recorded
    scope = APPS if mode == "namespaced" else None
    expected = {
        Access("watch", "cloudtriggers.io", "triggers", scope, None),  # kopf
        Access("patch", "cloudtriggers.io", "triggers", APPS, "web"),  # kopf: the finalizer
        Access("get", "cloudtriggers.io", "triggers", APPS, "web"),  # reconcile
        Access("patch", "cloudtriggers.io", "triggers/status", APPS, "web"),
        Access("create", "", "secrets", APPS, None),
        Access("patch", "", "secrets", APPS, "web-trigger"),
        Access("get", "", "secrets", *DEFAULT_CREDENTIALS),
        Access("list", "", "secrets", scope, None),  # the sweep of held credentials Secrets
        Access("patch", "", "secrets", APPS, "gl"),  # held while a Trigger uses it
        Access("list", "cloudtriggers.io", "triggers", APPS, None),  # who still uses it, before a release
        Access("create", "", "events", APPS, None),
        Access("get", "", "namespaces", None, APPS),
        Access("create", "coordination.k8s.io", "leases", NAMESPACE, None),
        Access("update", "coordination.k8s.io", "leases", NAMESPACE, RELEASE),
    }
    assert expected <= used, sorted(map(str, expected - used))


def test_every_request_is_granted(recorded: tuple[str, set[Access], list[dict[str, Any]]]) -> None:
    _, used, rendered = recorded
    grants = grants_for(rendered, RELEASE, NAMESPACE)
    refused = sorted(str(a) for a in used if not any(g.allows(a) for g in grants))
    assert refused == [], "the operator would be refused (add these to the chart's roles):\n" + "\n".join(
        refused
    )


def test_every_grant_is_used(recorded: tuple[str, set[Access], list[dict[str, Any]]]) -> None:
    _, used, rendered = recorded
    grants = grants_for(rendered, RELEASE, NAMESPACE)
    unused: list[Grant] = [g for g in grants if not any(g.allows(a) for a in used)]
    assert unused == [], "granted but never used (remove from the chart's roles):\n" + "\n".join(
        map(str, sorted(unused))
    )
