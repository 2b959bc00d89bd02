"""The rotate phase: a new token for the same trigger, create-before-delete with hand-over.

A rotation creates a new provider trigger through the create phase (the intent stored first, so a
crash finds and adopts what it made), writes its token into the same output Secret, records the old
one in status.pendingDelete with the end of its overlap, and deletes it once that has passed. At most
two tokens exist: a rotation asked for while an overlap still runs ends that overlap first.
"""

from __future__ import annotations

from typing import Any

from ..metrics import ROTATIONS
from ..models import TriggerSpec, parse_duration, parse_time, token_sha256
from ..providers.base import Observed, Provider, Target
from .passes import _Base, _Pass, rfc3339

ROTATE_ANNOTATION = "cloudtriggers.io/rotate-requested-at"
ROTATED_AT_ANNOTATION = "cloudtriggers.io/rotated-at"  # on the output Secret: tools like Reloader follow it
DEFAULT_OVERLAP = "10m"


class RotatePhase(_Base):
    """Rotate (provider.create, then provider.delete of the old trigger after the overlap)."""

    def _rotatable(self, spec: TriggerSpec, provider: Provider) -> bool:
        return bool(provider.has_outputs) and spec.management_policy == "Full" and not spec.external_id

    def _schedule(self, p: _Pass, spec: TriggerSpec) -> None:
        """status.rotation.nextRotationTime from the last rotation (or the token's creation) + every."""
        rot = dict(p.status.get("rotation") or {})
        every = spec.rotation.every if spec.rotation else None
        if every:
            base = parse_time(rot.get("lastRotationTime")) or parse_time(p.status.get("tokenCreatedAt"))
            if base is not None or not rot.get("nextRotationTime"):  # no base (older status): once, from now
                rot["nextRotationTime"] = rfc3339((base or self.clock()) + parse_duration(every))
        else:
            rot.pop("nextRotationTime", None)
        if rot:
            p.status["rotation"] = rot
        else:
            p.status.pop("rotation", None)

    def _rotation_due(self, p: _Pass, spec: TriggerSpec, provider: Provider) -> str | None:
        """Why the token must rotate now, or None."""
        if p.status.get("pendingCreate") and p.status.get("externalId") and self._rotatable(spec, provider):
            # A rotation or create-first replacement was interrupted after its intent, and nothing asks
            # for it any more (the request was withdrawn, the spec reverted): finish it, so that what
            # it may have made is adopted and its predecessor deleted, never left behind.
            return "finishing an interrupted rotation or replacement"
        requested = (p.meta.get("annotations") or {}).get(ROTATE_ANNOTATION)
        rot = p.status.get("rotation") or {}
        if requested and requested != rot.get("requested"):
            if not self._rotatable(spec, provider):
                why = (
                    f"{spec.provider} triggers have no token"
                    if not provider.has_outputs
                    else "only tokens cloudtriggers made rotate (managementPolicy Full, no spec.externalId)"
                )
                p.events.append(("Warning", "RotationRefused", f"rotation not done: {why}"))
                p.status["rotation"] = {**rot, "requested": requested}
                return None
            return f"requested by {ROTATE_ANNOTATION}={requested}"
        if not self._rotatable(spec, provider) or p.status.get("pendingDelete"):
            return None
        due = parse_time(rot.get("nextRotationTime"))
        if spec.rotation and spec.rotation.every and due is not None and self.clock() >= due:
            return f"every {spec.rotation.every}"
        return None

    def _overlap_left(self, pending: dict[str, Any]) -> float:
        """Seconds the superseded trigger must still live (0: delete it now)."""
        end = parse_time(pending.get("notBefore"))
        return max(0.0, end - self.clock()) if end is not None else 0.0

    def _rotate(
        self, p: _Pass, spec: TriggerSpec, provider: Provider, target: Target, old: Observed, why: str
    ) -> Observed:
        status = p.status
        if status.get("pendingDelete"):
            self._finish_replacement(p, provider, target)  # never a third token
        try:
            new = self._create(p, spec, provider, target, exists=True, reason="Rotated")
        except Exception:
            ROTATIONS.labels(spec.provider, "failed").inc()
            raise
        now = self.clock()
        overlap = parse_duration(spec.rotation.overlap if spec.rotation else DEFAULT_OVERLAP)
        if new.outputs:
            self._write_secret(p, status["secretName"], new.outputs, {ROTATED_AT_ANNOTATION: rfc3339(now)})
            status["tokenSha256"] = token_sha256(new.outputs["token"])
        status["tokenCreatedAt"] = rfc3339(now)
        status["pendingDelete"] = {
            "externalId": old.external_id,
            "atProvider": old.at_provider,
            "notBefore": rfc3339(now + overlap),
        }
        status["externalId"] = new.external_id
        status["atProvider"] = new.at_provider
        status.pop("pendingCreate", None)
        requested = (p.meta.get("annotations") or {}).get(ROTATE_ANNOTATION)
        status["rotation"] = {
            **(status.get("rotation") or {}),
            "lastRotationTime": rfc3339(now),
            **({"requested": requested} if requested else {}),
        }
        self._schedule(p, spec)
        until = "is deleted now" if not overlap else f"keeps working until {rfc3339(now + overlap)}"
        p.events[-1] = (
            "Normal",
            "Rotated",
            f"rotated the token ({why}): trigger {new.external_id} replaces {old.external_id}, which {until}",
        )
        self._flush(p)
        if not overlap:
            self._finish_replacement(p, provider, target)
        ROTATIONS.labels(spec.provider, "success").inc()
        return new
