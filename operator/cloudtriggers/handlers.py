"""kopf registrations only: events wake a per-Trigger loop that calls the reconciler.

One daemon per Trigger runs reconcile passes in a worker thread and sleeps until the next is due
(resync, backoff) or until the Trigger changes (generation, the paused or reconcile-requested-at
annotations). Deletion goes through kopf's finalizer to Reconciler.finalize. The watch also tells the
credentials guard which Secret each Trigger uses, so a Secret is released once its last user is gone.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import kopf
from aiohttp import web

from .credentials import ReleaseQueue
from .metrics import TRIGGERS, render
from .models import FINALIZER, GROUP, PLURAL, VERSION
from .reconcile import (
    PAUSED_ANNOTATION,
    REQUESTED_ANNOTATION,
    Outcome,
    Reconciler,
    Retry,
    condition,
    has_finalizer,
)
from .settings import Settings

log = logging.getLogger(__name__)

STORAGE_PREFIX = "kopf.cloudtriggers.io"
FINALIZER_HEAD_START = 0.1  # seconds a new Trigger's first pass gives kopf's finalizer PATCH

LoginFn = Callable[..., Awaitable[Any] | Any]


def configure(settings: kopf.OperatorSettings, s: Settings) -> None:
    """kopf settings pinned by design.md; applied from day one so stored state never migrates."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STORAGE_PREFIX, key="last-handled-configuration"
    )
    # Our own Events tell the story; kopf's per-handler events would only add noise.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.execution.max_workers = s.workers
    settings.peering.standalone = True


class Runtime:
    """Per-process state shared by the handlers: the reconciler, its threads, the wake-up signals."""

    def __init__(self, reconciler: Reconciler, settings: Settings) -> None:
        self.reconciler = reconciler
        self.settings = settings
        self.executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="reconcile")
        self.wake: dict[str, asyncio.Event] = {}
        self.seen: dict[str, tuple[Any, ...]] = {}
        self.awaiting_finalizer: set[str] = set()
        self.http: web.AppRunner | None = None
        self.releases = ReleaseQueue(reconciler.guard, self.call)
        self.sweeper: asyncio.Task[None] | None = None

    def event(self, uid: str) -> asyncio.Event:
        return self.wake.setdefault(uid, asyncio.Event())

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


