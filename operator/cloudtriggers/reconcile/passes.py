"""One reconcile pass: its state (_Pass), how it ends (Outcome, Retry, _Stop), the conditions it
writes, and the flush of its status and Events. Also _Base, what every phase mixin may use."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..credentials import CredentialsGuard
from ..kube import Kube, now_rfc3339
from ..models import FINALIZER, TriggerSpec
from ..providers.base import CredentialsBreaker, Observed, Provider, Target
from ..settings import Settings
from .claims import Claim, ClaimIndex

# The package's one logger, named as the module was before it became a package.
log = logging.getLogger("cloudtriggers.reconcile")


def has_finalizer(obj: Mapping[str, Any]) -> bool:
    return FINALIZER in ((obj.get("metadata") or {}).get("finalizers") or ())


def written(status: Mapping[str, Any] | None) -> bool:
    """Whether this stored status is one of ours: each of our writes carries conditions or an intent."""
    s = status or {}
    return bool(s.get("conditions") or s.get("pendingCreate") or s.get("externalId"))


PAUSED_ANNOTATION = "cloudtriggers.io/paused"
REQUESTED_ANNOTATION = "cloudtriggers.io/reconcile-requested-at"
# A Trigger's first create intent, stored with our finalizer in one write (create.py); it counts only
# while the Trigger has no status of ours, which from then on carries the intent (pendingCreate).
INTENT_ANNOTATION = "cloudtriggers.io/create-intent"
CLOCK_SKEW = timedelta(minutes=1)


# -- conditions -----------------------------------------------------------------------------------


def set_condition(
    conditions: list[dict[str, Any]], type_: str, status: bool, reason: str, message: str, generation: int
) -> list[dict[str, Any]]:
    """Return conditions with `type_` set; lastTransitionTime moves only when status flips."""
    value = "True" if status else "False"
    out = [dict(c) for c in conditions if c.get("type") != type_]
    old = next((c for c in conditions if c.get("type") == type_), None)
    ltt = old.get("lastTransitionTime") if old and old.get("status") == value else now_rfc3339()
    out.append(
        {
            "type": type_,
            "status": value,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": ltt,
        }
    )
    order = {"Ready": 0, "Synced": 1}
    return sorted(out, key=lambda c: order.get(c.get("type", ""), 9))


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


# -- outcome --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """When to reconcile again. None: only when the Trigger changes."""

    requeue_after: float | None
    reason: str = ""
    # Re-read this credentials Secret while waiting; reconcile at once when it changes.
    watch_secret: tuple[str, str, str] | None = None  # namespace, name, resourceVersion ("" = absent)


class Retry(Exception):
    """The delete path must be retried after `delay` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class _Gone(Exception):
    """The Trigger went from the API server while its pass ran."""


