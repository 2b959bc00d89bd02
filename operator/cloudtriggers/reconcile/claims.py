"""Conflict detection: which Triggers claim which provider object, and who keeps one claimed twice."""

from __future__ import annotations

import threading
from dataclasses import dataclass

# -- conflict detection ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
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
