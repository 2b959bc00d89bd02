"""`cloudtriggers plan`: what the operator would do if these manifests were applied, read-only.

The decision is the reconciler's own: each Trigger of the files (the cluster's object with the
file's spec, or a new one) goes through Reconciler.reconcile, and each one the files no longer hold
(with --prune) through Reconciler.finalize, exactly as the running operator would take them. Only
the edges differ: reads go to the cluster and to the providers (with each Trigger's own
credentials); every write is recorded instead of sent. ReadOnlyKube answers a status write with the
object as the API server would, a provider create with a placeholder trigger; what the pass then
posts as Events (Created, Updated, Replaced, Recreated, Adopted) and the reason it ends with are the
plan. No Kubernetes write and no provider write, ever.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from ..apiserver import resources
from ..crd import build_crd
from ..kube import Body, CredentialsSecret, Kube, KubeApiError, Strings, now_rfc3339
from ..models import FINALIZER, KIND, VERSION
from ..output_secrets import OutputSecret
from ..providers.base import Observed, Provider, ProviderError, Target
from ..reconcile import Reconciler, Retry
from ..settings import Settings
from .manifests import Document

NEW = "(known after apply)"
# Where a pass ends when the change would not go through: the Trigger would not become Ready.
BLOCKERS = frozenset(
    {
        "InvalidSpec",
        "Conflict",
        "CredentialsMissing",
        "CredentialsInvalid",
        "Forbidden",
        "TargetNotFound",
        "NotFound",
        "TokenUnavailable",
        "SecretRefused",
        "EndpointNotAllowed",
        "ProviderError",
        "Throttled",
        "Waiting",
    }
)
# The Events a pass posts, most telling first (a delete-first replacement posts Created, then Replaced).
ACTIONS = {
    "Replaced": "replace",
    "Rotated": "rotate",
    "Recreated": "recreate",
    "Adopted": "adopt",
    "Created": "create",
}


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch, in place (what the API server does with the operator's patches)."""
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


class ReadOnlyKube:
    """The cluster for reads; every write is recorded and answered as the API server would."""

    def __init__(self, inner: Kube) -> None:
        self.inner = inner
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}  # what the passes see
        self.events: list[tuple[str, str, str, str]] = []  # (namespace/name, type, reason, message)
        self.writes: list[tuple[str, str]] = []  # (what, namespace/name): recorded, never sent
        self._rv = 0

    def _obj(self, namespace: str, name: str) -> dict[str, Any]:
        return self.objects[(namespace, name)]

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = f"plan-{self._rv}"
        return copy.deepcopy(obj)

    def get_trigger(self, namespace: str, name: str) -> dict[str, Any] | None:
        got = self.objects.get((namespace, name))
        return copy.deepcopy(got) if got is not None else self.inner.get_trigger(namespace, name)

    def patch_trigger_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("status", f"{namespace}/{name}"))
        obj = self._obj(namespace, name)
        obj.setdefault("status", {})
        _merge(obj["status"], status)
        return self._stamp(obj)

    def set_trigger_finalizer(
        self, body: dict[str, Any], present: bool, annotations: Strings | None = None
    ) -> dict[str, Any] | None:
        meta = body["metadata"]
        self.writes.append(("finalizer", f"{meta['namespace']}/{meta['name']}"))
        obj = self._obj(meta["namespace"], meta["name"])
        finalizers = [f for f in obj["metadata"].get("finalizers") or [] if f != FINALIZER]
        obj["metadata"]["finalizers"] = [*finalizers, FINALIZER] if present else finalizers
        if annotations:
            obj["metadata"]["annotations"] = {**(obj["metadata"].get("annotations") or {}), **annotations}
        return self._stamp(obj)

    def read_output(self, namespace: str, name: str) -> OutputSecret | None:
        return self.inner.read_output(namespace, name)

    def read_credentials(self, namespace: str, name: str) -> CredentialsSecret | None:
        return self.inner.read_credentials(namespace, name)

    def hold_secret(self, namespace: str, name: str, secret: CredentialsSecret) -> bool:
        self.writes.append(("hold", f"{namespace}/{name}"))
        return True

    def release_secret(self, namespace: str, name: str) -> bool:
        self.writes.append(("release", f"{namespace}/{name}"))
        return True

    def list_triggers(self, namespace: str) -> list[dict[str, Any]]:
        return self.inner.list_triggers(namespace)

    def list_held_secrets(self, namespaces: list[str]) -> list[tuple[str, str]]:
        return self.inner.list_held_secrets(namespaces)

    def write_output_secret(
        self, owner: Body, name: str, data: Strings, annotations: Strings | None = None
    ) -> None:
        self.writes.append(("secret", f"{owner['metadata']['namespace']}/{name}"))

    def emit_event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = owner["metadata"]
        self.events.append((f"{meta['namespace']}/{meta['name']}", type_, reason, message))

    def namespace_terminating(self, namespace: str) -> bool:
        return self.inner.namespace_terminating(namespace)


