"""The reconciler's requests to the API server, over a few kept-alive http.client connections.

The official client's urllib3 PoolManager costs about twice the CPU of a plain http.client exchange
per small request (URL parsing, pool lookup and retry bookkeeping on every call, measured in
bench/README.md), and a create makes four such requests: this was the largest share of the
operator's CPU after kopf's own. The connections are made as that PoolManager would make them: the
same server, CA, client certificate, SNI name and socket options, read from the pool's own settings,
so the kubeconfig means the same either way. Behind a proxy (ProxyManager, SOCKS) the caller keeps
urllib3, which does the tunnelling (`Connections.of` answers None).

Errors without an answer are raised as urllib3.exceptions.ProtocolError (a urllib3 HTTPError), as
the urllib3 path raises them, so callers catch one family either way.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import threading
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import urllib3
from urllib3.util.ssl_ import create_urllib3_context
from urllib3.util.wait import wait_for_read

from .http_answers import Answer


class _Plain(http.client.HTTPConnection):
    response_class = Answer

    def __init__(self, host: str, port: int, pool: Connections) -> None:
        super().__init__(host, port, timeout=pool.connect_timeout)
        self._pool = pool

    def connect(self) -> None:
        super().connect()  # also sets TCP_NODELAY, as urllib3 does
        self._pool.prepare(self.sock)


class _TLS(http.client.HTTPSConnection):
    response_class = Answer

    def __init__(self, host: str, port: int, pool: Connections) -> None:
        super().__init__(host, port, timeout=pool.connect_timeout, context=pool.context)
        self._pool = pool

    def connect(self) -> None:
        # http.client's own connect would send the host as SNI and check the certificate against
        # it; the kubeconfig's tls-server-name, when set, is the name to send and check.
        http.client.HTTPConnection.connect(self)
        assert self._pool.context is not None
        self.sock = self._pool.context.wrap_socket(self.sock, server_hostname=self._pool.server_hostname)
        self._pool.prepare(self.sock)


class Heads:
    """A request's head as http.client writes it (HTTPConnection._send_request: the request line,
    Host, Accept-Encoding, Content-Length, then the headers given), its checks included, without its
    cost per header (putheader's encoding and two regular expressions for each, ~7 a request: most of
    an exchange's own CPU). The API server's headers repeat (Accept, User-Agent, the token, the
    content type), so each name and value is checked and encoded once and kept;
    tests/unit/test_kube_http.py compares the bytes with http.client's."""

    MAX_KEPT = 64  # lines kept; a token refreshed for ever would otherwise add one each time

    def __init__(self, host: str, port: int, default_port: int) -> None:
        # putrequest's Host: the name IDNA-encoded when it is not ASCII, an IPv6 address bracketed,
        # the port only when it is not the scheme's.
        try:
            name = host.encode("ascii")
        except UnicodeEncodeError:
            name = host.encode("idna")
        if b":" in name:
            name = b"[" + name + b"]"
        self._host = b"Host: " + (name if port == default_port else name + b":%d" % port)
        self._lines: dict[tuple[str, str], bytes] = {}

    def head(self, method: str, target: str, headers: dict[str, str], body: bytes | None) -> bytes:
        if _BAD_METHOD.search(method):
            raise ValueError(f"method can't contain control characters. {method!r}")
        if _BAD_TARGET.search(target):
            raise http.client.InvalidURL(f"URL can't contain control characters. {target!r}")
        lines = [f"{method} {target} HTTP/1.1".encode("ascii"), self._host, b"Accept-Encoding: identity"]
        if body is not None:
            lines.append(b"Content-Length: %d" % len(body))
        elif method.upper() in _EXPECTING_BODY:
            lines.append(b"Content-Length: 0")
        for item in headers.items():
            line = self._lines.get(item)
            if line is None:
                line = self._line(*item)
            lines.append(line)
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    def _line(self, name: str, value: str) -> bytes:
        # putheader's checks and encodings, once per name and value.
        raw_name = name.encode("ascii")
        if name.lower() in _OWN:
            raise ValueError(f"{name} is the connection's to write")  # http.client would skip its own
        if not _LEGAL_NAME.fullmatch(raw_name):
            raise ValueError(f"Invalid header name {raw_name!r}")
        raw_value = value.encode("latin-1")
        if _ILLEGAL_VALUE.search(raw_value):
            # Not the value: it may be the bearer token (http.client's own message would show it).
            raise ValueError(f"Invalid header value for {name}: a line break not followed by a blank")
        line = raw_name + b": " + raw_value
        if len(self._lines) >= self.MAX_KEPT:
            self._lines.clear()
        self._lines[name, value] = line
        return line


# http.client's own patterns and set (private there: copied, and pinned by the byte comparison test).
_LEGAL_NAME = re.compile(rb"[^:\s][^:\r\n]*")
_ILLEGAL_VALUE = re.compile(rb"\n(?![ \t])|\r(?![ \t\n])")
_BAD_TARGET = re.compile("[\x00-\x20\x7f]")
_BAD_METHOD = re.compile("[\x00-\x1f]")
_EXPECTING_BODY = frozenset({"PATCH", "POST", "PUT"})
_OWN = frozenset({"host", "accept-encoding", "content-length", "transfer-encoding"})


class Reply(NamedTuple):
    status: int
    body: bytes
    retry_after: str | None = None  # the answer's Retry-After header (kube.py decides what it means)


class IdleConnections:
    """Kept-alive connections, thread-safe: one is taken for one exchange and given back (at most
    `maxsize` idle). Subclasses say how a new one is made (the provider transport: transport.py)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def new_connection(self) -> http.client.HTTPConnection:
        raise NotImplementedError

    def take(self) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self.new_connection()
            # The server may have closed it while it was idle (its idle timeout, a restart): a
            # readable idle socket is one at its end. urllib3 checks the same before each reuse.
            if conn.sock is not None and not wait_for_read(conn.sock, timeout=0.0):
                return conn
            conn.close()

    def give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.maxsize:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Connections(IdleConnections):
    """The connections to the API server."""

    def __init__(
        self,
        url: str,
        *,
        context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        socket_options: list[tuple[int, int, int]] | None = None,
        maxsize: int = 16,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")  # a server behind a path (a proxying dashboard)
        self.context = context if self.tls else None
        if self.tls and self.context is None:
            self.context = tls_context(verify=True)
        self.server_hostname = server_hostname or self.host
        self.socket_options = socket_options or []
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.heads = Heads(self.host, self.port, 443 if self.tls else 80)
        super().__init__(maxsize)

    @classmethod
    def of(cls, manager: urllib3.PoolManager, url: str, maxsize: int) -> Connections | None:
        """The connections the official client's pool manager would make to `url`; None when it is a
        proxy manager (or anything but a plain PoolManager) and urllib3 must stay."""
        if type(manager) is not urllib3.PoolManager:
            return None
        kw: dict[str, Any] = manager.connection_pool_kw
        context = None
        if urlsplit(url).scheme == "https":
            assert_hostname = kw.get("assert_hostname")
            if isinstance(assert_hostname, str) and assert_hostname:
                return None  # a name to check other than the one sent: urllib3 does that matching
            context = tls_context(
                verify=kw.get("cert_reqs", ssl.CERT_REQUIRED) != ssl.CERT_NONE,
                ca_file=kw.get("ca_certs"),
                ca_data=kw.get("ca_cert_data"),
                cert_file=kw.get("cert_file"),
                key_file=kw.get("key_file"),
                check_hostname=assert_hostname is not False,
            )
        return cls(
            url,
            context=context,
            server_hostname=kw.get("server_hostname"),
            socket_options=kw.get("socket_options"),
            maxsize=maxsize,
        )

    def prepare(self, sock: socket.socket) -> None:
        for level, option, value in self.socket_options:
            sock.setsockopt(level, option, value)
        sock.settimeout(self.read_timeout)

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Reply:
        """One exchange: the answer's status and body (and Retry-After, where it may count)."""
        head = self.heads.head(method, self.prefix + path, headers, body)
        conn = self.take()
        try:
            if conn.sock is None:
                conn.connect()
            assert conn.sock is not None
            conn.sock.sendall(head + body if body else head)
            resp = conn.response_class(conn.sock, method=method)
            resp.begin()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise urllib3.exceptions.ProtocolError(f"{method} {path}: {e!r}") from e
        except BaseException:
            conn.close()
            raise
        if resp.will_close:
            conn.close()
        else:
            self.give_back(conn)
        return Reply(resp.status, data, resp.getheader("Retry-After"))

    def new_connection(self) -> http.client.HTTPConnection:
        return _TLS(self.host, self.port, self) if self.tls else _Plain(self.host, self.port, self)


def tls_context(
    *,
    verify: bool,
    ca_file: str | None = None,
    ca_dir: str | None = None,
    ca_data: str | bytes | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client context for these settings, on urllib3's own base context (its protocol floor,
    options, TLS 1.3 post-handshake authentication for a client certificate asked late), then what
    urllib3's connection adds: the CA given (else the system's), the client certificate, and the
    hostname checked unless the kubeconfig turns that or verification off."""
    ctx = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE)
    if verify:
        if ca_file or ca_dir or ca_data:
            ctx.load_verify_locations(cafile=ca_file, capath=ca_dir, cadata=ca_data)
        else:
            ctx.load_default_certs()
        if not check_hostname:
            ctx.check_hostname = False
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx
