"""The create phase: make the provider trigger, or adopt what an interrupted create left.

A create intent (status.pendingCreate) is stored before the provider call, so a pass after a crash
or a lost response looks for what it made (provider.find) instead of making a second one. A
Trigger's first create stores it as an annotation in the write that adds our finalizer, which no
create may go without: one write for both (INTENT_ANNOTATION).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..kube import KubeApiError, SecretConflict, now_rfc3339
from ..logs import register_secret
from ..models import TriggerSpec, parse_time, token_sha256
from ..providers.base import ErrorClass, Observed, Provider, ProviderError, Target
from ..redaction import redact
from .passes import (
    CLOCK_SKEW,
    INTENT_ANNOTATION,
    _Base,
    _Pass,
    _Stop,
    has_finalizer,
    log,
    rfc3339,
    set_condition,
    written,
)


class CreatePhase(_Base):
    """Create (provider.create) behind a stored intent; adopt an interrupted one (provider.find)."""

    def _intent(self, p: _Pass) -> dict[str, Any] | None:
        """The stored create intent: status.pendingCreate, or while the Trigger has no status of ours,
        the annotation of its first create, then copied into the status being built so that the
        next status write carries it on."""
        pending: dict[str, Any] | None = p.status.get("pendingCreate")
        if pending or written(p.obj.get("status")):
            return pending
        raw = (p.meta.get("annotations") or {}).get(INTENT_ANNOTATION)
        if not raw:
            return None
        try:
            got = json.loads(raw)
        except ValueError:
            got = None
        if not (
            isinstance(got, dict)
            and isinstance(got.get("provider"), str)
            and parse_time(got.get("startedAt")) is not None
            and isinstance(got.get("existing", []), list)
        ):
            log.warning("%s: ignoring a malformed %s annotation", p.ref, INTENT_ANNOTATION)
            return None
        p.status["pendingCreate"] = got
        return got

    def _write_secret(
        self,
        p: _Pass,
        name: str,
        outputs: Mapping[str, str],
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        if p.status.get("tokenSha256") != token_sha256(outputs.get("token", "")):
            p.status["tokenCreatedAt"] = rfc3339(self.clock())  # a new token in the Secret
        try:
            self.kube.write_output_secret(p.obj, name, dict(outputs), dict(annotations or {}))
        except SecretConflict as e:
            raise _Stop("Conflict", str(e), requeue=None) from None
        except KubeApiError as e:
            if e.status not in (400, 403, 422):
                raise
            # Refused as written (an admission policy or webhook, a Secret made immutable): the
            # same write will be refused again, so say why where `kubectl describe` shows it. What
            # the provider made stays recorded (externalId, or the create's intent) for the retry.
            message = f"the API server refused the output Secret {name}: {e.message}"
            raise _Stop(
                "SecretRefused",
                redact(message, outputs.values()),
                requeue=self._backoff(p.meta["uid"], "slow"),
                synced=False,
            ) from None

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
            # Never what this Trigger already names: a rotation's or replacement's current trigger.
            current = {status.get("externalId"), (status.get("pendingDelete") or {}).get("externalId")}
            candidates = [
                o
                for o in seen
                if o.external_id not in existed
                and o.external_id not in current
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
        # Never a create without our finalizer: a quick delete would leave the new trigger behind.
        if not has_finalizer(p.obj) and not written(p.obj.get("status")):
            intent = json.dumps(status["pendingCreate"], separators=(",", ":"), sort_keys=True)
            self._hold(p, {INTENT_ANNOTATION: intent})  # a first create: one write for both
        else:
            if not has_finalizer(p.obj):
                self._hold(p)  # taken off by someone since the first pass
            self._flush(p)
        try:
            obs = provider.create(target)
        except ProviderError as e:
            if e.kind is not ErrorClass.AMBIGUOUS:
                status.pop("pendingCreate", None)  # definitely not created: nothing to look for
            raise
        register_secret(obs.token)
        p.events.append(("Normal", reason, f"created {spec.provider} trigger {obs.external_id}"))
        return obs