class _Stop(Exception):
    """End this reconcile with the given Ready/Synced outcome (not an error of the operator)."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        requeue: float | None,
        ready: bool | None = False,
        synced: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.requeue = requeue
        self.ready = ready  # None: keep Ready as it was
        self.synced = synced  # None: True unless a Conflict


# -- one pass -------------------------------------------------------------------------------------


@dataclass
class _Pass:
    """One reconcile pass over one Trigger: the object and the status being built."""

    obj: dict[str, Any]
    status: dict[str, Any]
    events: list[tuple[str, str, str]] = field(default_factory=list)
    # Said on every condition of the pass (e.g. the credentials Secret is being deleted).
    notes: list[str] = field(default_factory=list)
    # Why no new provider trigger may be made in this pass ("" = it may).
    no_create: str = ""

    @property
    def meta(self) -> dict[str, Any]:
        return self.obj["metadata"]  # type: ignore[no-any-return]

    @property
    def ref(self) -> str:
        return f"{self.meta['namespace']}/{self.meta['name']}"

    @property
    def generation(self) -> int:
        return int(self.meta.get("generation") or 0)


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Base:
    """What every phase mixin of the Reconciler may use.

    The attributes are set in Reconciler.__init__. The methods under TYPE_CHECKING are those one
    phase calls on another (or on the Reconciler): declared here for the type checker only, so at
    run time each name resolves to its one implementation in the composed Reconciler.
    """

    kube: Kube
    guard: CredentialsGuard
    providers: Mapping[str, Provider]
    settings: Settings
    claims: ClaimIndex
    breaker: CredentialsBreaker
    _failures: dict[str, int]
    _repairs: dict[str, tuple[tuple[Any, ...], int]]
    versions: dict[str, str]
    clock = staticmethod(time.time)  # the wall clock of rotation times; tests set a simulated one

    if TYPE_CHECKING:
        # reconciler.py
        def lock(self, uid: str) -> contextlib.AbstractContextManager[None]: ...
        def claim_of(self, obj: Mapping[str, Any]) -> tuple[str | None, Claim]: ...
        @staticmethod
        def _implicit_id(spec: TriggerSpec, meta: Mapping[str, Any]) -> str | None: ...
        def _backoff(self, uid: str, kind: str) -> float: ...
        def _credentials(
            self, p: _Pass, spec: TriggerSpec, *, deleting: bool = False
        ) -> tuple[dict[str, str], tuple[str, str, str] | None]: ...
        def _target(self, p: _Pass, spec: TriggerSpec, creds: Mapping[str, str]) -> Target: ...

        # create.py
        def _intent(self, p: _Pass) -> dict[str, Any] | None: ...
        def _write_secret(
            self,
            p: _Pass,
            name: str,
            outputs: Mapping[str, str],
            annotations: Mapping[str, str] | None = None,
        ) -> None: ...
        def _create(
            self,
            p: _Pass,
            spec: TriggerSpec,
            provider: Provider,
            target: Target,
            *,
            exists: bool = False,
            reason: str = "Created",
        ) -> Observed: ...

        # replace.py
        def _replace(
            self,
            p: _Pass,
            spec: TriggerSpec,
            provider: Provider,
            target: Target,
            old: Observed,
            changed: list[str],
        ) -> Observed: ...
        def _finish_replacement(self, p: _Pass, provider: Provider, target: Target) -> None: ...

        # rotate.py
        def _schedule(self, p: _Pass, spec: TriggerSpec) -> None: ...
        def _rotation_due(self, p: _Pass, spec: TriggerSpec, provider: Provider) -> str | None: ...
        def _overlap_left(self, pending: dict[str, Any]) -> float: ...
        def _rotate(
            self, p: _Pass, spec: TriggerSpec, provider: Provider, target: Target, old: Observed, why: str
        ) -> Observed: ...

    def _hold(self, p: _Pass, annotations: Mapping[str, str] | None = None) -> None:
        """Our finalizer on the Trigger as the pass knows it, `annotations` in the same write."""
        got = self.kube.set_trigger_finalizer(p.obj, True, dict(annotations) if annotations else None)
        if got is None:
            raise _Gone
        p.obj = got
        self.versions[p.meta["uid"]] = str(got["metadata"].get("resourceVersion") or "")

    def _flush(self, p: _Pass) -> None:
        """Write status when it differs from what is stored, then record this pass's events (posted
        from a thread of their own when the operator runs one: event_poster.py).

        Called mid-pass too (the create intent must be stored before the provider call), so the
        comparison is always against the last stored status.
        """
        stored = p.obj.get("status") or {}
        patch: dict[str, Any] = {k: v for k, v in p.status.items() if stored.get(k) != v}
        patch.update({k: None for k in stored if k not in p.status})
        if patch:
            updated = self.kube.patch_trigger_status(p.meta["namespace"], p.meta["name"], patch)
            p.obj = {
                **p.obj,
                "status": updated.get("status") or dict(p.status),
                "metadata": updated["metadata"],
            }
            self.versions[p.meta["uid"]] = str(updated["metadata"].get("resourceVersion") or "")
        for type_, reason, message in p.events:
            level = logging.WARNING if type_ == "Warning" else logging.INFO
            log.log(level, "%s: %s: %s", p.ref, reason, message, extra={"trigger": p.ref})
            self.kube.emit_event(p.obj, type_, reason, message)
        p.events.clear()


def meta_uid(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["uid"])


class _CredentialsMissing(Exception):
    def __init__(self, message: str, secret: tuple[str, str, str]) -> None:
        super().__init__(message)
        self.secret = secret


def _endpoint_of(block: Any) -> str:
    """Where a Trigger's calls go: GitLab's url, or an ACK/SWR endpoint override ("" = the official one)."""
    return str(getattr(block, "url", None) or getattr(block, "endpoint", None) or "")


def _creds_version(creds: Mapping[str, str], secret_ref: tuple[str, str, str] | None) -> str:
    """What the circuit breaker compares: the credentials themselves, not the Secret's
    resourceVersion, which also moves when only metadata changes (our finalizer going on)."""
    if secret_ref is None:
        return ""
    return hashlib.sha256("\0".join(f"{k}={v}" for k, v in sorted(creds.items())).encode()).hexdigest()[:16]


def _same_endpoint(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()