class PlannedProvider:
    """A provider whose reads go out and whose writes are recorded (a create answers a placeholder)."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str, tuple[str, ...]]] = []  # (what, trigger, fields)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create(self, target: Target) -> Observed:
        self.calls.append(("create", target.key, ()))
        outputs = {"token": NEW} if self.inner.has_outputs else None
        ext = f"{NEW} {target.key}"  # unique, so two new Triggers never claim the same object
        return Observed(ext, self.inner.desired(target), dict(target.known), None, False, outputs)

    def update(self, target: Target, observed: Observed, changed: list[str]) -> Observed:
        self.calls.append(("update", target.key, tuple(changed)))
        desired = self.inner.desired(target)
        fields = {**observed.fields, **{k: desired.get(k) for k in changed}}
        return Observed(
            observed.external_id,
            fields,
            observed.at_provider,
            observed.token,
            observed.token_masked,
            observed.outputs,
        )

    def delete(self, target: Target, external_id: str) -> None:
        self.calls.append(("delete", target.key, (external_id,)))


@dataclass
class Change:
    namespace: str
    name: str
    provider: str
    action: str  # create, recreate, update, replace, adopt, delete, orphan, remove, no-change, blocked
    fields: list[str] = field(default_factory=list)  # update: what changes in place
    reason: str = ""  # blocked: the condition reason the Trigger would get
    message: str = ""
    new_token: bool = False  # callers of the Trigger get a new token (its Secret changes)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def as_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "provider": self.provider,
            "action": self.action,
            "fields": self.fields,
            "reason": self.reason,
            "message": self.message,
            "newToken": self.new_token,
        }


@dataclass
class Plan:
    changes: list[Change]
    skipped: int = 0

    @property
    def blocked(self) -> bool:
        return any(c.action == "blocked" for c in self.changes)

    @property
    def changed(self) -> bool:
        return any(c.action not in ("no-change", "blocked") for c in self.changes)

    def exit_code(self) -> int:
        """As `terraform plan -detailed-exitcode`: 0 no change, 2 changes, 1 error (here: a blocker)."""
        return 1 if self.blocked else 2 if self.changed else 0

    def as_json(self) -> dict[str, Any]:
        return {"triggers": [c.as_json() for c in self.changes], "summary": self.summary()}

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.changes:
            out[c.action] = out.get(c.action, 0) + 1
        return out

    def as_text(self) -> str:
        marks = {
            "create": "+",
            "recreate": "+",
            "adopt": "<",
            "update": "~",
            "replace": "-/+",
            "delete": "-",
            "orphan": "-",
            "remove": "-",
            "blocked": "!",
        }
        lines = []
        for c in self.changes:
            if c.action == "no-change":
                continue
            head = f"{marks.get(c.action, ' ')} Trigger {c.ref} ({c.provider}): {c.action}"
            if c.fields:
                head += f" {', '.join(c.fields)} in place"
            if c.reason:
                head += f": {c.reason}"
            lines.append(head)
            if c.message:
                lines.append(f"    {c.message}")
            if c.new_token:
                lines.append("    callers get a new token: the output Secret changes")
        s = self.summary()
        parts = [f"{s.get(a, 0)} to {a}" for a in ("create", "update", "replace", "delete")]
        extra = [
            f"{n} {a}" for a, n in sorted(s.items()) if a not in ("create", "update", "replace", "delete")
        ]
        lines.append("Plan: " + ", ".join(parts + extra) + ".")
        return "\n".join(lines)


@contextmanager
def _quiet() -> Iterator[None]:
    """The reconciler logs each write it would make; in a plan they are the output, not log lines."""
    logger = logging.getLogger("cloudtriggers")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


class Planner:
    def __init__(self, kube: Kube, providers: Mapping[str, Provider], settings: Settings) -> None:
        self.kube = ReadOnlyKube(kube)
        self.providers = {n: PlannedProvider(p) for n, p in providers.items()}
        self.reconciler = Reconciler(self.kube, cast(dict[str, Provider], self.providers), settings)
        self.crd = build_crd()

    def plan(
        self,
        docs: Iterable[Document],
        existing: Iterable[Mapping[str, Any]],
        prune: bool = False,
        default_namespace: str = "default",
    ) -> Plan:
        current = {(o["metadata"]["namespace"], o["metadata"]["name"]): dict(o) for o in existing}
        wanted: list[tuple[Document, str]] = []
        skipped = 0
        for d in docs:
            if not d.is_trigger:
                skipped += 1
                continue
            wanted.append((d, d.key[0] or default_namespace))
        planned = {(ns, d.key[1]) for d, ns in wanted}
        # Who claims which provider object, as the watch would have told the running operator.
        for key, obj in current.items():
            if key not in planned:
                self.reconciler.claims.put(*self.reconciler.claim_of(obj))
        changes = []
        with _quiet():
            for d, ns in wanted:
                changes.append(self._one(d, ns, current.get((ns, d.key[1]))))
            if prune:
                for key, obj in sorted(current.items()):
                    if key not in planned:
                        changes.append(self._gone(obj))
        return Plan(changes, skipped)

    def _body(self, doc: Document, namespace: str, old: dict[str, Any] | None) -> dict[str, Any]:
        """The object the API server would store for `kubectl apply` of doc (resources.Refused if not)."""
        obj = copy.deepcopy(doc.obj)
        obj.setdefault("metadata", {})["namespace"] = namespace
        stored = resources.admit(self.crd, obj, copy.deepcopy(old), VERSION, strict=True)
        if old is None:
            meta = stored["metadata"]
            meta.update(
                uid=f"plan-{namespace}-{meta['name']}",
                generation=1,
                creationTimestamp=now_rfc3339(),
                resourceVersion="plan-0",
            )
            return stored  # the first pass adds our finalizer, as in the operator
        body = copy.deepcopy(old)
        meta = body["metadata"]
        for k in ("labels", "annotations"):
            if (doc.obj.get("metadata") or {}).get(k):
                meta[k] = {**(meta.get(k) or {}), **doc.obj["metadata"][k]}
        if stored.get("spec") != old.get("spec"):
            meta["generation"] = int(meta.get("generation") or 1) + 1
        body["spec"] = stored.get("spec")
        meta["finalizers"] = sorted({*(meta.get("finalizers") or []), FINALIZER})
        return body

    def _one(self, doc: Document, namespace: str, old: dict[str, Any] | None) -> Change:
        name = doc.key[1]
        spec = doc.obj.get("spec") or {}
        provider = next((p for p in ("gitlab", "ack", "swr") if p in spec), "unknown")
        change = Change(namespace, name, provider, "no-change")
        if old is not None and (old.get("metadata") or {}).get("deletionTimestamp"):
            change.action, change.reason = "blocked", "Deleting"
            change.message = "the Trigger is being deleted; apply it again once it is gone"
            return change
        try:
            body = self._body(doc, namespace, old)
        except resources.Refused as e:
            change.action, change.reason = "blocked", "InvalidSpec"
            change.message = f"the API server would refuse it: {e.status.get('message')}"
            return change
        self.kube.objects[(namespace, name)] = body
        calls_before = {n: len(p.calls) for n, p in self.providers.items()}
        events_before = len(self.kube.events)
        try:
            outcome = self.reconciler.reconcile(namespace, name, copy.deepcopy(body))
        except (KubeApiError, ProviderError, OSError) as e:
            change.action, change.reason, change.message = "blocked", "Error", str(e)
            return change
        events = [e for e in self.kube.events[events_before:] if e[0] == change.ref]
        calls = [c for n, p in self.providers.items() for c in p.calls[calls_before[n] :]]
        reasons = [e[2] for e in events]
        final = (self.kube.objects[(namespace, name)].get("status") or {}).get("conditions") or []
        ready: dict[str, Any] = next((c for c in final if c.get("type") == "Ready"), {})
        has_outputs = bool(getattr(self.providers.get(provider), "has_outputs", False))
        if outcome.reason in BLOCKERS or outcome.reason == "Paused":
            change.action = "no-change" if outcome.reason == "Paused" else "blocked"
            change.reason = outcome.reason
            change.message = str(ready.get("message") or "")
            return change
        for reason, action in ACTIONS.items():
            if reason in reasons:
                change.action = action
                change.new_token = has_outputs and action in ("create", "recreate", "replace", "rotate")
                break
        updates = [f for what, _, fields in calls if what == "update" for f in fields]
        if change.action == "no-change" and updates:
            change.action, change.fields = "update", sorted(set(updates))
        elif change.action == "no-change" and any(what != "update" for what, _, _ in calls):
            change.action = "replace"  # a write without a story: say the most
        change.message = next((e[3] for e in events if e[2] in ACTIONS or e[2] == "Updated"), "")
        return change

    def _gone(self, obj: dict[str, Any]) -> Change:
        meta = obj["metadata"]
        spec = obj.get("spec") or {}
        provider = next((p for p in ("gitlab", "ack", "swr") if p in spec), "unknown")
        change = Change(meta["namespace"], meta["name"], provider, "remove")
        self.kube.objects[(meta["namespace"], meta["name"])] = copy.deepcopy(obj)
        try:
            what = self.reconciler.finalize(copy.deepcopy(obj))
        except Retry as e:
            change.action, change.reason, change.message = "blocked", "Deleting", str(e)
            return change
        ext = (obj.get("status") or {}).get("externalId") or "(from an interrupted create)"
        if what == "deleted":
            change.action, change.message = "delete", f"deletes {provider} trigger {ext}"
        elif what == "orphaned":
            change.action, change.message = "orphan", f"{provider} trigger {ext} is left at the provider"
        else:
            change.message = "nothing at the provider"
        return change


__all__ = ["KIND", "Change", "Plan", "Planner", "ReadOnlyKube"]
