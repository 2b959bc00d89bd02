"""providers/transport.py: a provider request sent over kept-alive http.client connections must come
out as requests' HTTPAdapter (urllib3 under it) makes of the same request: the same answer (status,
reason, headers, decoded body, encoding), the same exception for the same failure, the same TLS
verdicts, and connections only where the endpoint policy allows. Every case is sent both ways: the
transport, and the mounted adapter (`session.transport = None`). The bytes on the wire are compared
in test_policy_session_direct.py. The certificates in tls/ are the test CA's (tls/README.md).
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import socketserver
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import urllib3
from urllib3.util import connection

from cloudtriggers.providers.ack import _never_connected
from cloudtriggers.providers.base import PolicySession, ProviderError, new_session
from cloudtriggers.providers.endpoints import EndpointPolicy
from cloudtriggers.providers.transport import Transport

TLS = Path(__file__).parent / "tls"
BODY = json.dumps({"id": 7, "description": "Deploy ü ☃"}).encode()


def _head(status: str, headers: list[tuple[str, str]], version: str = "HTTP/1.1") -> bytes:
    lines = [f"{version} {status}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _json(body: bytes, *extra: tuple[str, str]) -> bytes:
    return (
        _head("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra])
        + body
    )


# Each answer as raw bytes (no Date header: the two ways' answers must compare equal), or None when
# the server hangs up instead; `close` tells the server to close after writing it.
ANSWERS: dict[str, tuple[bytes | None, bool]] = {
    "/plain": (_json(BODY), False),
    "/gzip": (_json(gzip.compress(BODY), ("Content-Encoding", "gzip")), False),
    "/deflate": (_json(zlib.compress(BODY), ("Content-Encoding", "deflate")), False),
    "/bad-gzip": (_json(b"not gzip at all", ("Content-Encoding", "gzip")), False),
    "/unknown-encoding": (_json(b"\x01\x02", ("Content-Encoding", "x-custom")), False),
    "/repeated": (
        _json(
            BODY,
            ("Set-Cookie", "a=1; Path=/"),
            ("X-Dup", "one"),
            ("set-cookie", "b=2; Path=/"),
            ("x-dup", "two"),
            ("RateLimit-Remaining", "599"),
        ),
        False,
    ),
    "/folded": (_json(BODY, ("X-Folded", "first\r\n  second")), False),
    "/chunked": (
        _head("200 OK", [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")])
        + b"".join(b"%x\r\n%s\r\n" % (len(BODY[i : i + 5]), BODY[i : i + 5]) for i in range(0, len(BODY), 5))
        + b"0\r\n\r\n",
        False,
    ),
    "/close": (_json(BODY, ("Connection", "close")), True),
    "/http10": (_head("200 OK", [("Content-Type", "application/json")], "HTTP/1.0") + BODY, True),
    "/no-content": (_head("204 No Content", [("X-Request-Id", "r-1")]), False),
    "/latin1": (
        _head("200 OK", [("Content-Type", "text/plain; charset=ISO-8859-1"), ("Content-Length", "4")])
        + b"caf\xe9",
        False,
    ),
    "/error": (
        _head(
            "429 Too Many Requests",
            [("Content-Type", "application/json"), ("Retry-After", "3"), ("Content-Length", "2")],
        )
        + b"{}",
        False,
    ),
    "/odd-reason": (_head("418 I'm a teapot, really", [("Content-Length", "0")]), False),
    "/truncated": (
        _head("200 OK", [("Content-Type", "application/json"), ("Content-Length", "100")]) + BODY[:10],
        True,
    ),
    "/hang-up": (None, True),
    "/garbage": (b"SMTP ready\r\n\r\n", True),
}


class RawServer(socketserver.ThreadingTCPServer):
    """Reads one request at a time from each connection and writes the path's raw answer."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.connections = 0
        self.closed = 0  # connections the server has closed
        self.requests: list[tuple[str, int]] = []  # (request line, client port)
        self.delay = 0.0
        super().__init__(("127.0.0.1", 0), _RawHandler)
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)  # closes the connection
        self.closed += 1


