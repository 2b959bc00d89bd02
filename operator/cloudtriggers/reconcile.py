"""Provider-agnostic reconcile: observe the provider, compare with the spec, act, write conditions.

Everything here is plain Python over two interfaces (Kube, Provider), so it is tested without kopf.
Level-triggered: each pass starts from the Trigger as stored and the provider as it answers now.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from .credentials import CredentialsGuard
from .kube import Kube, SecretConflict, now_rfc3339
from .logs import register_secret
from .metrics import CIRCUITS, DRIFT_REPAIRS, ORPHANED, RECONCILE_SECONDS, RECONCILES, Timer
from .models import (
    FINALIZER,
    TriggerSpec,
    default_description,
    default_secret_name,
    parse_duration,
    swr_default_name,
    token_sha256,
)
from .providers.base import (
    CredentialsBreaker,
    CredentialsError,
    ErrorClass,
    Observed,
    Provider,
    ProviderError,
    Target,
    Verdict,
    account_key,
    diff,
    redact,
)
from .settings import Settings

log = logging.getLogger(__name__)


def has_finalizer(obj: Mapping[str, Any]) -> bool:
    return FINALIZER in ((obj.get("metadata") or {}).get("finalizers") or ())


PAUSED_ANNOTATION = "cloudtriggers.io/paused"
REQUESTED_ANNOTATION = "cloudtriggers.io/reconcile-requested-at"
CREDENTIAL_KEYS = {
    "gitlab": ("token",),
    "ack": ("accessKeyId", "accessKeySecret"),
    "swr": ("accessKey", "secretKey"),
}
OPTIONAL_CREDENTIAL_KEYS = {"gitlab": (), "ack": ("securityToken",), "swr": ("projectId", "securityToken")}
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


# -- conflict detection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    uid: str
    ref: str  # namespace/name
    created: str  # metadata.creationTimestamp
    owns: bool  # status.externalId names the object (it created or adopted it)


class ClaimIndex:
    """Which Triggers point at which provider object, fed by the watch (and by our own writes).

    Thread-safe: the watch updates it in the event loop, reconciles read it in worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, dict[str, Claim]] = {}
        self._by_uid: dict[str, str] = {}

    def put(self, key: str | None, claim: Claim) -> None:
        with self._lock:
            old = self._by_uid.pop(claim.uid, None)
            if old is not None:
                self._by_key.get(old, {}).pop(claim.uid, None)
            if key:
                self._by_key.setdefault(key, {})[claim.uid] = claim
                self._by_uid[claim.uid] = key

    def drop(self, uid: str) -> None:
        with self._lock:
            old = self._by_uid.pop(uid, None)
            if old is not None:
                self._by_key.get(old, {}).pop(uid, None)

    def others(self, key: str, uid: str) -> list[Claim]:
        with self._lock:
            return [c for u, c in self._by_key.get(key, {}).items() if u != uid]


def winner(me: Claim, others: list[Claim]) -> Claim:
    """Who keeps an object claimed twice: the owner, then the oldest, then by name."""
    return min([me, *others], key=lambda c: (not c.owns, c.created, c.ref))


# -- outcome --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """When to reconcile again. None: only when the Trigger changes."""

    requeue_after: float | None
    reason: str = ""
    # Re-read this credentials Secret while waiting; reconcile at once when it changes.
    watch_secret: tuple[str, str, str] | None = None  # namespace, name, resourceVersion ("" = absent)
    # Refused to create before kopf's finalizer is on the object; reconcile at once when it is.
    needs_finalizer: bool = False


class Retry(Exception):
    """The delete path must be retried after `delay` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


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
        needs_finalizer: bool = False,
    ) -> None:
        super().__init__(message)
        self.needs_finalizer = needs_finalizer
        self.reason = reason
        self.message = message
        self.requeue = requeue
        self.ready = ready  # None: keep Ready as it was
        self.synced = synced  # None: True unless a Conflict


# -- the reconciler -------------------------------------------------------------------------------


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


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        providers: Mapping[str, Provider],
        settings: Settings | None = None,
        claims: ClaimIndex | None = None,
        guard: CredentialsGuard | None = None,
    ) -> None:
        self.kube = kube
        self.guard = guard or CredentialsGuard(kube, (settings or Settings()).namespaces)
        self.providers = providers
        self.settings = settings or Settings()
        self.claims = claims or ClaimIndex()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._failures: dict[str, int] = {}
        # uid -> (signature, count) of the drift repairs in a row (the perpetual-diff guard).
        self._repairs: dict[str, tuple[tuple[Any, ...], int]] = {}
        # uid -> a create intent this process wrote and then refused to act on (no finalizer yet).
        # Until it is cleared from status it must not be taken for an interrupted create: the ids it
        # would look for could be another Trigger's new trigger, not yet in the claim index.
        self._refused: dict[str, dict[str, Any]] = {}
        self.breaker = CredentialsBreaker(
            self.settings.breaker_threshold,
            self.settings.breaker_cooldown,
            self.settings.slow_backoff[1],
        )
        CIRCUITS.source = self.breaker.open_count

    # -- helpers ----------------------------------------------------------------------------------

    def lock(self, uid: str) -> threading.Lock:
        """One pass at a time per Trigger: the drift timer, a change and a delete never overlap."""
        with self._locks_guard:
            return self._locks.setdefault(uid, threading.Lock())

    def forget(self, uid: str) -> None:
        with self._locks_guard:
            self._locks.pop(uid, None)
        self._failures.pop(uid, None)
        self.claims.drop(uid)
        self._repairs.pop(uid, None)
        self._refused.pop(uid, None)
        self.breaker.forget(uid)

    def claim_of(self, obj: Mapping[str, Any]) -> tuple[str | None, Claim]:
        """The provider object this Trigger points at (if known yet), for the ClaimIndex."""
        meta = obj.get("metadata", {})
        status = obj.get("status") or {}
        claim = Claim(
            uid=meta.get("uid", ""),
            ref=f"{meta.get('namespace')}/{meta.get('name')}",
            created=meta.get("creationTimestamp") or "",
            owns=bool(status.get("externalId")),
        )
        try:
            spec = TriggerSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            return None, claim
        ext = status.get("externalId") or spec.external_id or self._implicit_id(spec, meta)
        if not ext:
            return None, claim
        provider = self.providers.get(spec.provider)
        if provider is None:
            return None, claim
        key: str = provider.claim_key(spec.block, status.get("atProvider") or {}, ext)
        return key, claim

    @staticmethod
    def _implicit_id(spec: TriggerSpec, meta: Mapping[str, Any]) -> str | None:
        # SWR names are ids, known before anything exists.
        if spec.swr is not None:
            return spec.swr.name or swr_default_name(meta["namespace"], meta["name"])
        return None

    def resync_after(self, period: str | None, uid: str, last: float | None = None) -> float:
        """Seconds from now to the next drift check of a Trigger, after a sync at `last` (default now).

        Each Trigger owns a fixed phase of the period (from its uid) on the wall clock, and the next
        check is the first slot of that phase at least half a period after the last sync. N Triggers
        thus spread evenly over the period however they were created, and a restart keeps the
        schedule instead of checking everything at once.
        """
        seconds = parse_duration(period) if period else self.settings.resync_period
        phase = int(hashlib.sha256(uid.encode()).hexdigest()[:8], 16) / 0x100000000 * seconds
        now = time.time()
        earliest = (now if last is None else last) + seconds / 2
        slot = math.ceil((earliest - phase) / seconds) * seconds + phase
        return max(0.0, slot - now)

    def _resync(self, spec: TriggerSpec, uid: str) -> float:
        return self.resync_after(spec.resync_period, uid)

    def _backoff(self, uid: str, kind: str) -> float:
        n = self._failures.get(uid, 0)
        self._failures[uid] = n + 1
        first, cap = self.settings.transient_backoff if kind == "transient" else self.settings.slow_backoff
        delay = min(first * (2**n), cap)
        return float(delay * random.uniform(0.8, 1.2))

    def error_backoff(self, uid: str) -> float:
        """Delay after a pass that failed unexpectedly (Kubernetes API errors): the transient backoff."""
        return self._backoff(uid, "transient")

    def _credentials(
        self, p: _Pass, spec: TriggerSpec, *, deleting: bool = False
    ) -> tuple[dict[str, str], tuple[str, str, str] | None]:
        """The credentials and, when they come from a Secret, (namespace, name, resourceVersion) to watch.

        A Secret of the Trigger's namespace is held (credentials.py) before any provider call. One
        being deleted is still used, and said so; no new provider trigger is made with it unless it
        is held (then it stays until this Trigger is finalized). `deleting`: a finalizer's pass, which
        falls back on the last good credentials when the Secret is gone.
        """
        ns = p.meta["namespace"]
        ref = spec.credentials_secret_ref
        if ref is None:
            default = self.settings.default_credentials_secret
            if default and _same_endpoint(
                _endpoint_of(spec.block), self.settings.default_credentials_endpoint
            ):
                secret_ns, secret_name = default.split("/", 1)
            else:
                ambient = self.providers[spec.provider].ambient_credentials(spec.block)
                if ambient is not None:
                    return dict(ambient), None
                raise CredentialsError(
                    "spec.credentialsSecretRef is not set and no default credentials apply to this "
                    f"{spec.provider} endpoint"
                )
        else:
            secret_ns, secret_name = ns, ref.name
        key = (secret_ns, secret_name)
        where = f"credentials Secret {secret_ns}/{secret_name}"
        got = self.kube.read_credentials(secret_ns, secret_name)
        if got is None:
            kept = self.guard.last_good(key) if deleting else None
            if kept is not None:
                p.notes.append(f"{where} is gone; deleting with the last credentials read from it")
                return kept, None
            raise _CredentialsMissing(f"{where} not found", (*key, ""))
        if ref is not None and not deleting:
            got = self.guard.ensure_held(key, got)
        data, rv = got.data, got.resource_version
        missing = [k for k in CREDENTIAL_KEYS[spec.provider] if not data.get(k)]
        if missing:
            raise _CredentialsMissing(f"{where} lacks key(s): {', '.join(missing)}", (*key, rv))
        keys = CREDENTIAL_KEYS[spec.provider] + OPTIONAL_CREDENTIAL_KEYS[spec.provider]
        creds = {k: data[k] for k in keys if data.get(k)}
        register_secret(*creds.values())
        self.guard.remember(key, creds)
        if got.deleting and not deleting:
            note = f"{where} is being deleted; this Trigger keeps using it until the Trigger is deleted"
            if not got.held:
                note = f"{where} is being deleted"
                p.no_create = f"{where} is being deleted: no new {spec.provider} trigger is made with it"
            p.notes.append(note)
            ready = condition(p.obj.get("status") or {}, "Ready") or {}
            if note not in str(ready.get("message") or ""):
                p.events.append(("Warning", "CredentialsDeleting", note))
        return creds, (*key, rv)

    def _target(self, p: _Pass, spec: TriggerSpec, creds: Mapping[str, str]) -> Target:
        ns, name = p.meta["namespace"], p.meta["name"]
        description = ""
        if spec.gitlab is not None:
            description = spec.gitlab.description or default_description(ns, name)
        object_name = ""
        if spec.swr is not None:
            # An adopted trigger keeps its own name; otherwise spec.swr.name or the derived default.
            object_name = spec.external_id or spec.swr.name or swr_default_name(ns, name)
        return Target(
            namespace=ns,
            name=name,
            uid=p.meta["uid"],
            block=spec.block,
            credentials=creds,
            known=dict(p.status.get("atProvider") or {}),
            description=description,
            object_name=object_name,
        )

    def _flush(self, p: _Pass) -> None:
        """Write status when it differs from what is stored, then this pass's events.

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
        for type_, reason, message in p.events:
            level = logging.WARNING if type_ == "Warning" else logging.INFO
            log.log(level, "%s: %s: %s", p.ref, reason, message, extra={"trigger": p.ref})
            self.kube.emit_event(p.obj, type_, reason, message)
        p.events.clear()

    # -- the reconcile pass -----------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str, body: dict[str, Any] | None = None) -> Outcome:
        """One pass. `body`: the object as just delivered by the watch, when no write of ours can be
        newer (a loop's first pass); otherwise the object is read fresh."""
        obj = body if body is not None else self.kube.get_trigger(namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return Outcome(None, "Gone")
        provider = next((p for p in ("gitlab", "ack", "swr") if p in (obj.get("spec") or {})), "unknown")
        timer = Timer()
        with self.lock(obj["metadata"]["uid"]):
            outcome = self._reconcile(obj)
        RECONCILES.labels(provider, outcome.reason or "Unknown").inc()
        RECONCILE_SECONDS.labels(provider).observe(timer.seconds())
        return outcome

    def _reconcile(self, obj: dict[str, Any]) -> Outcome:
        old_status = dict(obj.get("status") or {})
        p = _Pass(obj=obj, status=dict(old_status))
        self._intent(p)  # drops an intent this process refused to act on, for the whole pass
        uid = p.meta["uid"]
        gen = p.generation
        status = p.status

        def conditions(ready: bool | None, r_reason: str, synced: bool, s_reason: str, message: str) -> None:
            if p.notes:
                message = "; ".join([message, *p.notes])
            conds = list(status.get("conditions") or [])
            before = condition(status, "Synced") or {}
            if not synced and s_reason != "Paused" and before.get("reason") != s_reason:
                # One Warning per transition into a failure, not one per retry.
                p.events.append(("Warning", s_reason, message))
            if ready is not None:
                conds = set_condition(conds, "Ready", ready, r_reason, message, gen)
            conds = set_condition(conds, "Synced", synced, s_reason, message if not synced else "", gen)
            status["conditions"] = conds
            status["observedGeneration"] = gen

        try:
            spec = TriggerSpec.model_validate(obj.get("spec") or {})
        except ValidationError as e:
            msg = "; ".join(
                f"{'.'.join(str(x) for x in err['loc']) or 'spec'}: {err['msg']}" for err in e.errors()
            )
            conditions(False, "InvalidSpec", False, "InvalidSpec", f"invalid spec: {msg}")
            self._flush(p)
            return Outcome(None, "InvalidSpec")

        if (p.meta.get("annotations") or {}).get(PAUSED_ANNOTATION) == "true":
            conditions(None, "", False, "Paused", f"reconcile paused by the annotation {PAUSED_ANNOTATION}")
            self._flush(p)
            return Outcome(None, "Paused")

        status["provider"] = spec.provider
        if spec.provider not in self.providers:
            msg = f"this build of cloudtriggers has no {spec.provider} provider; the spec is kept as it is"
            conditions(False, "ProviderError", False, "ProviderError", msg)
            self._flush(p)
            return Outcome(None, "ProviderError")
        status["secretName"] = (
            (spec.secret_name or default_secret_name(p.meta["name"])) if self._outputs(spec) else None
        )
        if status["secretName"] is None:
            status.pop("secretName")
        try:
            creds, secret_ref = self._credentials(p, spec)
        except _CredentialsMissing as e:
            has_id = bool(status.get("externalId"))
            conditions(None if has_id else False, "CredentialsMissing", False, "CredentialsMissing", str(e))
            self._flush(p)
            return Outcome(self.settings.credentials_poll, "CredentialsMissing", watch_secret=e.secret)
        except CredentialsError as e:
            conditions(False, "CredentialsMissing", False, "CredentialsMissing", str(e))
            self._flush(p)
            return Outcome(self.settings.credentials_poll, "CredentialsMissing")

        provider = self.providers[spec.provider]
        target = self._target(p, spec, creds)
        account = account_key(spec.provider, _endpoint_of(spec.block), creds)
        verdict = self.breaker.admit(account, uid, _creds_version(creds, secret_ref))
        if verdict is not None:
            # No provider call: the circuit of these credentials is open, or others probe them first.
            delay = verdict.retry_in * random.uniform(1.0, 1.25)
            if not verdict.open:
                return Outcome(delay, "Waiting", watch_secret=secret_ref)
            has_id = bool(status.get("externalId"))
            reason = "CredentialsInvalid"
            conditions(None if has_id else False, reason, False, reason, verdict.message)
            self._flush(p)
            return Outcome(delay, reason, watch_secret=secret_ref)
        try:
            return self._act(p, spec, provider, target, account, secret_ref, old_status, conditions)
        finally:
            self.breaker.done(account, uid)

    def _act(
        self,
        p: _Pass,
        spec: TriggerSpec,
        provider: Provider,
        target: Target,
        account: str,
        secret_ref: tuple[str, str, str] | None,
        old_status: Mapping[str, Any],
        conditions: Callable[[bool | None, str, bool, str, str], None],
    ) -> Outcome:
        status, uid = p.status, p.meta["uid"]
        try:
            ready_reason, message, ready = self._sync(p, spec, provider, target)
        except ProviderError as e:
            message = redact(str(e), target.secrets())
            log.warning("%s: %s (%s)", p.ref, message, e.kind.value, extra={"trigger": p.ref})
            if e.kind is ErrorClass.AUTH:
                self.breaker.failure(account, uid, message)
            has_id = bool(status.get("externalId"))
            conditions(None if has_id else False, e.reason, False, e.reason, message)
            self._flush(p)
            if e.kind in (ErrorClass.TRANSIENT, ErrorClass.AMBIGUOUS, ErrorClass.CONFLICT):
                delay = self._backoff(uid, "transient")
            elif e.kind is ErrorClass.THROTTLED:
                delay = e.retry_after if e.retry_after is not None else self._backoff(uid, "transient")
                self._failures[uid] = self._failures.get(uid, 0) + 1
            else:
                delay = self._backoff(uid, "slow")
            return Outcome(delay, e.reason, watch_secret=secret_ref)
        except CredentialsError as e:
            conditions(False, "CredentialsMissing", False, "CredentialsMissing", str(e))
            self._flush(p)
            return Outcome(self.settings.credentials_poll, "CredentialsMissing", watch_secret=secret_ref)
        except _Stop as s:
            synced = s.synced if s.synced is not None else s.reason not in {"Conflict"}
            conditions(s.ready, s.reason, synced, s.reason, s.message)
            self._flush(p)
            delay = s.requeue if s.requeue is not None else self._resync(spec, uid)
            return Outcome(delay, s.reason, watch_secret=secret_ref, needs_finalizer=s.needs_finalizer)

        self._failures.pop(uid, None)
        self.breaker.success(account, uid)
        conditions(ready, ready_reason, True, "Available" if ready else ready_reason, message)
        if ready:
            # lastSyncTime alone is worth a write at most once per resync (no status churn).
            rest_same = {k: v for k, v in status.items() if k != "lastSyncTime"} == {
                k: v for k, v in old_status.items() if k != "lastSyncTime"
            }
            if not rest_same or self._sync_due(old_status, spec):
                status["lastSyncTime"] = now_rfc3339()
        self._flush(p)
        return Outcome(self._resync(spec, uid), ready_reason)

    def _sync_due(self, old_status: Mapping[str, Any], spec: TriggerSpec) -> bool:
        last = old_status.get("lastSyncTime")
        if not last:
            return True
        period = parse_duration(spec.resync_period) if spec.resync_period else self.settings.resync_period
        then = datetime.fromisoformat(last.replace("Z", "+00:00"))
        return datetime.now(UTC) - then >= timedelta(seconds=period / 2)

    def _outputs(self, spec: TriggerSpec) -> bool:
        provider = self.providers.get(spec.provider)
        return bool(provider and provider.has_outputs)

    def _check_conflict(
        self, p: _Pass, provider: Provider, spec: TriggerSpec, ext: str, known: Mapping[str, Any]
    ) -> None:
        key: str = provider.claim_key(spec.block, known, ext)
        me = Claim(
            uid=p.meta["uid"],
            ref=p.ref,
            created=p.meta.get("creationTimestamp") or "",
            owns=p.status.get("externalId") == ext,
        )
        others = self.claims.others(key, me.uid)
        if others and winner(me, others) is not me:
            w = winner(me, others)
            raise _Stop(
                "Conflict",
                f"{spec.provider} trigger {ext} is already managed by Trigger {w.ref}; "
                "this Trigger leaves it alone",
                requeue=self._backoff(me.uid, "slow"),
                ready=False,
            )
        self.claims.put(key, me)

    def _sync(self, p: _Pass, spec: TriggerSpec, provider: Provider, target: Target) -> tuple[str, str, bool]:
        """Bring the provider in line. Returns (Ready reason, message, Ready)."""
        status = p.status
        observe_only = spec.management_policy == "ObserveOnly"
        if status.get("pendingDelete"):
            self._finish_replacement(p, provider, target)
        ext = spec.external_id or status.get("externalId") or self._implicit_id(spec, p.meta)
        if spec.external_id and status.get("externalId") and spec.external_id != status["externalId"]:
            p.events.append(
                (
                    "Warning",
                    "Released",
                    f"spec.externalId changed: trigger {status['externalId']} is no longer managed",
                )
            )
            status.pop("externalId")
            status["atProvider"] = {}
            target = Target(**{**target.__dict__, "known": {}})
        adopting = bool(spec.external_id) and status.get("externalId") != spec.external_id

        obs: Observed | None = None
        if ext:
            self._check_conflict(p, provider, spec, ext, p.status.get("atProvider") or {})
            obs = provider.observe(target, ext)
            if obs is not None:
                # Again with what the provider resolved (a GitLab path becomes its numeric id).
                self._check_conflict(p, provider, spec, ext, obs.at_provider)
            if obs is None and (observe_only or adopting):
                raise _Stop(
                    "NotFound",
                    f"{spec.provider} trigger {ext} does not exist"
                    + ("" if observe_only else "; remove spec.externalId to create a new trigger"),
                    requeue=None,
                )
            if obs is None and status.get("externalId"):
                gone = status.pop("externalId")
                obs = self._create(p, spec, provider, target, reason="Recreated")
                p.events[-1] = (
                    "Warning",
                    "Recreated",
                    f"{spec.provider} trigger {gone} was deleted outside cloudtriggers; "
                    f"created {obs.external_id}",
                )
                DRIFT_REPAIRS.labels(spec.provider, "recreated").inc()
                return self._settle(p, spec, provider, obs, fresh=True)

        if obs is not None and not observe_only and not status.get("externalId") and not spec.external_id:
            # The provider's id is a name we derived (SWR) and an object of that name already exists.
            differing = diff(provider.desired(target), obs)
            if differing and not status.get("pendingCreate"):
                raise _Stop(
                    "Conflict",
                    f"{spec.provider} trigger {obs.external_id} already exists and differs in: "
                    f"{', '.join(differing)}; choose another name, or set spec.externalId to take it over",
                    requeue=self._backoff(p.meta["uid"], "slow"),
                )
            p.events.append(
                ("Normal", "Adopted", f"adopted existing {spec.provider} trigger {obs.external_id}")
            )
            adopting = True

        if obs is not None and observe_only:
            status["externalId"] = obs.external_id
            status["atProvider"] = obs.at_provider
            differing = diff(provider.desired(target), obs)
            note = (
                f"; differs from spec in: {', '.join(differing)} (ObserveOnly: not changed)"
                if differing
                else ""
            )
            return "Observed", f"observed {spec.provider} trigger {obs.external_id}{note}", True

        if obs is None:
            obs = self._create(p, spec, provider, target)
            return self._settle(p, spec, provider, obs, fresh=True)

        desired = provider.desired(target)
        changed = diff(desired, obs)
        # Same generation as last time: the difference came from outside, not from the spec.
        drift = bool(changed) and p.generation == (p.obj.get("status") or {}).get("observedGeneration")
        repair = self._perma_diff_guard(p, spec, desired, obs, changed) if drift else None
        if not drift:
            self._repairs.pop(p.meta["uid"], None)
        if changed and set(changed) <= provider.in_place:
            obs = provider.update(target, obs, changed)
            p.events.append(
                ("Normal", "Updated", f"updated {', '.join(changed)} of trigger {obs.external_id}")
            )
            if repair is not None:
                DRIFT_REPAIRS.labels(spec.provider, "updated").inc()
                self._repairs[p.meta["uid"]] = repair
        elif changed:
            if drift:
                DRIFT_REPAIRS.labels(spec.provider, "replaced").inc()
            obs = self._replace(p, spec, provider, target, obs, changed)
            if repair is not None:
                self._repairs[p.meta["uid"]] = repair
            return self._settle(p, spec, provider, obs, fresh=True)
        if adopting:
            p.events.append(("Normal", "Adopted", f"adopted {spec.provider} trigger {obs.external_id}"))
        return self._settle(p, spec, provider, obs, fresh=adopting)

    def _perma_diff_guard(
        self,
        p: _Pass,
        spec: TriggerSpec,
        desired: Mapping[str, Any],
        obs: Observed,
        changed: list[str],
    ) -> tuple[tuple[Any, ...], int]:
        """Stop after `perma_diff_repairs` identical drift repairs in a row; else the repair's record.

        Identical: the same generation and the same fields with the same wanted and found values. The
        count moves only when a repair went through (a failed attempt is no repair), and any pass that
        finds no drift, or a spec change, resets it.
        """
        uid = p.meta["uid"]
        signature = (p.generation, tuple((f, repr(desired.get(f)), repr(obs.fields.get(f))) for f in changed))
        previous = self._repairs.get(uid)
        count = previous[1] if previous and previous[0] == signature else 0
        limit = self.settings.perma_diff_repairs
        if limit and count >= limit:
            fields = "; ".join(
                f"{f}: spec {desired.get(f)!r}, {spec.provider} {obs.fields.get(f)!r}" for f in changed
            )
            raise _Stop(
                "ProviderError",
                f"stopped repairing trigger {obs.external_id}: after {count} repairs in a row it still "
                f"differs in {fields}. The provider probably changes or normalizes this value; "
                "change the spec to try again",
                requeue=None,
                synced=False,
            )
        return signature, count + 1

    def _settle(
        self, p: _Pass, spec: TriggerSpec, provider: Provider, obs: Observed, *, fresh: bool
    ) -> tuple[str, str, bool]:
        """Record the object and make sure its secret outputs are in the Secret."""
        status = p.status
        status["externalId"] = obs.external_id
        status["atProvider"] = obs.at_provider
        status.pop("pendingCreate", None)
        key, claim = self.claim_of({"metadata": p.meta, "spec": p.obj.get("spec"), "status": status})
        self.claims.put(key, claim)
        if not provider.has_outputs:
            return "Available", f"{spec.provider} trigger {obs.external_id} is in sync", True
        secret_name = status["secretName"]
        if fresh and obs.outputs:
            # Just created or adopted with a visible token: write it (no need to read what is there).
            self._write_secret(p, secret_name, obs.outputs)
            status["tokenSha256"] = token_sha256(obs.outputs["token"])
            return "Available", f"{spec.provider} trigger {obs.external_id} is in sync", True
        have = self.kube.read_secret(p.meta["namespace"], secret_name)
        recorded = status.get("tokenSha256")
        have_sha = token_sha256(have[0]["token"]) if have and have[0].get("token") else None
        if obs.outputs and (fresh or recorded is None or token_sha256(obs.outputs["token"]) == recorded):
            # A token the provider shows in full: write it unless the Secret already holds it.
            sha = token_sha256(obs.outputs["token"])
            if have is None or have_sha != sha or any(have[0].get(k) != v for k, v in obs.outputs.items()):
                self._write_secret(p, secret_name, obs.outputs)
            status["tokenSha256"] = sha
        elif have_sha is None or (recorded and have_sha != recorded):
            # The provider masks the token (GitLab: owned by another user) and we hold no copy.
            raise _Stop(
                "TokenUnavailable",
                f"trigger {obs.external_id} is owned by another user, so {spec.provider} shows only a "
                "masked token; use the owner's credentials, or remove spec.externalId to get a new trigger",
                requeue=None,
            )
        return "Available", f"{spec.provider} trigger {obs.external_id} is in sync", True

    def _intent(self, p: _Pass) -> dict[str, Any] | None:
        """The stored create intent, unless it is one this process refused to act on (then it is
        dropped from the status being built)."""
        pending: dict[str, Any] | None = p.status.get("pendingCreate")
        if pending and self._refused.get(p.meta["uid"]) == pending:
            p.status.pop("pendingCreate")
            return None
        return pending

    def _write_secret(self, p: _Pass, name: str, outputs: Mapping[str, str]) -> None:
        try:
            self.kube.write_output_secret(p.obj, name, dict(outputs))
        except SecretConflict as e:
            raise _Stop("Conflict", str(e), requeue=None) from None

    def _create(
        self,
        p: _Pass,
        spec: TriggerSpec,
        provider: Provider,
        target: Target,
        *,
        exists: bool = False,
        reason: str = "Created",
    ) -> Observed:
        """Create (or adopt what an interrupted create left). `exists`: a replacement, the old one is live."""
        status = p.status
        pending = status.get("pendingCreate")  # a refused one was dropped at the start of the pass
        seen: list[Observed] | None = None
        if pending and pending.get("provider") == spec.provider:
            since = datetime.fromisoformat(pending["startedAt"].replace("Z", "+00:00")) - CLOCK_SKEW
            existed = set(pending.get("existing") or [])
            seen = provider.find(target, since)
            candidates = [
                o
                for o in seen
                if o.external_id not in existed
                and not self.claims.others(
                    provider.claim_key(spec.block, o.at_provider, o.external_id), p.meta["uid"]
                )
            ]
            if candidates:
                found, extra = candidates[0], candidates[1:]
                for dup in extra:
                    provider.delete(target, dup.external_id)
                    p.events.append(
                        ("Warning", "DeletedDuplicate", f"deleted duplicate trigger {dup.external_id}")
                    )
                p.events.append(
                    (
                        "Normal",
                        "Adopted",
                        f"found trigger {found.external_id} from an interrupted create; adopted it",
                    )
                )
                return found
        if p.no_create:
            raise _Stop("CredentialsMissing", p.no_create, requeue=self.settings.credentials_poll)
        status["pendingCreate"] = {"startedAt": now_rfc3339(), "provider": spec.provider}
        if not getattr(provider, "find_uses_time", True):
            # Without creation times, what exists now must never be mistaken for what we make next.
            # (find() then ignores `since`: the look just taken for an interrupted create is reused.)
            now = seen if seen is not None else provider.find(target, datetime.now(UTC))
            status["pendingCreate"]["existing"] = [o.external_id for o in now]
        if not exists:
            status["conditions"] = set_condition(
                list(status.get("conditions") or []),
                "Ready",
                False,
                "Creating",
                f"creating {spec.provider} trigger",
                p.generation,
            )
        self._flush(p)
        self._refused.pop(p.meta["uid"], None)  # the intent now stored may well be acted on
        if not has_finalizer(p.obj):
            # Without the finalizer a quick delete would leave the new provider trigger behind. kopf
            # adds it as it starts the Trigger's loop; the intent's write answers with the object as
            # it is now, so a loop need not wait for that change to come round the watch.
            self._refused[p.meta["uid"]] = status.pop("pendingCreate")
            raise _Stop(
                "Creating", "waiting for the finalizer before creating", requeue=1.0, needs_finalizer=True
            )
        try:
            obs = provider.create(target)
        except ProviderError as e:
            if e.kind is not ErrorClass.AMBIGUOUS:
                status.pop("pendingCreate", None)  # definitely not created: nothing to look for
            raise
        register_secret(obs.token)
        p.events.append(("Normal", reason, f"created {spec.provider} trigger {obs.external_id}"))
        return obs

    def _replace(
        self,
        p: _Pass,
        spec: TriggerSpec,
        provider: Provider,
        target: Target,
        old: Observed,
        changed: list[str],
    ) -> Observed:
        why = f"{', '.join(changed)} cannot change in place"
        if provider.replace_order == "delete_first":
            provider.delete(target, old.external_id)
            p.status.pop("externalId", None)
            new = self._create(p, spec, provider, target)
        else:
            # Create the new one, move the Secret to it, and only then delete the old one, so the Secret
            # never names a deleted trigger. pendingDelete survives a crash between the two.
            new = self._create(p, spec, provider, Target(**{**target.__dict__, "known": {}}), exists=True)
            if provider.has_outputs and new.outputs:
                self._write_secret(p, p.status["secretName"], new.outputs)
                p.status["tokenSha256"] = token_sha256(new.outputs["token"])
            p.status["pendingDelete"] = {"externalId": old.external_id, "atProvider": old.at_provider}
            p.status["externalId"] = new.external_id
            p.status["atProvider"] = new.at_provider
            p.status.pop("pendingCreate", None)
            self._flush(p)
            self._finish_replacement(p, provider, target)
        p.events.append(
            ("Normal", "Replaced", f"replaced trigger {old.external_id} by {new.external_id}: {why}")
        )
        return new

    def _finish_replacement(self, p: _Pass, provider: Provider, target: Target) -> None:
        pending = p.status["pendingDelete"]
        old_target = Target(**{**target.__dict__, "known": pending.get("atProvider") or {}})
        provider.delete(old_target, pending["externalId"])
        p.status.pop("pendingDelete", None)

    # -- deletion ---------------------------------------------------------------------------------

    def finalize(self, obj: dict[str, Any]) -> str:
        """Delete at the provider per deletionPolicy. Returns what happened; raises Retry to try again."""
        meta = obj["metadata"]
        with self.lock(meta["uid"]):
            return self._finalize(obj)

    def _finalize(self, obj: dict[str, Any]) -> str:
        p = _Pass(obj=obj, status=dict(obj.get("status") or {}))
        status = p.status
        try:
            spec = TriggerSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            if status.get("externalId"):
                provider_name = str(status.get("provider") or "unknown")
                self._orphaned(p, provider_name, status["externalId"], "invalid_spec", "the spec is invalid")
            return "orphaned"
        ext = status.get("externalId")
        pending = self._intent(p)
        if spec.management_policy == "ObserveOnly" or spec.deletion_policy == "Orphan":
            if ext:
                policy = (
                    "managementPolicy ObserveOnly"
                    if spec.management_policy == "ObserveOnly"
                    else ("deletionPolicy Orphan")
                )
                self._orphaned(p, spec.provider, ext, "policy", f"kept by {policy}")
            return "orphaned"
        if (
            not ext and not pending and not status.get("pendingDelete")
        ) or spec.provider not in self.providers:
            return "nothing"
        provider = self.providers[spec.provider]
        account, uid = "", meta_uid(obj)
        try:
            creds, secret_ref = self._credentials(p, spec, deleting=True)
            target = self._target(p, spec, creds)
            account = account_key(spec.provider, _endpoint_of(spec.block), creds)
            verdict = self.breaker.admit(account, uid, _creds_version(creds, secret_ref))
            if verdict is not None:
                raise _Blocked(verdict)
            if status.get("pendingDelete"):
                self._finish_replacement(p, provider, target)
            if ext:
                provider.delete(target, ext)
            elif pending:
                since = datetime.fromisoformat(pending["startedAt"].replace("Z", "+00:00")) - CLOCK_SKEW
                existed = set(pending.get("existing") or [])
                for o in provider.find(target, since):
                    k = provider.claim_key(spec.block, o.at_provider, o.external_id)
                    if o.external_id not in existed and not self.claims.others(k, meta_uid(obj)):
                        provider.delete(target, o.external_id)
            self.breaker.success(account, uid)
        except (ProviderError, CredentialsError, _CredentialsMissing, _Blocked) as e:
            message = redact(str(e), [])
            if isinstance(e, ProviderError) and e.kind is ErrorClass.AUTH:
                self.breaker.failure(account, uid, message)
            if self._delete_overdue(obj):
                self._orphaned(
                    p,
                    spec.provider,
                    ext or "(from an interrupted create)",
                    "delete_timeout",
                    f"could not delete it ({message}) within the delete timeout of a terminating "
                    "namespace, so the Trigger is released",
                )
                return "orphaned"
            status["conditions"] = set_condition(
                list(status.get("conditions") or []),
                "Synced",
                False,
                "Deleting",
                f"delete failed: {message}",
                p.generation,
            )
            self._flush(p)
            delay = 5.0 if isinstance(e, ProviderError) and e.kind is ErrorClass.TRANSIENT else 15.0
            if isinstance(e, ProviderError) and e.retry_after:
                delay = e.retry_after
            if isinstance(e, _Blocked):
                # No provider call now; short enough that the delete timeout is still noticed.
                delay = min(max(e.verdict.retry_in, 1.0), 30.0)
            left = self._delete_time_left(obj)
            if left is not None:
                # The namespace is terminating: look again no later than when the Trigger may be released.
                delay = min(delay, max(left, 0.5))
            raise Retry(message, delay) from None
        finally:
            if account:
                self.breaker.done(account, uid)
        self.kube.emit_event(
            obj, "Normal", "Deleted", f"deleted {spec.provider} trigger {ext or '(pending)'}"
        )
        return "deleted"

    def _orphaned(self, p: _Pass, provider: str, ext: str, reason: str, why: str) -> None:
        """A provider trigger left in place is never silent: a metric, a log line, an Event if it can."""
        ORPHANED.labels(provider, reason).inc()
        message = f"{provider} trigger {ext} is left at the provider: {why}"
        level = logging.INFO if reason == "policy" else logging.WARNING
        log.log(level, "%s: Orphaned: %s", p.ref, message, extra={"trigger": p.ref})
        self.kube.emit_event(p.obj, "Normal" if reason == "policy" else "Warning", "Orphaned", message)

    def _delete_overdue(self, obj: Mapping[str, Any]) -> bool:
        left = self._delete_time_left(obj)
        return left is not None and left <= 0

    def _delete_time_left(self, obj: Mapping[str, Any]) -> float | None:
        """Seconds until a failing delete may orphan (None: the namespace is not terminating)."""
        meta = obj["metadata"]
        since = meta.get("deletionTimestamp")
        if not since or not self.kube.namespace_terminating(meta["namespace"]):
            return None
        started = datetime.fromisoformat(since.replace("Z", "+00:00"))
        elapsed = (datetime.now(UTC) - started).total_seconds()
        return self.settings.delete_timeout - elapsed


def meta_uid(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["uid"])


class _Blocked(Exception):
    """The credentials' circuit is open (or others are trying them first): no provider call now."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


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
