"""Shared machinery of the fault suite: one world per provider, crash plans, the invariant, statistics.

The invariant every scenario ends in (issue 5): the provider objects are exactly the ones the
Triggers name (no duplicate, no orphan), every Trigger is Ready or gone, no finalizer is left, and
every output Secret holds the live token.

Rounds: CLOUDTRIGGERS_FAULT_ROUNDS (default small, for CI) scales the randomized parts; the seed
is CLOUDTRIGGERS_FAULT_SEED or random, and is printed, and named in every failure.
"""

from __future__ import annotations

import base64
import os
import random
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudtriggers.kube import Body, Strings
from cloudtriggers.providers.base import Observed, Provider, Target
from cloudtriggers.runner import OperatorParts
from cloudtriggers.sandbox.gitlab import MAINTAINER
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for
from cloudtriggers.settings import Settings

NS = "apps"
FINALIZER = "cloudtriggers.io/finalizer"


def rounds(default: int) -> int:
    """How many randomized rounds to run: CLOUDTRIGGERS_FAULT_ROUNDS, else `default`."""
    return int(os.environ.get("CLOUDTRIGGERS_FAULT_ROUNDS") or default)


def seed() -> int:
    value = int(os.environ.get("CLOUDTRIGGERS_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"fault suite seed: {value} (CLOUDTRIGGERS_FAULT_SEED={value} reproduces it)")
    return value


# -- crash plans (in-process) ---------------------------------------------------------------------


class Crash(Exception):
    """The operator 'died' here: nothing it does afterwards reaches the API or the provider."""


class CrashPlan:
    """Counts the side effects of one operator instance and kills it just before side effect `at`.

    Side effects are the reconciler's writes: provider create/update/delete, the Trigger status
    patch and the output Secret write. Crashing *before* write n is the same, seen from outside, as
    crashing right *after* write n-1 (e.g. after the provider created a trigger and before its id was
    stored). Once dead, every call of this instance (reads too) raises Crash, as if the process were
    gone, and `on_death` makes the API refuse kopf's own writes until the test has stopped it.
    """

    def __init__(self, on_death: Callable[[], None] | None = None) -> None:
        self.on_death = on_death
        self.at: int | None = None
        self.steps: list[str] = []
        self.dead = threading.Event()
        self._lock = threading.Lock()

    def arm(self, at: int | None) -> None:
        with self._lock:
            self.at = at
            self.steps = []

    def check(self) -> None:
        if self.dead.is_set():
            raise Crash("the operator is dead")

    def step(self, what: str) -> None:
        self.check()
        with self._lock:
            if self.at is None:
                return
            self.steps.append(what)
            if len(self.steps) == self.at:
                self.dead.set()
                if self.on_death is not None:
                    self.on_death()
                raise Crash(f"crash before step {self.at}: {what}")

    def install(self, parts: OperatorParts) -> None:
        r = parts.runtime.reconciler
        r.kube = r.guard.kube = CrashingKube(r.kube, self)
        r.providers = {k: CrashingProvider(v, self) for k, v in r.providers.items()}  # type: ignore[misc]


class CrashingKube:
    def __init__(self, inner: Any, plan: CrashPlan) -> None:
        self.inner = inner
        self.plan = plan

    def get_trigger(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.plan.check()
        return self.inner.get_trigger(namespace, name)  # type: ignore[no-any-return]

    def patch_trigger_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.plan.step(f"status {sorted(status)}")
        return self.inner.patch_trigger_status(namespace, name, status)  # type: ignore[no-any-return]

    def read_output(self, namespace: str, name: str) -> Any:
        self.plan.check()
        return self.inner.read_output(namespace, name)

    def read_credentials(self, namespace: str, name: str) -> Any:
        self.plan.check()
        return self.inner.read_credentials(namespace, name)

    def hold_secret(self, namespace: str, name: str, secret: Any) -> bool:
        self.plan.step("hold secret")
        return self.inner.hold_secret(namespace, name, secret)  # type: ignore[no-any-return]

    def set_trigger_finalizer(
        self, body: dict[str, Any], present: bool, annotations: dict[str, str] | None = None
    ) -> dict[str, Any] | None:
        what = "add finalizer" if present else "remove finalizer"
        self.plan.step(f"{what} {sorted(annotations)}" if annotations else what)
        return self.inner.set_trigger_finalizer(body, present, annotations)  # type: ignore[no-any-return]

    def release_secret(self, namespace: str, name: str) -> bool:
        self.plan.step("release secret")
        return self.inner.release_secret(namespace, name)  # type: ignore[no-any-return]

    def list_triggers(self, namespace: str) -> list[dict[str, Any]]:
        self.plan.check()
        return self.inner.list_triggers(namespace)  # type: ignore[no-any-return]

    def list_held_secrets(self, namespaces: list[str]) -> list[tuple[str, str]]:
        self.plan.check()
        return self.inner.list_held_secrets(namespaces)  # type: ignore[no-any-return]

    def write_output_secret(
        self, owner: Body, name: str, data: Strings, annotations: Strings | None = None
    ) -> None:
        self.plan.step("secret")
        self.inner.write_output_secret(owner, name, data, annotations)

    def emit_event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.plan.check()
        self.inner.emit_event(owner, type_, reason, message)

    def namespace_terminating(self, namespace: str) -> bool:
        self.plan.check()
        return self.inner.namespace_terminating(namespace)  # type: ignore[no-any-return]


class CrashingProvider:
    def __init__(self, inner: Provider, plan: CrashPlan) -> None:
        self.inner = inner
        self.plan = plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def observe(self, target: Target, external_id: str) -> Observed | None:
        self.plan.check()
        return self.inner.observe(target, external_id)

    def find(self, target: Target, since: Any) -> list[Observed]:
        self.plan.check()
        return self.inner.find(target, since)

    def create(self, target: Target) -> Observed:
        self.plan.step("provider create")
        return self.inner.create(target)

    def update(self, target: Target, observed: Observed, changed: list[str]) -> Observed:
        self.plan.step("provider update")
        return self.inner.update(target, observed, changed)

    def delete(self, target: Target, external_id: str) -> None:
        self.plan.step("provider delete")
        self.inner.delete(target, external_id)


# -- providers ------------------------------------------------------------------------------------


@dataclass
class ProviderKit:
    """How one provider's world is set up, changed and inspected."""

    name: str
    prepare: Callable[[LocalWorld], dict[str, str]]  # the provider's account; its credentials Secret data
    block: Callable[[LocalWorld], dict[str, Any]]
    update: dict[str, Any]  # an in-place change of the block (None: the provider has none)
    replace: dict[str, Any]  # a change that replaces the provider object
    objects: Callable[[LocalWorld], list[tuple[str, str | None]]]  # (id, token) at the provider
    calls: Callable[[LocalWorld], int]
    secret: str = ""  # credentials Secret name

    def setup(self, w: LocalWorld) -> None:
        w.apply_secret(NS, "creds", self.prepare(w))


def _gitlab_prepare(w: LocalWorld) -> dict[str, str]:
    user = w.gitlab.add_user("bot")
    w.gitlab.add_project("group/web", {"bot": MAINTAINER})
    w.gitlab.add_project("group/api", {"bot": MAINTAINER})
    return {"token": user.token}


def _gitlab_objects(w: LocalWorld) -> list[tuple[str, str | None]]:
    return [(str(t["id"]), t["token"]) for p in ("group/web", "group/api") for t in w.gitlab.triggers(p)]


def _ack_prepare(w: LocalWorld) -> dict[str, str]:
    w.ack.add_account("bot")
    cid = w.ack.add_cluster("bot", applications=("default/web", "default/api"))
    w.ack_cluster = cid  # type: ignore[attr-defined]
    key = w.ack.issue_sts("bot")
    return {
        "accessKeyId": key.access_key_id,
        "accessKeySecret": key.access_key_secret,
        "securityToken": key.security_token,
    }


def _swr_prepare(w: LocalWorld) -> dict[str, str]:
    account = w.swr.add_account("bot")
    w.swr.add_repository("group", "team/web")
    return {"accessKey": account.access_key, "secretKey": account.secret_key, "projectId": account.project_id}


KITS: dict[str, ProviderKit] = {
    "gitlab": ProviderKit(
        name="gitlab",
        prepare=_gitlab_prepare,
        block=lambda w: {"url": w.gitlab.url, "project": "group/web"},
        update={"description": "redeploy, changed"},
        replace={"project": "group/api"},
        objects=_gitlab_objects,
        calls=lambda w: len(w.gitlab.calls()),
    ),
    "ack": ProviderKit(
        name="ack",
        prepare=_ack_prepare,
        block=lambda w: {
            "regionId": "cn-beijing",
            "clusterId": w.ack_cluster,  # type: ignore[attr-defined]
            "projectId": "default/web",
            "endpoint": w.ack.url,
        },
        update={"projectId": "default/api"},  # ACK has no update call: every change replaces
        replace={"type": "application"},
        objects=lambda w: [(str(t["id"]), t["token"]) for t in w.ack.triggers(w.ack_cluster)],  # type: ignore[attr-defined]
        calls=lambda w: len([c for c in w.ack.calls() if c.path != "/"]),
    ),
    "swr": ProviderKit(
        name="swr",
        prepare=_swr_prepare,
        block=lambda w: {
            "region": "cn-north-4",
            "organization": "group",
            "repository": "team/web",
            "application": "web",
            "clusterNamespace": "default",
            "clusterName": "prod",
            "endpoint": w.swr.url,
        },
        update={"enabled": False},
        replace={"application": "api"},
        objects=lambda w: [(t["name"], None) for t in w.swr.triggers("group", "team/web")],
        calls=lambda w: len(w.swr.calls()),
    ),
}


def new_world(kit: ProviderKit, settings: Settings | None = None) -> LocalWorld:
    w = LocalWorld(settings or Settings(credentials_poll=0.5, transient_backoff=(0.2, 2.0)))
    w.start()
    kit.setup(w)
    return w


def trigger_obj(w: LocalWorld, kit: ProviderKit, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cloudtriggers.io/v1alpha1",
        "kind": "Trigger",
        "metadata": {"name": name, "namespace": NS},
        "spec": {kit.name: kit.block(w), "credentialsSecretRef": {"name": "creds"}, **extra},
    }


# -- the invariant --------------------------------------------------------------------------------


def _secret_token(w: LocalWorld, name: str) -> str | None:
    s = w.secret(NS, name)
    if not s:
        return None
    raw = (s.get("data") or {}).get("token")
    return base64.b64decode(raw).decode() if raw else None


def violations(w: LocalWorld, kit: ProviderKit) -> list[str]:
    """What breaks the invariant now ([] when it holds)."""
    out: list[str] = []
    triggers = w.kube.list("cloudtriggers.io/v1alpha1/triggers", NS)
    objects = kit.objects(w)
    ids = [i for i, _ in objects]
    tokens = dict(objects)
    named: list[str] = []
    for t in triggers:
        meta, status = t["metadata"], t.get("status") or {}
        ref = meta["name"]
        if meta.get("deletionTimestamp"):
            out.append(f"{ref}: still deleting (finalizers {meta.get('finalizers')})")
            continue
        ready = condition(t)
        if ready.get("status") != "True" or ready.get("observedGeneration") != meta.get("generation"):
            out.append(f"{ref}: not Ready ({ready.get('reason')}: {ready.get('message')})")
        for key in ("pendingCreate", "pendingDelete"):
            if status.get(key):
                out.append(f"{ref}: {key} left in status")
        ext = status.get("externalId")
        if not ext:
            out.append(f"{ref}: no externalId")
            continue
        named.append(str(ext))
        if ext not in ids:
            out.append(f"{ref}: names {ext}, which does not exist at {kit.name}")
        elif tokens[ext] is not None:
            secret_name = status.get("secretName") or f"{ref}-trigger"
            if _secret_token(w, secret_name) != tokens[ext]:
                out.append(f"{ref}: Secret {secret_name} does not hold the live token of {ext}")
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        out.append(f"duplicate ids at {kit.name}: {dups}")
    orphans = sorted(set(ids) - set(named))
    if orphans:
        out.append(f"orphans at {kit.name}: {orphans}")
    if len(named) != len(set(named)):
        out.append(f"two Triggers name one object: {named}")
    return out


def wait_invariant(w: LocalWorld, kit: ProviderKit, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = violations(w, kit)
        if not found:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: invariant broken after {timeout} s: {found}")
        time.sleep(0.05)


def goal(w: LocalWorld, name: str, gone: bool) -> bool:
    obj = w.trigger(NS, name)
    if gone:
        return obj is None
    c = condition(obj)
    st = (obj or {}).get("status") or {}
    return bool(
        obj
        and c.get("reason") == "Available"
        and c.get("observedGeneration") == obj["metadata"].get("generation")
        and not st.get("pendingCreate")
        and not st.get("pendingDelete")
    )


def wait_goal(w: LocalWorld, name: str, gone: bool, timeout: float = 20.0) -> None:
    wait_for(lambda: goal(w, name, gone), timeout=timeout, what=f"{name} {'gone' if gone else 'Ready'}")


# -- statistics -----------------------------------------------------------------------------------


@dataclass
class Tally:
    """Rounds and provider calls per Trigger, per (scenario, provider), for the report.

    A round that fails ends its test, so failures are counted per test (failed_tests): a green run
    has none.
    """

    rows: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    failed_tests: list[str] = field(default_factory=list)

    def add(self, scenario: str, provider: str, calls: int) -> None:
        self.rows.setdefault((scenario, provider), []).append(calls)


TALLY = Tally()


def report_lines() -> list[str]:
    lines = [
        "| scenario | provider | rounds | calls/Trigger median | max |",
        "|---|---|---|---|---|",
    ]
    for (scenario, provider), calls in sorted(TALLY.rows.items()):
        lines.append(
            f"| {scenario} | {provider} | {len(calls)} | {statistics.median(calls):g} | {max(calls)} |"
        )
    lines.append(f"failed tests: {len(TALLY.failed_tests)} {TALLY.failed_tests or ''}".rstrip())
    path = os.environ.get("CLOUDTRIGGERS_FAULT_REPORT")
    if path:
        with open(path, "a") as f:
            f.write("\n".join(lines) + "\n")
    return lines


def spec_patch(kit: ProviderKit, change: Mapping[str, Any]) -> dict[str, Any]:
    return {"spec": {kit.name: dict(change)}}


ROTATING = frozenset({"gitlab", "ack"})  # the providers that issue a token


def scenarios(kit: ProviderKit) -> tuple[str, ...]:
    """What the crash suites run for a provider: rotation where it issues a token."""
    base = ("create", "update", "replace", "delete")
    return (*base, "rotate") if kit.name in ROTATING else base


def rotate_patch(value: str) -> dict[str, Any]:
    """Rotate now, the old token deleted at once (overlap 0s): the scenario ends in one pass."""
    return {
        "metadata": {"annotations": {"cloudtriggers.io/rotate-requested-at": value}},
        "spec": {"rotation": {"overlap": "0s"}},
    }


def secret_token(w: LocalWorld, name: str) -> str | None:
    return _secret_token(w, f"{name}-trigger")


def wait_rotated(w: LocalWorld, name: str, old: str | None, timeout: float) -> None:
    """Until the output Secret holds a token other than `old`; on timeout, say where the Trigger stands."""
    try:
        wait_for(lambda: secret_token(w, name) not in (None, old), timeout=timeout)
    except TimeoutError:
        obj = w.trigger(NS, name) or {}
        status = {k: v for k, v in (obj.get("status") or {}).items() if k != "atProvider"}
        raise AssertionError(f"{name}: no new token after {timeout} s; status {status}") from None