class _RawHandler(socketserver.StreamRequestHandler):
    server: RawServer

    def handle(self) -> None:
        self.server.connections += 1
        try:
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    return
                length = 0
                while (h := self.rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
                    name, _, value = h.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if length:
                    self.rfile.read(length)
                text = line.decode("latin-1").strip()
                self.server.requests.append((text, self.client_address[1]))
                path = text.split()[1].split("?", 1)[0]
                answer: bytes | None
                if path == "/slow":
                    time.sleep(1.0)
                    answer, close = _json(BODY), False
                elif path == "/drop-after":
                    answer, close = _json(BODY), False  # kept alive as far as the client knows ...
                else:
                    answer, close = ANSWERS[path]
                if answer is not None:
                    self.wfile.write(answer)
                    self.wfile.flush()
                if close or path == "/drop-after":  # ... then closed while idle
                    return
        except (OSError, ssl.SSLError):
            return


def _start(context: ssl.SSLContext | None = None) -> Iterator[RawServer]:
    server = RawServer(context)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def raw() -> Iterator[RawServer]:
    yield from _start()


LOCAL = EndpointPolicy.parse(allowed=["http://127.0.0.1", "https://127.0.0.1"])


def _session(policy: EndpointPolicy = LOCAL, transport: bool = True) -> PolicySession:
    s = new_session(policy)
    assert isinstance(s, PolicySession) and s.transport is not None
    if not transport:
        s.transport = None
    return s


def _outcome(s: PolicySession, method: str, url: str, **kwargs: Any) -> tuple[Any, ...]:
    """What a caller can see of one call: the answer, or the exception's kind (with what it wraps)."""
    kwargs.setdefault("timeout", (5, 30))
    try:
        r = s.request(method, url, **kwargs)
    except (requests.RequestException, ProviderError, OSError) as e:
        inner = e.args[0] if e.args else None
        reason = getattr(inner, "reason", None)
        return (
            "error",
            type(e),
            type(inner),
            type(reason),
            _never_connected(e) if isinstance(e, requests.RequestException) else None,
        )
    return (
        "answer",
        r.status_code,
        r.reason,
        list(r.headers.items()),
        r.content,
        r.encoding,
        r.text,
        r.url,
        r.history,
        r.ok,
    )


def _both(path: str, method: str = "GET", **kwargs: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    outcomes = []
    for transport in (True, False):
        s = _session(transport=transport)
        url = kwargs.pop("url", None) or f"http://127.0.0.1:{kwargs.pop('port')}{path}"
        outcomes.append(_outcome(s, method, url, **kwargs))
        kwargs["url"] = url
    return outcomes[0], outcomes[1]


BROKEN = ("/hang-up", "/garbage", "/truncated")
NOT_FOR_HEAD = ("/chunked", "/http10")  # an answer to HEAD carries no body: these are not valid for it


@pytest.mark.parametrize(
    ("path", "method"),
    [
        (p, m)
        for p in ANSWERS
        if p not in BROKEN
        for m in ("GET", "POST", "DELETE", "HEAD")
        if not (m == "HEAD" and p in NOT_FOR_HEAD)
    ],
)
def test_an_answer_reads_the_same_both_ways(raw: RawServer, path: str, method: str) -> None:
    kwargs: dict[str, Any] = {"json": {"ref": "main"}} if method == "POST" else {}
    mine, theirs = _both(path, method, port=raw.port, **kwargs)
    assert mine == theirs
    if path == "/repeated":
        headers = dict(mine[3])
        assert headers["Set-Cookie"] == "a=1; Path=/, b=2; Path=/" and headers["X-Dup"] == "one, two"
    if path in ("/gzip", "/deflate") and method != "HEAD":
        assert mine[4] == BODY  # decoded


@pytest.mark.parametrize("path", ["/hang-up", "/garbage", "/truncated", "/bad-gzip"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_broken_answer_fails_the_same_both_ways(raw: RawServer, path: str, method: str) -> None:
    mine, theirs = _both(path, method, port=raw.port)
    assert mine[0] == "error" and mine == theirs
    expected = {
        "/hang-up": requests.ConnectionError,  # RemoteDisconnected: "Connection aborted."
        "/garbage": requests.ConnectionError,  # BadStatusLine
        "/truncated": requests.exceptions.ChunkedEncodingError,  # IncompleteRead
        "/bad-gzip": requests.exceptions.ContentDecodingError,
    }[path]
    assert mine[1] is expected
    assert mine[4] is False  # it was sent: ACK must not take the create as never made


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_refused_connection_fails_the_same_both_ways() -> None:
    mine, theirs = _both("/x", "POST", port=_closed_port(), json={"a": 1})
    assert mine == theirs
    assert mine[1:] == (
        requests.ConnectionError,
        urllib3.exceptions.MaxRetryError,
        urllib3.exceptions.NewConnectionError,
        True,
    )


def test_a_connect_timeout_fails_the_same_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    def timeout(*_: Any, **__: Any) -> socket.socket:
        raise TimeoutError("timed out")

    monkeypatch.setattr(connection, "create_connection", timeout)
    mine, theirs = _both("/x", "POST", port=9, json={"a": 1})
    assert mine == theirs
    assert mine[1] is requests.ConnectTimeout and mine[4] is True


def test_a_name_that_does_not_resolve_fails_the_same_both_ways() -> None:
    def nowhere(*_: Any, **__: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    outcomes = []
    for transport in (True, False):
        s = _session(EndpointPolicy.parse(["http://*.tenant.test"], resolver=nowhere), transport)
        outcomes.append(_outcome(s, "GET", "http://gitlab.tenant.test/api/v4/user"))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1:4] == (
        requests.ConnectionError,
        urllib3.exceptions.MaxRetryError,
        urllib3.exceptions.NameResolutionError,
    )


def test_a_slow_answer_is_a_read_timeout_both_ways(raw: RawServer) -> None:
    outcomes = []
    for transport in (True, False):
        s = _session(transport=transport)
        outcomes.append(_outcome(s, "GET", f"http://127.0.0.1:{raw.port}/slow", timeout=(5, 0.2)))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1:3] == (requests.ReadTimeout, urllib3.exceptions.ReadTimeoutError)


def test_a_refused_endpoint_opens_no_connection(raw: RawServer, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Any] = []
    real = connection.create_connection

    def recording(*a: Any, **k: Any) -> socket.socket:
        opened.append(a)
        return real(*a, **k)

    monkeypatch.setattr(connection, "create_connection", recording)
    s = _session(EndpointPolicy())  # plain http and loopback refused
    with pytest.raises(ProviderError) as e:
        s.request("POST", f"http://127.0.0.1:{raw.port}/plain", json={"a": 1}, timeout=(5, 30))
    assert e.value.code == "EndpointNotAllowed"
    assert opened == [] and raw.requests == []


def test_a_name_goes_to_the_address_the_policy_checked(raw: RawServer) -> None:
    dns = {"both.tenant.test": ["10.0.0.7", "127.0.0.1"]}

    def resolve(host: str, port: int, *_: Any, **__: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in dns[host]]

    s = _session(EndpointPolicy.parse(["http://127.0.0.1"], resolver=resolve))
    r = s.request("GET", f"http://both.tenant.test:{raw.port}/plain", timeout=(5, 30))
    assert r.status_code == 200 and len(raw.requests) == 1


def test_connections_are_kept_alive_and_an_idle_one_the_server_closed_is_not_reused(raw: RawServer) -> None:
    s = _session()
    for _ in range(5):
        assert s.request("GET", f"http://127.0.0.1:{raw.port}/plain", timeout=(5, 30)).status_code == 200
    assert raw.connections == 1 and len({port for _, port in raw.requests}) == 1
    s.request("GET", f"http://127.0.0.1:{raw.port}/drop-after", timeout=(5, 30))
    deadline = time.monotonic() + 10
    while raw.closed < 1 and time.monotonic() < deadline:  # the server has closed it
        time.sleep(0.01)
    assert (
        s.request("POST", f"http://127.0.0.1:{raw.port}/plain", json={}, timeout=(5, 30)).status_code == 200
    )
    assert raw.connections == 2
    s.request("GET", f"http://127.0.0.1:{raw.port}/close", timeout=(5, 30))  # Connection: close
    s.request("GET", f"http://127.0.0.1:{raw.port}/plain", timeout=(5, 30))
    assert raw.connections == 3


def test_threads_share_the_connections(raw: RawServer) -> None:
    s = _session()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(30):
                r = s.request("POST", f"http://127.0.0.1:{raw.port}/plain", json={"i": i}, timeout=(5, 30))
                assert r.json()["id"] == 7
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(raw.requests) == 240
    assert raw.connections <= 8


# -- TLS: the same verdicts as requests' adapter --------------------------------------------------


def _server_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(TLS / "server.pem", TLS / "server-key.pem")
    return ctx


@pytest.fixture
def tls_raw() -> Iterator[RawServer]:
    yield from _start(_server_tls())


def _to_loopback(host: str, port: int, *_: Any, **__: Any) -> list[tuple[Any, ...]]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


@pytest.mark.parametrize(
    ("host", "bundle", "ok"),
    [
        ("127.0.0.1", "ca.pem", True),  # the IP is in the certificate
        ("kubernetes.test", "ca.pem", True),  # a name in the certificate
        ("localhost", "ca.pem", True),
        ("gitlab.tenant.test", "ca.pem", False),  # a name the certificate does not carry
        ("127.0.0.1", "other-ca.pem", False),  # signed by another CA
        ("127.0.0.1", None, False),  # certifi's bundle does not trust the test CA
        ("127.0.0.1", "missing.pem", False),  # requests: no such CA bundle
        ("kubernetes.test", "a folder", True),  # a folder of CA certificates (OpenSSL's hashed names)
    ],
)
def test_tls_verdicts_are_the_same_both_ways(
    tls_raw: RawServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    host: str,
    bundle: str | None,
    ok: bool,
) -> None:
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    if bundle is None:
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    elif bundle == "a folder":
        # `openssl x509 -hash -noout -in tls/ca.pem` is 01c05a7c: OpenSSL looks the CA up by that name.
        (tmp_path / "01c05a7c.0").write_bytes((TLS / "ca.pem").read_bytes())
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path))
    else:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(TLS / bundle))
    policy = EndpointPolicy.parse(["https://127.0.0.1"], resolver=_to_loopback)
    outcomes = []
    for transport in (True, False):
        s = _session(policy, transport)
        url = f"https://{host}:{tls_raw.port}/gzip"
        outcomes.append(_outcome(s, "GET", url))
    assert outcomes[0] == outcomes[1]
    if ok:
        assert outcomes[0][:2] == ("answer", 200) and outcomes[0][4] == BODY
    else:
        assert outcomes[0][0] == "error"
        assert outcomes[0][1] in (requests.exceptions.SSLError, OSError)


