"""The observe phase: what the provider holds now, against the spec.

ObservePhase._sync is the path of every pass that gets to the provider: it observes the provider
object (provider.observe), checks no other Trigger claims it, compares it with what the spec wants
(provider.desired) and repairs a difference in place (provider.update) or hands it to the create or
replace phase; _settle then records the object and its secret outputs in status and the Secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from ..metrics import DRIFT_REPAIRS, PERMA_DIFF_STOPS
from ..models import TriggerSpec, parse_duration, token_sha256
from ..providers.base import Observed, Provider, Target, diff
from .claims import Claim, winner
from .passes import _Base, _Pass, _Stop

# A drift check that finds everything in sync writes nothing, except lastSyncTime once it is this
# many resync periods old: each status write is an API write and a watch event for every watcher, and
# at 10,000 Triggers one per check would be the operator's main load on the API server.
SYNC_TIME_REFRESH = 5


class ObservePhase(_Base):
    """Observe (provider.observe), detect conflicts and drift, update in place (provider.update)."""

    def _sync(self, p: _Pass, spec: TriggerSpec, provider: Provider, target: Target) -> tuple[str, str, bool]:
        """Bring the provider in line. Returns (Ready reason, message, Ready)."""
        status = p.status
        observe_only = spec.management_policy == "ObserveOnly"
        if status.get("pendingDelete") and not self._overlap_left(status["pendingDelete"]):
            self._finish_replacement(
                p, provider, target
            )  # a replacement's, or a rotation's after its overlap
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
        elif not changed and (why := self._rotation_due(p, spec, provider)):
            obs = self._rotate(p, spec, provider, target, obs, why)
        return self._settle(p, spec, provider, obs, fresh=adopting)

    def _check_conflict(
        self, p: _Pass, provider: Provider, spec: TriggerSpec, ext: str, known: Mapping[str, Any]
    ) -> None:
        key: str = provider.claim_key(spec.block, known, ext)
        me = Claim.of(p.meta, owns=p.status.get("externalId") == ext)
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
            PERMA_DIFF_STOPS.labels(p.meta["namespace"], p.meta["name"], spec.provider).inc()
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
        have = self.kube.read_output(p.meta["namespace"], secret_name)
        recorded = status.get("tokenSha256")
        have_sha = have.token_sha if have else None
        if obs.outputs and (fresh or recorded is None or token_sha256(obs.outputs["token"]) == recorded):
            # A token the provider shows in full: write it unless the Secret already holds it.
            sha = token_sha256(obs.outputs["token"])
            if have is None or have_sha != sha or not have.holds(obs.outputs):
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

    def _sync_due(self, old_status: Mapping[str, Any], spec: TriggerSpec) -> bool:
        last = old_status.get("lastSyncTime")
        if not last:
            return True
        period = parse_duration(spec.resync_period) if spec.resync_period else self.settings.resync_period
        then = datetime.fromisoformat(last.replace("Z", "+00:00"))
        return datetime.now(UTC) - then >= timedelta(seconds=period * SYNC_TIME_REFRESH)
