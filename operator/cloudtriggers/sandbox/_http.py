"""What the provider sandboxes share: a threaded HTTP server on a background thread.

Each sandbox keeps its own request handling (routing, auth, error shapes); this module holds the
plumbing that is the same for all of them, stdlib only like the sandboxes themselves.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self


class SandboxServer(ThreadingHTTPServer):
    """Tracks open connections, so that stop() also ends idle keep-alive connections."""

    daemon_threads = True
    # socketserver listens with a backlog of 5: a burst of new connections (the operator's first
    # requests, one per worker) overflows it, and each dropped connect waits for TCP's 1 s SYN
    # retransmission. A provider's front (nginx: 511) takes such a burst.
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], sandbox: Any) -> None:
        super().__init__(address, handler)
        self.sandbox = sandbox
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class SandboxHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1, every method routed to `_handle(method)`, nothing logged."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' pooled sessions expect
    timeout = 30  # idle keep-alive connections give their thread back eventually
    # Headers and body leave in one write and without Nagle: otherwise the client's delayed ACK holds
    # every answer back ~40 ms.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: SandboxServer

    def _handle(self, method: str) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        return  # request lines can carry tokens; requests are recorded by the sandbox, never logged

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""


class ServedSandbox:
    """start()/stop()/url and the context manager, for a sandbox served by SandboxServer."""

    handler_class: ClassVar[type[SandboxHandler]]
    label: ClassVar[str]  # e.g. "GitLab sandbox", for errors and the thread name

    def _init_server(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: SandboxServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{self.label} already started")
        server = SandboxServer((self._host, self._port), self.handler_class, self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.label.lower().replace(" ", "-"),
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.close_connections()  # idle keep-alive connections would otherwise outlive the server
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Scheme, host and port, without a trailing slash."""
        if self._server is None:
            raise RuntimeError(f"{self.label} not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"
