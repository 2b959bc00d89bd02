"""Credentials Secrets outlive the Triggers that need them.

Deleting a namespace deletes its Secrets and its Triggers in an order nobody chooses (the namespace
controller walks resource types in Go map order). When a credentials Secret went first, every
provider delete failed until the delete timeout released the Triggers, and their provider triggers
stayed alive. So a Secret in the Trigger's namespace that a Trigger uses carries our finalizer
(``SECRET_FINALIZER``) from before the first provider create until no Trigger references it any
more: deleted meanwhile, it stays readable with a deletionTimestamp, and goes once the last Trigger
using it is finalized.

Who uses a Secret is known from the watch (in memory) and confirmed by a LIST of the namespace's
Triggers before a release; a release that raced with a new user is undone at once. A sweep at
start-up and every few minutes releases what a crash or a downtime left held. The last good
credentials are also kept in memory for deletes whose Secret is gone anyway (the default credentials
Secret of the operator's namespace, which is never held, or one deleted before it was held).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from .kube import CredentialsSecret, Kube
from .models import FINALIZER

log = logging.getLogger(__name__)

SecretKey = tuple[str, str]  # namespace, name


def secret_of(body: Mapping[str, Any]) -> SecretKey | None:
    """The credentials Secret a Trigger names (always in its own namespace), or None."""
    ref = (body.get("spec") or {}).get("credentialsSecretRef") or {}
    name = ref.get("name") if isinstance(ref, Mapping) else None
    namespace = (body.get("metadata") or {}).get("namespace")
    return (str(namespace), str(name)) if name and namespace else None


def needs_credentials(body: Mapping[str, Any]) -> bool:
    """Whether the Trigger may still call its provider: alive, or being deleted but not yet finalized."""
    meta = body.get("metadata") or {}
    return not meta.get("deletionTimestamp") or FINALIZER in (meta.get("finalizers") or [])


class CredentialsGuard:
    """Holds credentials Secrets while Triggers use them; thread-safe."""

    def __init__(self, kube: Kube, namespaces: list[str] | None = None) -> None:
        self.kube = kube
        self.namespaces = list(namespaces or [])
        self._lock = threading.Lock()
        self._uses: dict[str, SecretKey] = {}  # Trigger uid -> the Secret it names
        self._users: dict[SecretKey, set[str]] = {}
        # Each Secret's key once, shared by the Triggers naming it (not a tuple of two new strings each).
        self._keys: dict[SecretKey, SecretKey] = {}
        self._last_good: dict[SecretKey, dict[str, str]] = {}

    # -- who uses what (from the watch) -----------------------------------------------------------

    def note(self, uid: str, body: Mapping[str, Any]) -> SecretKey | None:
        """Record which Secret the Trigger names now. Returns the Secret it stopped naming, if any."""
        key = secret_of(body) if needs_credentials(body) else None
        with self._lock:
            before = self._uses.get(uid)
            if before == key:
                return None
            if before is not None:
                self._leave(before, uid)
            if key is None:
                self._uses.pop(uid, None)
            else:
                key = self._keys.setdefault(key, key)
                self._uses[uid] = key
                self._users.setdefault(key, set()).add(uid)
        return before

    def drop(self, uid: str) -> SecretKey | None:
        """The Trigger is gone. Returns the Secret it named, if any."""
        with self._lock:
            before = self._uses.pop(uid, None)
            if before is not None:
                self._leave(before, uid)
        return before

    def _leave(self, key: SecretKey, uid: str) -> None:
        users = self._users.get(key)
        if users is not None:
            users.discard(uid)
            if not users:
                del self._users[key]
                self._keys.pop(key, None)

    def users(self, key: SecretKey) -> int:
        with self._lock:
            return len(self._users.get(key, ()))

    # -- holding (called by the reconciler before any provider call) ------------------------------

    def ensure_held(self, key: SecretKey, secret: CredentialsSecret) -> CredentialsSecret:
        """The Secret as it is once it carries our finalizer (or cannot: it is being deleted)."""
        for _ in range(3):
            if secret.held or secret.deleting:
                return secret
            if self.kube.hold_secret(*key, secret):
                log.info("holding credentials Secret %s/%s while Triggers use it", *key)
                return replace(secret, held=True)
            got = self.kube.read_credentials(*key)
            if got is None:
                return secret  # gone in between; the pass goes on with what it read
            secret = got
        return secret

    def remember(self, key: SecretKey, creds: Mapping[str, str]) -> None:
        with self._lock:
            self._last_good[key] = dict(creds)

    def last_good(self, key: SecretKey) -> dict[str, str] | None:
        with self._lock:
            got = self._last_good.get(key)
            return dict(got) if got is not None else None

    # -- releasing --------------------------------------------------------------------------------

    def _listed_users(self, key: SecretKey) -> list[str]:
        return [
            f"{key[0]}/{t['metadata']['name']}"
            for t in self.kube.list_triggers(key[0])
            if secret_of(t) == key and needs_credentials(t)
        ]

    def release_if_unused(self, key: SecretKey) -> bool:
        """Release the Secret when no Trigger needs it. True when released (or not held)."""
        if self.users(key):
            return False
        if self._listed_users(key):
            return False
        if not self.kube.release_secret(*key):
            return False  # changed in between: the next check decides
        with self._lock:
            self._last_good.pop(key, None)
        # A Trigger that appeared while we looked would now use an unheld Secret: hold it again.
        if self.users(key) or self._listed_users(key):
            got = self.kube.read_credentials(*key)
            if got is not None:
                self.ensure_held(key, got)
            return False
        log.info("released credentials Secret %s/%s: no Trigger uses it any more", *key)
        return True

    def sweep(self) -> int:
        """Release every held Secret that no Trigger needs (after a crash or a downtime)."""
        released = 0
        for key in self.kube.list_held_secrets(self.namespaces):
            try:
                released += self.release_if_unused(key)
            except Exception:  # one Secret's trouble must not stop the others
                log.exception("could not check credentials Secret %s/%s", *key)
        return released


def release_all(
    kube: Kube,
    namespaces: list[str],
    *,
    only_unused: bool = False,
    settle: float = 0.0,
    say: Callable[[str], None] = print,
) -> int:
    """`cloudtriggers release-credentials`: remove our finalizer from every held Secret (or, with
    `only_unused`, from those no Trigger needs), looking again for `settle` seconds. Returns how many."""
    guard = CredentialsGuard(kube, namespaces)
    deadline = time.monotonic() + settle
    released: set[SecretKey] = set()
    while True:
        for key in kube.list_held_secrets(namespaces):
            done = guard.release_if_unused(key) if only_unused else kube.release_secret(*key)
            if done:
                say(f"released {key[0]}/{key[1]}")
                released.add(key)
            elif only_unused:
                say(f"kept {key[0]}/{key[1]}: a Trigger still uses it")
        # An operator still shutting down may hold a Secret again: look until the settle time is up.
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(2.0, left))
    say(f"{len(released)} credentials Secret(s) released")
    return len(released)


class ReleaseQueue:
    """Coalesces release checks per Secret: a namespace of 200 Triggers deleted at once costs a check
    per Secret, not 200, and a check never overlaps another of the same Secret."""

    def __init__(self, guard: CredentialsGuard, call: Callable[..., Any], delay: float = 0.2) -> None:
        self.guard = guard
        self.call = call  # runs a blocking function in the worker threads
        self.delay = delay
        self._pending: dict[SecretKey, asyncio.Task[None]] = {}
        self._again: set[SecretKey] = set()

    def request(self, key: SecretKey | None) -> None:
        if key is None:
            return
        if key in self._pending:
            self._again.add(key)
            return
        self._pending[key] = asyncio.get_running_loop().create_task(self._check(key))

    async def _check(self, key: SecretKey) -> None:
        try:
            while True:
                self._again.discard(key)
                await asyncio.sleep(self.delay)
                try:
                    await self.call(self.guard.release_if_unused, key)
                except Exception:  # the periodic sweep catches up
                    log.exception("could not check credentials Secret %s/%s", *key)
                if key not in self._again:
                    return
        finally:
            self._pending.pop(key, None)

    async def close(self) -> None:
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
