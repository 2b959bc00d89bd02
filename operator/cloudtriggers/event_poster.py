"""Events are posted by a thread of their own, as client-go's EventBroadcaster posts them from a
goroutine of its own: a pass records its Events and goes on to the next Trigger.

An Event is one more write per create, and on an API server that is busy (a few hundred Triggers
applied at once) the pass that waits for it holds a worker the next Trigger's create could use;
the status the pass wrote, not the Event, is what a user waits for. For the same reason an Event
waits while the operator's passes are busy (`busy`: a burst of creates), for at most `hold_max`
seconds: its write would compete at the API server with the status writes of the Triggers still
being made, and it goes out as soon as they are done. It moves that write, it does not save it.
Posted in the order recorded, each with the time it was recorded. Memory stays bounded: at most
`limit` Events wait (each as the encoded request body); beyond that the pass posts its own Event,
as before, so none is dropped while the operator runs. `flush` and shutdown hold nothing: at
shutdown what is queued is posted for a few seconds, then given up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

# client-go queues up to 1,000 Events (record.maxQueuedEvents) and drops the rest; here the pass posts
# its own beyond the limit, so it only bounds memory (an encoded Event is ~0.6 KiB).
QUEUED_EVENTS = 2000
# How long an Event may wait for the passes to go quiet, and how often it looks whether they have.
HOLD_MAX = 5.0
HOLD_POLL = 0.05
# Each: the request path, the encoded body, and what it is (for the log, never the message).
PostFn = Callable[[str, bytes, str], None]


class EventPoster:
    """One thread posting the Events `put` queues (module doc). `post` logs its own failures."""

    def __init__(
        self,
        post: PostFn,
        limit: int = QUEUED_EVENTS,
        busy: Callable[[], bool] | None = None,
        hold_max: float = HOLD_MAX,
    ) -> None:
        self._post = post
        self._limit = limit
        self.busy = busy  # whether the passes are busy (Scheduler.busy); None: never hold
        self._hold_max = hold_max
        self._flushing = 0  # flush() callers waiting: nothing is held for them
        # Each: when it was recorded (monotonic), then what post takes.
        self._queue: deque[tuple[float, str, bytes, str]] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._posting = False
        self._term = 0  # which start() the running thread belongs to: an old one, stuck, must not resume

    def put(self, path: str, data: bytes, what: str) -> bool:
        """Queue one Event; False when it was not (not running, or `limit` waiting): post it yourself."""
        with self._cond:
            if self._thread is None or self._stopping or len(self._queue) >= self._limit:
                return False
            self._queue.append((time.monotonic(), path, data, what))
            if len(self._queue) == 1:  # the thread waits for one; behind the first, its wait stands
                self._cond.notify_all()  # flush() callers wait on the same condition
            return True

    def queued(self) -> int:
        with self._cond:
            return len(self._queue) + self._posting

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._posting = False
            self._term += 1
            self._thread = threading.Thread(target=self._run, args=(self._term,), name="events", daemon=True)
            self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued Event is posted (or `timeout`); whether they all were."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._queue or self._posting:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._flushing -= 1

    def stop(self, timeout: float = 5.0) -> None:
        """Post what is queued for at most `timeout` seconds, give the rest up, end the thread."""
        with self._cond:
            thread = self._thread
            if thread is None:
                return
            self._stopping = True
            self._cond.notify_all()
        thread.join(timeout)
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
            self._thread = None
        if left:
            log.warning("%d Events were not posted before shutdown", left)

    def _held(self) -> float:
        """How long to wait before looking again whether the oldest Event may go (0: it may).
        Called with the lock held and an Event queued."""
        if self._stopping or self._flushing or self.busy is None:
            return 0.0
        left = self._queue[0][0] + self._hold_max - time.monotonic()
        if left <= 0 or not self.busy():
            return 0.0
        return min(HOLD_POLL, left)

    def _run(self, term: int) -> None:
        while True:
            with self._cond:
                while term == self._term:
                    if not self._queue:
                        if self._stopping:
                            break
                        self._cond.wait()
                    elif wait := self._held():
                        self._cond.wait(wait)
                    else:
                        break
                if not self._queue or term != self._term:
                    self._cond.notify_all()
                    return
                _, path, data, what = self._queue.popleft()
                self._posting = True
            try:
                self._post(path, data, what)
            except Exception:  # post logs what it expects; this thread must outlive the rest
                log.exception("posting an Event (%s) failed", what)
            finally:
                with self._cond:
                    if term == self._term:
                        self._posting = False
                    self._cond.notify_all()
