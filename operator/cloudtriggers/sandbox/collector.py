"""The garbage collector of the emulated API (pkg/controller/garbagecollector), and a DELETE's
propagation policy as the API server's store turns it into the collector's finalizers
(k8s.io/apiserver registry/generic/registry/store.go: shouldOrphanDependents,
shouldDeleteDependents, deletionFinalizersForGarbageCollection).

Background (kubectl's default): the owner goes at once (or once its finalizers are gone), then the
collector deletes each dependent that has no other live owner, and drops the dangling reference of
one that has. Foreground (`kubectl delete --cascade=foreground`, Argo CD's prune by default): the
owner gets `foregroundDeletion`; the collector deletes its dependents first and takes the finalizer
off once none with blockOwnerDeletion is left. Orphan: the owner gets `orphan`; the collector strips
the owner's references from its dependents, then takes the finalizer off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import kmock

Body = dict[str, Any]
ObjKey = tuple[kmock.resource, str | None, str]


def _meta(body: Mapping[str, Any]) -> Body:
    meta = body.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _with_meta(body: Body, **changes: Any) -> Body:
    """A copy of body with these metadata fields changed (stored versions are never changed in place)."""
    return dict(body, metadata={**_meta(body), **changes})


ORPHAN: Final = "orphan"  # metav1.FinalizerOrphanDependents
FOREGROUND: Final = "foregroundDeletion"  # metav1.FinalizerDeleteDependents
POLICIES: Final = ("Orphan", "Background", "Foreground")


def delete_options(body: Any, params: Mapping[str, str]) -> dict[str, Any]:
    """The DeleteOptions of a DELETE: its body, or its query parameters (both are accepted)."""
    options: dict[str, Any] = dict(body) if isinstance(body, dict) else {}
    if "propagationPolicy" in params:
        options["propagationPolicy"] = params["propagationPolicy"]
    if "orphanDependents" in params:
        options["orphanDependents"] = params["orphanDependents"] == "true"
    return options


def _should_orphan(finalizers: Sequence[str], options: Mapping[str, Any]) -> bool:
    if options.get("orphanDependents") is not None:
        return bool(options["orphanDependents"])
    policy = options.get("propagationPolicy")
    if policy in POLICIES:
        return bool(policy == "Orphan")
    for f in finalizers:  # a finalizer already set overrides the default
        if f == ORPHAN:
            return True
        if f == FOREGROUND:
            return False
    return False  # every kind the emulator serves defaults to background deletion


def _should_delete_dependents(finalizers: Sequence[str], options: Mapping[str, Any]) -> bool:
    if options.get("orphanDependents") is not None:
        return False
    policy = options.get("propagationPolicy")
    if policy in POLICIES:
        return bool(policy == "Foreground")
    for f in finalizers:
        if f == FOREGROUND:
            return True
        if f == ORPHAN:
            return False
    return False


def deletion_finalizers(finalizers: Sequence[str], options: Mapping[str, Any]) -> list[str]:
    """The object's finalizers once this DELETE's policy is applied: both GC finalizers removed,
    then the one the policy asks for appended."""
    out = [f for f in finalizers if f not in (ORPHAN, FOREGROUND)]
    if _should_orphan(finalizers, options):
        out.append(ORPHAN)
    if _should_delete_dependents(finalizers, options):
        out.append(FOREGROUND)
    return out if set(out) != set(finalizers) else list(finalizers)


def refused(options: Mapping[str, Any]) -> str | None:
    """meta/v1/validation ValidateDeleteOptions: the 422 message of a DELETE it refuses."""
    policy = options.get("propagationPolicy")
    errors = []
    if policy is not None and options.get("orphanDependents") is not None:
        errors.append(
            f'propagationPolicy: Invalid value: "{policy}": orphanDependents and deletionPropagation '
            "cannot be both set"
        )
    if policy is not None and policy not in POLICIES:
        errors.append(
            f'propagationPolicy: Unsupported value: "{policy}": supported values: "Foreground", '
            '"Background", "Orphan", "nil"'
        )
    if not errors:
        return None
    listed = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
    return f'DeleteOptions.meta.k8s.io "" is invalid: {listed}'


class GarbageCollector:
    """ClusterEmulator's collector: the owner index and what the collector does with it. The
    attributes and the methods under TYPE_CHECKING are the emulator's (kube.py)."""

    _by_uid: dict[str, ObjKey]
    _dependents: dict[str, set[ObjKey]]
    _indexed: dict[ObjKey, tuple[str, frozenset[str]]]
    _lock: asyncio.Lock

    if TYPE_CHECKING:

        def _live(self, key: ObjKey) -> kmock.Object | None: ...
        def _spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...
        async def _delete(self, key: ObjKey, options: Mapping[str, Any] | None = None) -> Body: ...
        async def _update(
            self, key: ObjKey, old: Body, new: Body, *, subresource: str | None, strict: bool = False
        ) -> Body: ...

    def _propagate(self, key: ObjKey, body: Body) -> None:
        """The garbage collector's part of a deletion in the foreground, or with orphaning."""
        finalizers = _meta(body).get("finalizers") or []
        uid = str(_meta(body).get("uid") or "")
        if ORPHAN in finalizers:
            self._spawn(self._orphan(key, uid))
        elif FOREGROUND in finalizers:
            self._spawn(self._foreground(key, uid))

    async def _drop_gc_finalizer(self, key: ObjKey, uid: str, finalizer: str) -> None:
        obj = self._live(key)
        if obj is None or _meta(obj.raw).get("uid") != uid:
            return
        finalizers = [f for f in _meta(obj.raw).get("finalizers") or [] if f != finalizer]
        await self._update(key, obj.raw, _with_meta(obj.raw, finalizers=finalizers), subresource=None)

    async def _orphan(self, key: ObjKey, uid: str) -> None:
        """garbagecollector.orphanDependents: every dependent loses its reference to the owner, then
        the owner its `orphan` finalizer (and goes, if no other finalizer holds it)."""
        await asyncio.sleep(0)
        async with self._lock:
            for dkey in sorted(self._dependents.get(uid, ()), key=str):
                dep = self._live(dkey)
                if dep is None:
                    continue
                refs = [r for r in _meta(dep.raw).get("ownerReferences") or [] if r.get("uid") != uid]
                await self._update(dkey, dep.raw, _with_meta(dep.raw, ownerReferences=refs), subresource=None)
            await self._drop_gc_finalizer(key, uid, ORPHAN)

    async def _foreground(self, key: ObjKey, uid: str) -> None:
        """garbagecollector.attemptToDeleteItem and processDeletingDependentsItem: an owner deleted
        in the foreground. A dependent with no other solid owner (one not itself waiting for its
        dependents) is deleted, in the foreground when it has dependents of its own, else by its
        own finalizers' policy; one with another solid owner only stops blocking this one. Once no
        dependent with blockOwnerDeletion is left, `foregroundDeletion` comes off the owner. The
        owner's other finalizers (an operator's) still hold it afterwards: they are not the GC's."""
        while True:
            await asyncio.sleep(0)
            async with self._lock:
                owner = self._live(key)
                if owner is None or _meta(owner.raw).get("uid") != uid:
                    return
                if FOREGROUND not in (_meta(owner.raw).get("finalizers") or []):
                    return
                blocking = False
                for dkey in sorted(self._dependents.get(uid, ()), key=str):
                    dep = self._live(dkey)
                    if dep is None:
                        continue
                    refs = _meta(dep.raw).get("ownerReferences") or []
                    if any(r.get("uid") != uid and self._solid_owner(str(r.get("uid"))) for r in refs):
                        if any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in refs):
                            unblocked = [
                                {**r, "blockOwnerDeletion": False} if r.get("uid") == uid else r for r in refs
                            ]
                            new = _with_meta(dep.raw, ownerReferences=unblocked)
                            await self._update(dkey, dep.raw, new, subresource=None)
                        continue
                    if not _meta(dep.raw).get("deletionTimestamp"):
                        policy = (
                            "Foreground" if self._dependents.get(str(_meta(dep.raw).get("uid"))) else None
                        )
                        await self._delete(dkey, {"propagationPolicy": policy} if policy else {})
                    still = self._live(dkey)
                    if still is not None and any(
                        r.get("uid") == uid and r.get("blockOwnerDeletion")
                        for r in _meta(still.raw).get("ownerReferences") or []
                    ):
                        blocking = True
                if not blocking:
                    await self._drop_gc_finalizer(key, uid, FOREGROUND)
                    return
            await asyncio.sleep(0.05)

    def _solid_owner(self, uid: str) -> bool:
        """classifyReferences: an owner that exists and is not being deleted in the foreground."""
        key = self._by_uid.get(uid)
        obj = self._live(key) if key is not None else None
        if obj is None:
            return False
        meta = _meta(obj.raw)
        return not (meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or []))

    def _reindex(self, key: ObjKey, body: Body | None) -> None:
        """Keep _by_uid and _dependents in step with the object stored under key (None: removed)."""
        before = self._indexed.pop(key, None)
        if before is not None:
            uid, owners = before
            if self._by_uid.get(uid) == key:
                del self._by_uid[uid]
            for owner in owners:
                left = self._dependents.get(owner)
                if left is not None:
                    left.discard(key)
                    if not left:
                        del self._dependents[owner]
        if body is None:
            return
        meta = _meta(body)
        uid = str(meta.get("uid") or "")
        owners = frozenset(str(r.get("uid")) for r in meta.get("ownerReferences") or [] if r.get("uid"))
        self._indexed[key] = (uid, owners)
        if uid:
            self._by_uid[uid] = key
        for owner in owners:
            self._dependents.setdefault(owner, set()).add(key)

    async def _collect_dependents(self, namespace: str | None, owner_uid: str) -> None:
        dependents: list[tuple[ObjKey, Body]] = []
        for dkey in sorted(self._dependents.get(owner_uid, ()), key=str):
            obj = self._live(dkey)
            if obj is not None and (namespace is None or dkey[1] == namespace):
                dependents.append((dkey, obj.raw))
        for dkey, body in dependents:
            if self._live(dkey) is None:
                continue  # already collected through another owner in this cascade
            refs = body["metadata"]["ownerReferences"]
            if any(ref.get("uid") != owner_uid and ref.get("uid") in self._by_uid for ref in refs):
                kept = [r for r in refs if r.get("uid") != owner_uid]
                await self._update(dkey, body, _with_meta(body, ownerReferences=kept), subresource=None)
            else:
                await self._delete(dkey)

    async def _collect(self, key: ObjKey, uid: str) -> None:
        await asyncio.sleep(0)
        async with self._lock:
            obj = self._live(key)
            if obj is not None and _meta(obj.raw).get("uid") == uid:
                await self._delete(key)