def test_the_transport_is_what_a_provider_session_sends_with(
    raw: RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider clients' calls go through the transport, not the adapter."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    s = _session()
    adapter = s.get_adapter("http://127.0.0.1/")
    monkeypatch.setattr(adapter, "send", lambda *a, **k: pytest.fail("the adapter sent"))
    sent: list[Any] = []
    real = Transport.send

    def recording(self: Transport, *a: Any) -> Any:
        sent.append(a[1:])
        return real(self, *a)

    monkeypatch.setattr(Transport, "send", recording)
    s.request(
        "POST",
        f"http://127.0.0.1:{raw.port}/plain",
        json={"a": 1},
        headers={"PRIVATE-TOKEN": "t"},
        timeout=(5, 30),
    )
    assert sent == [((5, 30), True)]


def test_closing_the_session_closes_the_transports_connections(raw: RawServer) -> None:
    s = _session()
    s.request("GET", f"http://127.0.0.1:{raw.port}/plain", timeout=(5, 30))
    s.close()
    deadline = time.monotonic() + 10
    while raw.closed < 1 and time.monotonic() < deadline:  # the server saw the connection end
        time.sleep(0.01)
    assert raw.closed == 1


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


@pytest.mark.parametrize(
    ("method", "body"), [("POST", b'{"description":"d"}'), ("GET", None), ("DELETE", b"")]
)
def test_a_request_goes_in_one_write_with_the_bytes_urllib3_would_send(
    method: str, body: bytes | None
) -> None:
    """The head and the body in one write (http.client writes them apart: two segments with
    TCP_NODELAY); the bytes are those of the two writes together."""
    from cloudtriggers.providers.transport import _Origin

    prepared = requests.Request(
        method, "http://127.0.0.1:8080/api/v4/projects/1/triggers", data=body, headers={"PRIVATE-TOKEN": "t"}
    ).prepare()
    conn = _Origin(LOCAL, "http", "127.0.0.1", 8080, True).new_connection()
    ours = _Recorder()
    conn.sock = ours
    Transport._write(conn, prepared)
    plain = http.client.HTTPConnection("127.0.0.1", 8080)
    theirs = _Recorder()
    plain.sock = theirs
    Transport._write(plain, prepared)
    assert len(ours.writes) == 1
    assert len(theirs.writes) == (2 if body else 1)
    assert ours.writes[0] == b"".join(theirs.writes)
