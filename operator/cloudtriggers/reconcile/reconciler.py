"""The Reconciler: one pass over one Trigger, composed of the phase mixins.

Here: the pass itself (reconcile, _reconcile, _act), the credentials and the provider Target it
builds, the claim a Trigger makes, per-Trigger locks, and when to come back (backoff, resync).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from ..credentials import CredentialsGuard
from ..kube import Kube, now_rfc3339
from ..logs import register_secret
from ..metrics import CIRCUITS, RECONCILE_SECONDS, RECONCILES, Timer
from ..models import (
    SECRET_NAME_MAX,
    SECRET_NAME_TOO_LONG,
    TriggerSpec,
    default_description,
    default_secret_name,
    parse_duration,
    parse_time,
    spec_problems,
    swr_default_name,
)
from ..providers.base import (
    CredentialsBreaker,
    CredentialsError,
    ErrorClass,
    Provider,
    ProviderError,
    Target,
    account_key,
    redact,
)
from ..settings import Settings
from .claims import Claim, ClaimIndex
from .create import CreatePhase
from .delete import DeletePhase
from .observe import SYNC_TIME_REFRESH, ObservePhase
from .passes import (
    PAUSED_ANNOTATION,
    Outcome,
    _CredentialsMissing,
    _creds_version,
    _endpoint_of,
    _Gone,
    _Pass,
    _same_endpoint,
    _Stop,
    condition,
    has_finalizer,
    log,
    set_condition,
)
from .replace import ReplacePhase
from .rotate import ROTATE_ANNOTATION, RotatePhase

CREDENTIAL_KEYS = {
    "gitlab": ("token",),
    "ack": ("accessKeyId", "accessKeySecret"),
    "swr": ("accessKey", "secretKey"),
}
OPTIONAL_CREDENTIAL_KEYS = {"gitlab": (), "ack": ("securityToken",), "swr": ("projectId", "securityToken")}


class Reconciler(ObservePhase, CreatePhase, ReplacePhase, RotatePhase, DeletePhase):
    """Reconciles Triggers: observe (observe.py), create (create.py), replace (replace.py), rotate
    (rotate.py), and delete on a finalizer's pass (delete.py). Passes run in worker threads, one at
    a time per Trigger."""

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
        self._locks: dict[str, list[Any]] = {}  # uid -> [lock, passes holding or waiting for it]
        self._locks_guard = threading.Lock()
        self._failures: dict[str, int] = {}
        # uid -> (signature, count) of the drift repairs in a row (the perpetual-diff guard).
        self._repairs: dict[str, tuple[tuple[Any, ...], int]] = {}
        # uid -> the resourceVersion of the newest state of the Trigger this process has seen (read,
        # or answered to its own status write): a watched body at that version needs no GET.
        self.versions: dict[str, str] = {}
        self._claim_keys: dict[str, tuple[bytes, str | None]] = {}  # uid: (digest of the inputs, key)
        self.breaker = CredentialsBreaker(
            self.settings.breaker_threshold,
            self.settings.breaker_cooldown,
            self.settings.slow_backoff[1],
        )
        CIRCUITS.source = self.breaker.open_count

    # -- helpers ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, uid: str) -> Iterator[None]:
        """One pass at a time per Trigger: the drift timer, a change and a delete never overlap.

        A Trigger's lock lives while a pass holds or awaits it, not for the Trigger's whole life
        (~0.1 KiB a Trigger); forget() cannot drop it from under a running pass either."""
        with self._locks_guard:
            entry = self._locks.get(uid)
            if entry is None:
                entry = self._locks[uid] = [threading.Lock(), 0]
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._locks_guard:
                entry[1] -= 1
                if not entry[1]:
                    del self._locks[uid]

    def is_current(self, body: Mapping[str, Any]) -> bool:
        """The watched body is the newest state this process knows of (its own last write included)."""
        meta = body.get("metadata") or {}
        return self.is_current_version(str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""))

    def is_current_version(self, uid: str, version: str) -> bool:
        known = self.versions.get(uid)
        return bool(known) and version == known

    def forget(self, uid: str) -> None:
        self._failures.pop(uid, None)
        self.claims.drop(uid)
        self._repairs.pop(uid, None)
        self.versions.pop(uid, None)
        self._claim_keys.pop(uid, None)
        self.breaker.forget(uid)

    def claim_of(self, obj: Mapping[str, Any]) -> tuple[str | None, Claim]:
        """The provider object this Trigger points at (if known yet), for the ClaimIndex."""
        meta = obj.get("metadata", {})
        status = obj.get("status") or {}
        claim = Claim.of(meta, owns=bool(status.get("externalId")))
        # Every watch event asks; the key only changes with the spec (its generation) or the status.
        # What it depends on, as one 16-byte digest (a tuple of them and atProvider's text were
        # ~0.3 KiB kept per Trigger).
        generation = meta.get("generation")
        inputs = hashlib.blake2b(
            json.dumps(
                [generation, status.get("externalId"), status.get("atProvider")],
                sort_keys=True,
                separators=(",", ":"),
            ).encode(),
            digest_size=16,
        ).digest()
        known = self._claim_keys.get(claim.uid)
        if known is not None and known[0] == inputs:
            return known[1], claim
        key = self._claim_key(obj, meta, status)
        if claim.uid and generation is not None:
            self._claim_keys[claim.uid] = (inputs, key)
        return key, claim

    def _claim_key(
        self, obj: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any]
    ) -> str | None:
        try:
            spec = TriggerSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            return None
        ext = status.get("externalId") or spec.external_id or self._implicit_id(spec, meta)
        if not ext:
            return None
        provider = self.providers.get(spec.provider)
        if provider is None:
            return None
        key: str = provider.claim_key(spec.block, status.get("atProvider") or {}, ext)
        return key

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

    def restart_delay(self, period: str | None, uid: str, last: float) -> float:
        """After a restart, seconds until an in-sync Trigger's first pass: the next slot of its phase,
        unless its lastSyncTime is older than the refresh allows (then: now)."""
        seconds = parse_duration(period) if period else self.settings.resync_period
        now = time.time()
        if now - last > seconds * (SYNC_TIME_REFRESH + 1):
            return 0.0
        # The first slot of its phase after both now and half a period after its last recorded sync:
        # the schedule stays spread over the period from the first moment after the restart.
        return self.resync_after(period, uid, max(last, now - seconds / 2))

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

    # -- the reconcile pass -----------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str, body: dict[str, Any] | None = None) -> Outcome:
        """One pass. `body`: the object as delivered by the watch, when no write of ours can be newer
        (a loop's first pass, or the watch is at the version of our last write: `is_current`);
        otherwise the object is read fresh."""
        obj = body if body is not None else self.kube.get_trigger(namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return Outcome(None, "Gone")
        self.versions[obj["metadata"]["uid"]] = str(obj["metadata"].get("resourceVersion") or "")
        provider = next((p for p in ("gitlab", "ack", "swr") if p in (obj.get("spec") or {})), "unknown")
        timer = Timer()
        p = _Pass(obj=obj, status=dict(obj.get("status") or {}))
        with self.lock(obj["metadata"]["uid"]):
            try:
                outcome = self._reconcile(p)
                if not has_finalizer(p.obj):
                    # A pass that made nothing still leaves it (a first create brought it already):
                    # what it adopted is deleted with it, per deletionPolicy.
                    self._hold(p)
            except _Gone:
                outcome = Outcome(None, "Gone")
        RECONCILES.labels(provider, outcome.reason or "Unknown").inc()
        RECONCILE_SECONDS.labels(provider).observe(timer.seconds())
        return outcome

    def _reconcile(self, p: _Pass) -> Outcome:
        obj = p.obj
        old_status = dict(obj.get("status") or {})
        self._intent(p)  # the first create's intent, if it is only in the annotation
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
            msg = "; ".join(spec_problems(e))
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
        elif len(status["secretName"]) > SECRET_NAME_MAX:  # a CRD from before ROOT_RULES refused it
            status.pop("secretName")
            conditions(False, "InvalidSpec", False, "InvalidSpec", f"invalid spec: {SECRET_NAME_TOO_LONG}")
            self._flush(p)
            return Outcome(None, "InvalidSpec")
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
            elif e.kind is ErrorClass.ENDPOINT:
                return Outcome(None, e.reason)  # like an invalid spec: again when the spec changes
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
            return Outcome(delay, s.reason, watch_secret=secret_ref)

        self._failures.pop(uid, None)
        self.breaker.success(account, uid)
        if self._rotatable(spec, provider) and (spec.rotation or status.get("rotation")):
            self._schedule(p, spec)
        conditions(ready, ready_reason, True, "Available" if ready else ready_reason, message)
        if ready:
            # lastSyncTime alone is worth a write only every SYNC_TIME_REFRESH periods (observe.py).
            rest_same = {k: v for k, v in status.items() if k != "lastSyncTime"} == {
                k: v for k, v in old_status.items() if k != "lastSyncTime"
            }
            if not rest_same or self._sync_due(old_status, spec):
                status["lastSyncTime"] = now_rfc3339()
        self._flush(p)
        return Outcome(self._next_pass(p, spec, uid), ready_reason)

    def _next_pass(self, p: _Pass, spec: TriggerSpec, uid: str) -> float:
        """The resync, or sooner: when a rotation's overlap ends, the next rotation is due, or a
        rotation asked for has not been acted on yet (this pass changed the spec at the provider)."""
        status = p.status
        requested = (p.meta.get("annotations") or {}).get(ROTATE_ANNOTATION)
        if requested and requested != (status.get("rotation") or {}).get("requested"):
            return 1.0
        delay = self._resync(spec, uid)
        pending = status.get("pendingDelete")
        if pending:
            delay = min(delay, self._overlap_left(pending) + 1.0)
        due = parse_time((status.get("rotation") or {}).get("nextRotationTime"))
        if due is not None:
            delay = min(delay, max(0.0, due - self.clock()) + 1.0)
        return delay

    def _outputs(self, spec: TriggerSpec) -> bool:
        provider = self.providers.get(spec.provider)
        return bool(provider and provider.has_outputs)
