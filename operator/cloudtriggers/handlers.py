"""kopf registrations only: the watch feeds one scheduler (scheduler.py) that calls the reconciler.

kopf's event handler tells the scheduler what each Trigger looks like now; the scheduler runs passes
in the worker threads when they are due (resync, backoff) or when the Trigger changes (generation,
the paused or reconcile-requested-at annotations), and the finalizer path once it is being deleted.
The watch also tells the credentials guard which Secret each Trigger uses, so a Secret is released
once its last user is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import kopf
from aiohttp import web

from .credentials import ReleaseQueue
from .event_poster import EventPoster
from .ids import intern_ids
from .metrics import EVENTS_QUEUED, SCHEDULER, TRIGGERS, render
from .models import GROUP, PLURAL, VERSION, parse_time
from .output_secrets import OutputSecrets
from .reconcile import (
    PAUSED_ANNOTATION,
    REQUESTED_ANNOTATION,
    ROTATE_ANNOTATION,
    Reconciler,
    condition,
)
from .scheduler import Scheduler
from .settings import Settings

log = logging.getLogger(__name__)

STORAGE_PREFIX = "kopf.cloudtriggers.io"
KOPF_FINALIZER = f"{STORAGE_PREFIX}/finalizer"

LoginFn = Callable[..., Awaitable[Any] | Any]


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: only kopf's change handlers (on.create/update/resume) use one, and there are none
    here, yet kopf builds the essence of every watched body (a deep copy) to diff it. Should a change
    handler ever be registered, this must go back to kopf.AnnotationsDiffBaseStorage."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> None:  # type: ignore[override]
        return None

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


def configure(settings: kopf.OperatorSettings, s: Settings) -> None:
    """kopf settings pinned by design.md; applied from day one so stored state never migrates."""
    # Our finalizer (models.FINALIZER) is the scheduler's to add and remove; kopf's is another name,
    # which it never needs: no kopf handler here requires a finalizer.
    settings.persistence.finalizer = KOPF_FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    # Our own Events tell the story; kopf's per-handler events would only add noise.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.execution.max_workers = s.workers
    settings.peering.standalone = True
    # kopf keeps a worker (a task, a queue, the last event's body) per object for this long after its
    # last event (default 5 s). A Trigger's events come in one short burst (its pass's writes) and
    # then not for a resync period or more, so they would only add up: at 3,000 Triggers created at
    # once, peak RSS 130 -> 106 MiB with 0.1 s, and no more CPU (bench/README.md).
    settings.queueing.idle_timeout = 0.1


class Runtime:
    """Per-process state shared by the handlers: the reconciler, its threads, the wake-up signals."""

    def __init__(
        self,
        reconciler: Reconciler,
        settings: Settings,
        outputs: OutputSecrets | None = None,
        events: EventPoster | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.outputs = outputs  # the output Secrets' watch, run while kopf runs
        self.events = events  # the Events' poster thread, run while kopf runs
        if events is not None:
            EVENTS_QUEUED.source = events.queued
        self.settings = settings
        self.executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="reconcile")
        self.http: web.AppRunner | None = None
        self.releases = ReleaseQueue(reconciler.guard, self.call)
        self.sweeper: asyncio.Task[None] | None = None
        self.scheduler = Scheduler(reconciler, self.call, settings.workers, settings.credentials_poll)
        SCHEDULER.source = self.scheduler.stats
        if events is not None:
            events.busy = self.scheduler.busy  # Events wait while passes are busy (event_poster.py)
        self.scheduling: asyncio.Task[None] | None = None

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


def fingerprint(body: Any) -> Hashable:
    """What a user changes to ask for a reconcile (status writes are not in it). Without any of
    these annotations, the generation alone: the scheduler keeps one per Trigger, and a small int is
    shared where a tuple would be one more object (~70 bytes) each."""
    meta = body.get("metadata", {})
    ann = meta.get("annotations") or {}
    asked = (ann.get(PAUSED_ANNOTATION), ann.get(REQUESTED_ANNOTATION), ann.get(ROTATE_ANNOTATION))
    generation = meta.get("generation")
    return generation if asked == (None, None, None) else (generation, *asked)


def initial_delay(body: Any, runtime: Runtime) -> float:
    """After a restart, a Trigger that is in sync waits for its next resync: no provider call."""
    status = body.get("status") or {}
    meta = body.get("metadata", {})
    ready = condition(status, "Ready")
    synced = condition(status, "Synced")
    if not (ready and synced and ready.get("status") == "True" and synced.get("status") == "True"):
        return 0.0
    if status.get("observedGeneration") != meta.get("generation"):
        return 0.0
    if status.get("pendingCreate") or status.get("pendingDelete") or not status.get("lastSyncTime"):
        return 0.0
    if (meta.get("annotations") or {}).get(PAUSED_ANNOTATION) == "true":
        return 0.0
    if (meta.get("annotations") or {}).get(ROTATE_ANNOTATION) != (status.get("rotation") or {}).get(
        "requested"
    ):
        return 0.0  # a rotation asked for while the operator was away
    last = datetime.fromisoformat(status["lastSyncTime"].replace("Z", "+00:00")).timestamp()
    try:
        delay = runtime.reconciler.restart_delay(
            (body.get("spec") or {}).get("resyncPeriod"), meta.get("uid", ""), last
        )
    except ValueError:
        return 0.0
    due = parse_time((status.get("rotation") or {}).get("nextRotationTime"))
    return delay if due is None else min(delay, max(0.0, due - runtime.reconciler.clock()))


def register(
    registry: kopf.OperatorRegistry, runtime: Runtime, login: LoginFn | None = None, serve: bool = True
) -> None:
    """`serve`: start /metrics, /healthz and /readyz with the operator (off when the process serves
    them itself from its start, as `cloudtriggers run` does so that a standby replica answers too)."""
    if login is not None:
        kopf.on.login(registry=registry)(login)

    @kopf.on.startup(registry=registry)
    async def start_http(**_: Any) -> None:
        TRIGGERS.clear()  # the gauge describes this operator's view only, filled by the watch
        if serve and runtime.settings.http_port:
            runtime.http = await serve_http(runtime.settings.http_port)
        if runtime.outputs is not None:
            runtime.outputs.start()
        if runtime.events is not None:
            runtime.events.start()
        loop = asyncio.get_running_loop()
        runtime.sweeper = loop.create_task(_sweep_credentials(runtime))
        runtime.scheduling = loop.create_task(runtime.scheduler.run())

        def wake(uids: set[str]) -> None:  # from a worker thread
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(runtime.scheduler.wake, uids)

        runtime.reconciler.breaker.wake = wake

    @kopf.on.cleanup(registry=registry)
    async def stop_http(**_: Any) -> None:
        TRIGGERS.clear()
        runtime.reconciler.breaker.wake = None
        if runtime.sweeper is not None:
            runtime.sweeper.cancel()
            runtime.sweeper = None
        if runtime.scheduling is not None:
            runtime.scheduling.cancel()
            runtime.scheduling = None
            await runtime.scheduler.stop()
        await runtime.releases.close()
        if runtime.events is not None:  # after the scheduler: the last passes' Events go out too
            await asyncio.get_running_loop().run_in_executor(None, runtime.events.stop)
        if runtime.outputs is not None:
            await asyncio.get_running_loop().run_in_executor(None, runtime.outputs.stop)
        if runtime.http is not None:
            await runtime.http.cleanup()
            runtime.http = None

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)  # type: ignore[arg-type]
    async def watch_triggers(event: dict[str, Any], body: Any, uid: str, **_: Any) -> None:
        if event.get("type") == "DELETED":
            TRIGGERS.drop(uid)
            runtime.scheduler.forget(uid)
            runtime.reconciler.forget(uid)
            runtime.releases.request(runtime.reconciler.guard.drop(uid))
            return
        # The event's plain dict, not kopf's Body: a Body's every .get() goes through its Mapping view.
        raw = intern_ids(event.get("object") or dict(body))
        uid = raw["metadata"]["uid"]  # the interned copy, the one every index keeps
        TRIGGERS.update(uid, raw)
        runtime.releases.request(runtime.reconciler.guard.note(uid, raw))  # the Secret it stopped using
        key, claim = runtime.reconciler.claim_of(raw)
        runtime.reconciler.claims.put(key, claim)
        runtime.scheduler.observe(raw, lambda: initial_delay(raw, runtime), fingerprint(raw))


async def _sweep_credentials(runtime: Runtime) -> None:
    """Release held credentials Secrets nobody uses any more: soon after start-up (what a crash or a
    downtime left), then periodically."""
    period = runtime.settings.credentials_sweep
    await asyncio.sleep(min(10.0, period))
    while True:
        try:
            await runtime.call(runtime.reconciler.guard.sweep)
        except Exception:
            log.exception("the sweep of held credentials Secrets failed; retrying in %.0f s", period)
        await asyncio.sleep(period)


async def serve_http(port: int, host: str = "0.0.0.0") -> web.AppRunner:
    """/metrics for Prometheus, /healthz and /readyz for the kubelet, in the operator's own loop.

    Served by the event loop that runs the watches, so an answer proves that loop is alive.
    """

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", ok)
    app.router.add_get("/readyz", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("serving /metrics, /healthz and /readyz on port %d", port)
    return runner


def serve_in_thread(port: int) -> threading.Thread:
    """serve_http in a loop of its own, for a process whose operator may not run yet (a standby)."""
    ready = threading.Event()

    def main() -> None:
        async def forever() -> None:
            await serve_http(port)
            ready.set()
            await asyncio.Event().wait()

        asyncio.run(forever())

    thread = threading.Thread(target=main, name="http", daemon=True)
    thread.start()
    ready.wait(10)
    return thread
