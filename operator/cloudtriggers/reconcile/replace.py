"""The replace phase: a change the provider cannot make in place is a new trigger for the old one."""

from __future__ import annotations

from ..models import TriggerSpec, token_sha256
from ..providers.base import Observed, Provider, Target
from .passes import _Base, _Pass


class ReplacePhase(_Base):
    """Replace: provider.create (through the create phase) and provider.delete of the old trigger,
    in the order the provider needs (replace_order); status.pendingDelete survives a crash between."""

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
