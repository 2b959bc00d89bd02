"""One scheduler for every Trigger, fed by kopf's watch: when each Trigger's next pass is due.

kopf's event handler tells it what the watch shows (``observe``); it keeps, per Trigger, the newest
body, when the next pass is due (resync with its phase, backoff, at once after a change) and the
credentials Secret to poll while the Trigger waits for one. Passes run in the worker threads, at
most one per Trigger at a time and at most ``workers`` in all. A daemon per Trigger did the same at
the cost of a kopf task, its bookkeeping and its memory for each Trigger.

It also owns our finalizer, so that kopf (whose own finalizer name is set apart) never adds or
strips it: the reconciler adds it in a Trigger's first pass (with the first create's intent, in one
write), and the scheduler takes it off once Reconciler.finalize has deleted what it made. Deletion
passes retry with the delay finalize asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .ids import intern_ids
from .kube import KubeApiError
from .packed import pack, unpack
from .reconcile import Outcome, Reconciler, Retry, has_finalizer

log = logging.getLogger(__name__)

Call = Callable[..., Awaitable[Any]]

# Seconds without a pass running or due after which the scheduler is quiet: Events wait for that
# (event_poster.py), so that in a burst of creates the API server takes the status writes first.
QUIET = 0.1


@dataclass(slots=True)
class _Entry:
    uid: str
    namespace: str
    name: str
    # The Trigger as last watched, packed (packed.py: ~0.2 KiB against ~6 KiB as dicts); each pass
    # gets a fresh copy of its own by unpacking it.
    packed: bytes = b""
    version: str = ""  # its resourceVersion
    deleting: bool = False  # has a deletionTimestamp
    finalized: bool = False  # carries our finalizer
    due: float | None = None  # loop time of the next pass; None: not until the Trigger changes
    watch: tuple[str, str, str] | None = None  # credentials Secret to poll: namespace, name, version
    token: int = 0  # the heap item that is current for this entry
    running: bool = False
    again: bool = False  # a change arrived while a pass ran: run once more right after
    first: bool = True
    asked: Hashable = None  # the last event's fingerprint (kept here: a dict of them cost ~0.1 KiB a Trigger)

    def keep(self, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        self.packed = pack(body)
        self.version = str(meta.get("resourceVersion") or "")
        self.deleting = bool(meta.get("deletionTimestamp"))
        self.finalized = has_finalizer(body)

    @property
    def body(self) -> dict[str, Any]:
        """A copy of the Trigger as last watched, the caller's own (its uid, namespace and name the
        interned copies every index shares: ids.py)."""
        return intern_ids(unpack(self.packed))


@dataclass
class Scheduler:
    reconciler: Reconciler
    call: Call  # runs a function in the worker threads
    workers: int
    credentials_poll: float
    entries: dict[str, _Entry] = field(default_factory=dict)
    # (when, the entry's token, uid): the token breaks a tie of times before the uid does (a global
    # sequence number cost one more int a Trigger, and equal loop times hardly occur).
    _heap: list[tuple[float, int, str]] = field(default_factory=list)
    _wakeup: asyncio.Event | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _active: int = 0  # passes running (at most `workers`)
    _busy_at: float = float("-inf")  # loop time a pass last ran or was due

    # -- what the watch shows (kopf's event handler) -------------------------------------------------

    def observe(self, body: Mapping[str, Any], initial: Callable[[], float], asked: Hashable = None) -> None:
        """A Trigger as the watch shows it (not DELETED). `initial()`: seconds to its first pass on
        first sight; `asked`: what a user changes to ask for a pass (handlers.fingerprint): a pass
        now when it differs from the last event's."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        e = self.entries.get(uid)
        if e is None:
            e = self.entries[uid] = _Entry(uid, str(meta.get("namespace")), str(meta.get("name")))
            e.keep(body)
            e.asked = asked
            self._reschedule(e, self._now() + (0.0 if e.deleting or not e.finalized else initial()))
            return
        was_deleting = e.deleting
        changed, e.asked = e.asked != asked, asked
        e.keep(body)
        known = self.reconciler.versions.get(uid)  # read once: worker threads write it
        if known is not None and known == e.version:
            e.version = known  # the version our own write got back: one copy for both
        if e.deleting and not was_deleting:
            self._run_now(e)  # the finalizer path, at once
        elif changed:
            self._run_now(e)

    def forget(self, uid: str) -> None:
        self.entries.pop(uid, None)

    def wake(self, uids: Iterable[str]) -> None:
        """A pass now for each of these Triggers (the credentials breaker's waiters: base.py)."""
        for uid in uids:
            e = self.entries.get(uid)
            if e is not None:
                self._run_now(e)

    # -- the loop ------------------------------------------------------------------------------------

    async def run(self) -> None:
        self._wakeup = asyncio.Event()
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            # A pass starts only when a worker is free: what waits stays a heap item, not a task
            # (ten thousand Triggers due at once were ten thousand queued tasks, megabytes in all).
            while self._heap and self._heap[0][0] <= now and self._active < self.workers:
                _, token, uid = heapq.heappop(self._heap)
                e = self.entries.get(uid)
                if e is None or e.token != token:
                    continue  # superseded by a later reschedule
                if e.running:
                    e.again = True
                    continue
                e.running = True
                self._active += 1
                task = loop.create_task(self._run_one(e))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            if self._active or (self._heap and self._heap[0][0] <= now):
                self._busy_at = now
            if not self._heap or (self._active >= self.workers and self._heap[0][0] <= now):
                timeout = None  # until something is scheduled or a pass ends
            else:
                timeout = self._heap[0][0] - now
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def stop(self, timeout: float = 5.0) -> None:
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _reschedule(self, e: _Entry, at: float | None) -> None:
        """The next thing to do for e: its pass at `at`, or a poll of its Secret before that."""
        e.due = at
        e.token += 1
        when = at
        if e.watch is not None:
            poll = self._now() + self.credentials_poll
            when = poll if when is None else min(when, poll)
        if when is not None:
            heapq.heappush(self._heap, (when, e.token, e.uid))
            if self._wakeup is not None:
                self._wakeup.set()

    def _run_now(self, e: _Entry) -> None:
        if e.running:
            e.again = True
        else:
            self._reschedule(e, self._now())

    async def _run_one(self, e: _Entry) -> None:
        try:
            at = await self._run_in_slot(e)
        except Exception:  # a bug: log, and keep the Trigger scheduled
            log.exception("scheduling %s/%s failed", e.namespace, e.name)
            at = self._now() + self.reconciler.error_backoff(e.uid)
        finally:
            e.running = False
            self._active -= 1
            self._busy_at = self._now()
            if self._wakeup is not None:
                self._wakeup.set()  # a worker is free
        if self.entries.get(e.uid) is not e:
            return  # gone meanwhile
        if e.again:
            e.again = False
            at = self._now()
        self._reschedule(e, at)

    async def _run_in_slot(self, e: _Entry) -> float | None:
        if e.deleting:
            return await self._finalize(e)
        if e.watch is not None and (e.due is None or self._now() < e.due) and not e.again:
            return await self._poll(e)
        return await self._pass(e)

    def busy(self) -> bool:
        """Whether a pass ran or was due within the last QUIET seconds (asked from the Events'
        thread: two reads under the GIL; the loop's clock is time.monotonic)."""
        return self._active > 0 or time.monotonic() - self._busy_at < QUIET

    def stats(self) -> tuple[int, int, float]:
        """Passes due but waiting for a worker, passes running, and how long the oldest has waited
        (for /metrics, from its own thread: one copy of the heap, taken under the GIL)."""
        now = time.monotonic()  # the loop's clock
        due = []
        for at, token, uid in list(self._heap):
            e = self.entries.get(uid)
            if at <= now and e is not None and e.token == token and not e.running:
                due.append(at)
        return len(due), self._active, max(0.0, now - min(due)) if due else 0.0

    async def _poll(self, e: _Entry) -> float | None:
        """Waiting for a credentials Secret: a pass at once if it changed, else keep waiting."""
        assert e.watch is not None
        ns, secret, version = e.watch
        got = await self.call(self.reconciler.kube.read_credentials, ns, secret)
        if (got.resource_version if got else "") != version:
            return await self._pass(e)
        return e.due

    async def _pass(self, e: _Entry) -> float | None:
        uid = e.uid
        try:
            # No GET when the watched body is known to be the newest: the first pass (no write of
            # ours can be newer), or the watch is at the version of our own last write.
            current = e.first or self.reconciler.is_current_version(e.uid, e.version)
            snapshot = e.body if current else None
            e.first = False
            outcome: Outcome = await self.call(self.reconciler.reconcile, e.namespace, e.name, snapshot)
        except KubeApiError as err:
            if err.status in (409, 422):  # our finalizer's patch raced with a change: read it again
                e.first = False
                return self._now() + 0.1
            log.exception("reconcile of %s/%s failed", e.namespace, e.name)
            return self._now() + self.reconciler.error_backoff(uid)
        except Exception:  # a bug or an API server problem: log, back off, keep it scheduled
            log.exception("reconcile of %s/%s failed", e.namespace, e.name)
            return self._now() + self.reconciler.error_backoff(uid)
        e.watch = outcome.watch_secret
        delay = outcome.requeue_after
        if delay is None:
            return None
        return self._now() + max(delay, 0.001)

    async def _finalize(self, e: _Entry) -> float | None:
        """Reconciler.finalize, then our finalizer goes; retried with the delay it asks."""
        if not e.finalized:
            return None  # nothing of ours holds it: the API server deletes it
        try:
            await self.call(self.reconciler.finalize, e.body)
        except Retry as r:
            return self._now() + r.delay
        except Exception:
            log.exception("finalizing %s/%s failed", e.namespace, e.name)
            return self._now() + self.reconciler.error_backoff(e.uid)
        body = e.body
        for _ in range(5):
            try:
                await self.call(self.reconciler.kube.set_trigger_finalizer, body, False)
                break
            except KubeApiError as err:
                if err.status not in (409, 422):
                    raise
                # Changed since it was read (our own status write, or a label): take the finalizer
                # off the version as it is now; what finalize did stands.
                fresh = await self.call(self.reconciler.kube.get_trigger, e.namespace, e.name)
                if fresh is None:
                    break
                body = fresh
        else:
            return self._now() + 1.0
        self.reconciler.forget(e.uid)
        return None
