"""Run a kopf operator in its own thread and event loop, for tests and the demo.

kopf 1.45 has no ``kopf.testing.KopfThread`` yet (only ``KopfRunner``, which goes through the CLI).
The operator needs its own loop: on shutdown ``kopf.operator()`` awaits and then cancels every task
created after it started, which would include the test's or the emulator's tasks in a shared loop
(H1 in /work/shared/reference/kopf-practice.md §2.6).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import kopf

__all__ = ["KopfThread", "login_handler_for", "test_settings"]

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 20.0


class KopfThread:
    """``kopf.operator()`` under ``asyncio.run`` in a thread, with threading stop/ready flags.

    Usage::

        with KopfThread(registry, settings) as operator:
            ...  # the operator has started its watches

    It assumes nothing about the handlers: the registry (including its ``@kopf.on.login`` handler,
    see :func:`login_handler_for`) is the caller's. An exception raised in the thread is re-raised
    by ``__enter__`` (if the operator dies before it is ready) or by ``stop()``/``__exit__``.
    """

    def __init__(
        self,
        registry: kopf.OperatorRegistry,
        settings: kopf.OperatorSettings,
        namespaces: list[str] | None = None,
        memo: object | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.namespaces = namespaces
        self.memo = memo
        self._stop_flag = threading.Event()
        self._ready_flag = threading.Event()
        self._exception: BaseException | None = None
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self._ready_flag.is_set()

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start the operator and wait until kopf reports it ready (or raise why it is not)."""
        if self._thread is not None:
            raise RuntimeError("A KopfThread can be started only once.")
        self._thread = threading.Thread(target=self._run, name=f"kopf-{id(self):x}", daemon=True)
        self._thread.start()
        # Poll so that an operator that dies early fails fast instead of after the whole timeout.
        deadline = time.monotonic() + timeout
        while not self._ready_flag.wait(0.05):
            if not self._thread.is_alive():
                self._reraise()
                raise RuntimeError("The operator exited before it was ready.")
            if time.monotonic() > deadline:
                self._stop_flag.set()
                self._thread.join(STOP_TIMEOUT)
                self._reraise()
                raise TimeoutError(f"The operator was not ready in {timeout} s.")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask the operator to stop, wait for it, and re-raise whatever it failed with."""
        if self._thread is None:
            return
        self._stop_flag.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"The operator did not stop in {timeout} s.")
        self._reraise()

    def __enter__(self) -> KopfThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.stop()
            return
        # The body's own failure stays the primary error; the operator's is attached as a note.
        try:
            self.stop()
        except Exception as stop_exc:
            exc.add_note(f"Also, the operator failed: {stop_exc!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self._operator())
        except BaseException as exc:  # re-raised in the caller's thread by start()/stop()
            self._exception = exc

    async def _operator(self) -> None:
        try:
            await kopf.operator(
                registry=self.registry,
                settings=self.settings,
                clusterwide=self.namespaces is None,
                namespaces=self.namespaces or [],
                stop_flag=self._stop_flag,
                ready_flag=self._ready_flag,
                memo=self.memo,
            )
        finally:
            # kopf waits for a threading.Event stop flag in the loop's default executor; if the
            # operator fails on its own, that wait would keep asyncio.run() from finishing.
            self._stop_flag.set()

    def _reraise(self) -> None:
        exception, self._exception = self._exception, None
        if exception is not None:
            raise exception


def test_settings() -> kopf.OperatorSettings:
    """Settings for running against the in-memory API (:class:`cloudtriggers.sandbox.kube.KubeServer`).

    * no cluster scanning: no CRD/namespace observation, which kmock cannot serve for namespaces (E8);
    * standalone: no peering objects in the emulator;
    * event posting stays on: the emulator stores v1 Events (with generateName) like any object;
    * watches end server-side after 30 s and resume from their resourceVersion, as in a cluster;
    * short network timeouts and backoffs, so that a broken test fails in seconds, not minutes.
    """
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True
    settings.peering.standalone = True
    settings.posting.enabled = True
    settings.watching.server_timeout = 30
    settings.watching.client_timeout = 45
    settings.watching.connect_timeout = 5
    settings.watching.reconnect_backoff = 0.1
    settings.networking.request_timeout = 10
    settings.networking.connect_timeout = 5
    settings.networking.error_backoffs = [0.1, 0.2, 0.5, 1]
    settings.queueing.exit_timeout = 1
    return settings


# pytest must not collect this factory as a test function when a test module imports it.
test_settings.__test__ = False  # type: ignore[attr-defined]


def login_handler_for(url: str) -> Callable[..., Awaitable[kopf.ConnectionInfo]]:
    """A login handler for ``@kopf.on.login(registry=...)`` that connects kopf to ``url`` over HTTP.

    An explicit login handler also sidesteps kopf's kubeconfig login, which reads $KUBECONFIG once
    at import time when the ``kubernetes`` package is installed (H2).
    """

    async def login_to_emulator(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url.rstrip("/"), insecure=True)

    return login_to_emulator