def fingerprint(body: Any) -> tuple[Any, ...]:
    """What a user changes to ask for a reconcile (status writes are not in it)."""
    meta = body.get("metadata", {})
    ann = meta.get("annotations") or {}
    return (meta.get("generation"), ann.get(PAUSED_ANNOTATION), ann.get(REQUESTED_ANNOTATION))


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
    last = datetime.fromisoformat(status["lastSyncTime"].replace("Z", "+00:00")).timestamp()
    try:
        return runtime.reconciler.restart_delay(
            (body.get("spec") or {}).get("resyncPeriod"), meta.get("uid", ""), last
        )
    except ValueError:
        return 0.0


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
        runtime.sweeper = asyncio.get_running_loop().create_task(_sweep_credentials(runtime))

    @kopf.on.cleanup(registry=registry)
    async def stop_http(**_: Any) -> None:
        TRIGGERS.clear()
        if runtime.sweeper is not None:
            runtime.sweeper.cancel()
            runtime.sweeper = None
        await runtime.releases.close()
        if runtime.http is not None:
            await runtime.http.cleanup()
            runtime.http = None

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)  # type: ignore[arg-type]
    async def watch_triggers(event: dict[str, Any], body: Any, uid: str, **_: Any) -> None:
        if event.get("type") == "DELETED":
            TRIGGERS.drop(uid)
            runtime.seen.pop(uid, None)
            runtime.wake.pop(uid, None)
            runtime.awaiting_finalizer.discard(uid)
            runtime.reconciler.forget(uid)
            runtime.releases.request(runtime.reconciler.guard.drop(uid))
            return
        TRIGGERS.update(uid, body)
        runtime.releases.request(runtime.reconciler.guard.note(uid, body))  # the Secret it stopped using
        key, claim = runtime.reconciler.claim_of(body)
        runtime.reconciler.claims.put(key, claim)
        fp = fingerprint(body)
        previous = runtime.seen.get(uid)
        runtime.seen[uid] = fp
        # First sight (start-up, a new object): the daemon decides when its first pass is due.
        if previous is not None and previous != fp:
            runtime.event(uid).set()
        elif uid in runtime.awaiting_finalizer and has_finalizer(body):
            runtime.awaiting_finalizer.discard(uid)
            runtime.event(uid).set()

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=5.0)  # type: ignore[arg-type]
    async def trigger_loop(
        stopped: kopf.DaemonStopped, body: Any, name: str, namespace: str, uid: str, **_: Any
    ) -> None:
        wake = runtime.event(uid)
        # kopf adds the finalizer as it spawns us. The reconciler checks it in the answer to its create
        # intent's write and refuses to create without it; a refused pass is retried as soon as the
        # watch shows it. A short head start lets kopf's PATCH land first, without waiting for the
        # change to come round a watch that may be far behind under load.
        if not has_finalizer(body):
            runtime.awaiting_finalizer.add(uid)
            if await _wait(stopped, wake, FINALIZER_HEAD_START) == "stopped":
                return
            runtime.awaiting_finalizer.discard(uid)
        delay: float | None = initial_delay(body, runtime)
        watch: tuple[str, str, str] | None = None
        first_pass = True
        while not stopped:
            if (delay is None or delay > 0) and await _sleep(stopped, wake, delay, watch, runtime):
                return
            wake.clear()
            try:
                # No GET when the watched body is known to be the newest: on a loop's first pass (no
                # write of ours can be newer), or when the watch is at the version of our last write.
                current = first_pass or runtime.reconciler.is_current(body)
                snapshot = copy.deepcopy(dict(body)) if current else None
                first_pass = False
                outcome: Outcome = await runtime.call(runtime.reconciler.reconcile, namespace, name, snapshot)
            except Exception:  # a bug or an API server problem: log, back off, keep the loop alive
                log.exception("reconcile of %s/%s failed", namespace, name)
                outcome = Outcome(runtime.reconciler.error_backoff(uid), "Error")
            delay, watch = outcome.requeue_after, outcome.watch_secret
            if outcome.needs_finalizer:
                if has_finalizer(body):
                    delay = 0  # it came round while we were refusing
                else:
                    runtime.awaiting_finalizer.add(uid)
            if delay is not None and delay <= 0:
                delay = 0.001

    # Only for objects being deleted: a change handler that matched every object would make kopf
    # write its diff-base annotation on each one (one more PATCH and watch event per Trigger).
    @kopf.on.delete(
        GROUP, VERSION, PLURAL, registry=registry, field="metadata.deletionTimestamp", value=kopf.PRESENT
    )
    async def delete_trigger(body: Any, uid: str, name: str, namespace: str | None, **_: Any) -> None:
        try:
            await runtime.call(runtime.reconciler.finalize, dict(body))
        except Retry as e:
            raise kopf.TemporaryError(str(e), delay=e.delay) from None
        except Exception as e:  # an API server problem (or a bug): retry with backoff, not kopf's 60 s
            log.exception("finalizing %s/%s failed", namespace, name)
            delay = runtime.reconciler.error_backoff(uid)
            raise kopf.TemporaryError(f"{type(e).__name__} while finalizing", delay=delay) from None
        runtime.reconciler.forget(uid)


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


async def _sleep(
    stopped: kopf.DaemonStopped,
    wake: asyncio.Event,
    delay: float | None,
    watch: tuple[str, str, str] | None,
    runtime: Runtime,
) -> bool:
    """Wait until due, woken, or (when watching a credentials Secret) the Secret changed.

    Returns True when the daemon must stop.
    """
    loop = asyncio.get_running_loop()
    deadline = None if delay is None else loop.time() + delay
    while True:
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            return False
        step = remaining
        if watch is not None:
            poll = runtime.settings.credentials_poll
            step = poll if step is None else min(step, poll)
        got_up = await _wait(stopped, wake, step)
        if got_up == "stopped":
            return True
        if got_up == "woken":
            return False
        if watch is not None:
            ns, secret, rv = watch
            got = await runtime.call(runtime.reconciler.kube.read_secret, ns, secret)
            if (got[1] if got else "") != rv:
                return False


async def _wait(stopped: kopf.DaemonStopped, wake: asyncio.Event, timeout: float | None) -> str:
    """Whichever comes first: "stopped", "woken" or "timeout"."""
    if stopped:
        return "stopped"
    if wake.is_set():
        return "woken"
    woke = asyncio.ensure_future(wake.wait())
    stop = asyncio.ensure_future(stopped.wait())
    try:
        done, _ = await asyncio.wait({woke, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        woke.cancel()
        stop.cancel()
    if stop in done or stopped:
        return "stopped"
    return "woken" if woke in done else "timeout"


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
