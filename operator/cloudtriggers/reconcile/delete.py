"""The delete phase: a finalizer's pass deletes at the provider per deletionPolicy, or orphans."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ..metrics import ORPHANED
from ..models import TriggerSpec
from ..providers.base import (
    CredentialsError,
    ErrorClass,
    ProviderError,
    Verdict,
    account_key,
    redact,
)
from .passes import (
    CLOCK_SKEW,
    Retry,
    _Base,
    _CredentialsMissing,
    _creds_version,
    _endpoint_of,
    _Pass,
    log,
    meta_uid,
    set_condition,
)


class _Blocked(Exception):
    """The credentials' circuit is open (or others are trying them first): no provider call now."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


class DeletePhase(_Base):
    """Delete (provider.delete; provider.find for what an interrupted create left), or leave the
    provider trigger in place and say so (ObserveOnly, deletionPolicy Orphan, a delete timeout)."""

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
            if isinstance(e, ProviderError) and e.kind is ErrorClass.ENDPOINT:
                # The administrator's policy forbids the call (it changed since the create): retrying
                # cannot help, and the Trigger must not hang in deletion.
                self._orphaned(
                    p, spec.provider, ext or "(from an interrupted create)", "endpoint_not_allowed", message
                )
                return "orphaned"
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
