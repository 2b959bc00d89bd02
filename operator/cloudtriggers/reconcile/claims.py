"""Conflict detection: which Triggers claim which provider object, and who keeps one claimed twice."""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# -- conflict detection ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    uid: str
    namespace: str
    name: str
    created: str  # metadata.creationTimestamp
    owns: bool  # status.externalId names the object (it created or adopted it)

    @classmethod
    def of(cls, meta: Mapping[str, Any], owns: bool) -> Claim:
        """The claim of the Trigger with this metadata. Its strings are the ones the indexes share
        (ids.py), and creation times are interned: Triggers applied together share a second."""
        created = meta.get("creationTimestamp")
        return cls(
            uid=meta.get("uid", ""),
            namespace=str(meta.get("namespace")),
            name=str(meta.get("name")),
            created=sys.intern(created) if isinstance(created, str) else "",
            owns=owns,
        )

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


class ClaimIndex:
    """Which Triggers point at which provider object, fed by the watch (and by our own writes).

    Thread-safe: the watch updates it in the event loop, reconciles read it in worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # A tuple per key, not a dict: nearly every object is claimed by one Trigger (a one-entry
        # dict is ~180 bytes a Trigger, the tuple 48).
        self._by_key: dict[str, tuple[Claim, ...]] = {}
        self._by_uid: dict[str, str] = {}

    def put(self, key: str | None, claim: Claim) -> None:
        with self._lock:
            self._leave(claim.uid)
            if key:
                self._by_key[key] = (*self._by_key.get(key, ()), claim)
                self._by_uid[claim.uid] = key

    def drop(self, uid: str) -> None:
        with self._lock:
            self._leave(uid)

    def _leave(self, uid: str) -> None:
        old = self._by_uid.pop(uid, None)
        if old is None:
            return
        rest = tuple(c for c in self._by_key.get(old, ()) if c.uid != uid)
        if rest:
            self._by_key[old] = rest
        else:
            self._by_key.pop(old, None)

    def others(self, key: str, uid: str) -> list[Claim]:
        with self._lock:
            return [c for c in self._by_key.get(key, ()) if c.uid != uid]


def winner(me: Claim, others: list[Claim]) -> Claim:
    """Who keeps an object claimed twice: the owner, then the oldest, then by name."""
    return min([me, *others], key=lambda c: (not c.owns, c.created, c.ref))
