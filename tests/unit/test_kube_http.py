"""kube_http.Connections: the reconciler's requests to the API server without urllib3's per-call cost.

What matters is that a kubeconfig means the same through these connections as through the official
client's urllib3 pool: each TLS case below is sent both ways and must be accepted or refused alike.
The certificates in tls/ are made for these tests only (a CA, a server certificate for 127.0.0.1,
localhost and kubernetes.test, a client certificate, and a second CA that signed neither).
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import urllib3
from kubernetes import client as k8s
from kubernetes.client.rest import RESTClientObject

from cloudtriggers.kube import KubeClient
from cloudtriggers.kube_http import Connections, Heads

TLS = Path(__file__).parent / "tls"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as kube-apiserver

    def log_message(self, *_: Any) -> None:
        pass

    def _answer(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        # getpeercert()'s subject: relative distinguished names, each a tuple of (key, value) pairs.
        rdns = cast(tuple[tuple[tuple[str, str], ...], ...], peer["subject"]) if peer else ()
        subject = dict(x[0] for x in rdns)
        server.seen.append((self.command, self.path, self.client_address[1]))
        payload = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "body": body.decode(),
                "client": subject.get("commonName"),
            }
        ).encode()
        if server.mode == "chunked":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(payload), 7):
                part = payload[i : i + 7]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if server.mode == "close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        if server.mode == "drop":
            self.close_connection = True  # closed without saying so: an idle timeout's effect

    do_GET = do_POST = do_PATCH = _answer


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None, mode: str = "") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[str, str, int]] = []
        self.mode = mode
        if context is not None:
            self.socket = context.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def _serve(context: ssl.SSLContext | None = None, mode: str = "") -> Iterator[_Server]:
    server = _Server(context, mode)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _server_tls(require_client: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(TLS / "server.pem", TLS / "server-key.pem")
    ctx.load_verify_locations(TLS / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
    return ctx


@pytest.fixture
def tls_server() -> Iterator[_Server]:
    yield from _serve(_server_tls(require_client=False))


@pytest.fixture
def mtls_server() -> Iterator[_Server]:
    yield from _serve(_server_tls(require_client=True))


def _config(host: str, **settings: Any) -> k8s.Configuration:
    config = k8s.Configuration(host=host)
    for key, value in settings.items():
        setattr(config, key, value)
    return config


def _both_ways(config: k8s.Configuration, path: str = "/api") -> tuple[Any, Any]:
    """What urllib3 (the official client's pool) and Connections each make of one GET: the decoded
    answer, or the name of the error."""
    manager = RESTClientObject(config).pool_manager
    outcomes: list[Any] = []
    try:
        resp = manager.request("GET", config.host + path, retries=False, timeout=5)
        outcomes.append(json.loads(resp.data))
    except urllib3.exceptions.HTTPError as e:
        outcomes.append(type(e).__name__)
    conns = Connections.of(manager, config.host, 4)
    assert conns is not None
    try:
        outcomes.append(json.loads(conns.request("GET", path, None, {})[1]))
    except urllib3.exceptions.HTTPError as e:
        outcomes.append(type(e).__name__)
    finally:
        conns.close()
    return outcomes[0], outcomes[1]


def test_the_kubeconfigs_ca_and_client_certificate_are_used_as_urllib3_uses_them(
    mtls_server: _Server,
) -> None:
    config = _config(
        f"https://127.0.0.1:{mtls_server.port}",
        ssl_ca_cert=str(TLS / "ca.pem"),
        cert_file=str(TLS / "client.pem"),
        key_file=str(TLS / "client-key.pem"),
    )
    theirs, ours = _both_ways(config)
    assert ours == theirs and ours["client"] == "cloudtriggers-test"


@pytest.mark.parametrize(
    ("case", "host", "settings", "accepted"),
    [
        ("the CA that signed it", "127.0.0.1", {"ssl_ca_cert": "ca.pem"}, True),
        ("the CA given inline", "127.0.0.1", {"ca_cert_data": "ca.pem"}, True),
        ("a CA that did not sign it", "127.0.0.1", {"ssl_ca_cert": "other-ca.pem"}, False),
        ("no CA: the system's, which do not know it", "127.0.0.1", {}, False),
        ("verification off", "127.0.0.1", {"ssl_ca_cert": "other-ca.pem", "verify_ssl": False}, True),
        ("a name the certificate has", "localhost", {"ssl_ca_cert": "ca.pem"}, True),
        (
            "tls-server-name it has",
            "127.0.0.1",
            {"ssl_ca_cert": "ca.pem", "tls_server_name": "kubernetes.test"},
            True,
        ),
        (
            "tls-server-name it lacks",
            "127.0.0.1",
            {"ssl_ca_cert": "ca.pem", "tls_server_name": "other.test"},
            False,
        ),
        (
            "hostname check off",
            "127.0.0.1",
            {"ssl_ca_cert": "ca.pem", "tls_server_name": "other.test", "assert_hostname": False},
            True,
        ),
    ],
)
def test_a_tls_setting_is_accepted_or_refused_as_urllib3_does(
    tls_server: _Server, case: str, host: str, settings: dict[str, Any], accepted: bool
) -> None:
    for key in ("ssl_ca_cert",):
        if key in settings:
            settings[key] = str(TLS / settings[key])
    if "ca_cert_data" in settings:
        settings["ca_cert_data"] = (TLS / settings["ca_cert_data"]).read_text()
    theirs, ours = _both_ways(_config(f"https://{host}:{tls_server.port}", **settings))
    assert (isinstance(ours, dict), isinstance(theirs, dict)) == (accepted, accepted), (case, ours, theirs)
    if not accepted:
        assert ours == "ProtocolError"


def test_a_server_that_asks_for_a_client_certificate_refuses_a_client_without_one(
    mtls_server: _Server,
) -> None:
    theirs, ours = _both_ways(
        _config(f"https://127.0.0.1:{mtls_server.port}", ssl_ca_cert=str(TLS / "ca.pem"))
    )
    assert isinstance(theirs, str) and ours == "ProtocolError"


def test_behind_a_proxy_urllib3_stays() -> None:
    config = _config("https://k8s.example:6443", proxy="http://proxy.example:3128")
    kube = KubeClient(k8s.ApiClient(config))
    assert kube.connections is None and isinstance(kube.pool, urllib3.ProxyManager)
    plain = KubeClient(k8s.ApiClient(_config("https://k8s.example:6443")))
    assert plain.connections is not None


def test_a_string_assert_hostname_keeps_urllib3() -> None:
    """A name to check other than the one sent is urllib3's own matching; it is not copied."""
    config = _config("https://k8s.example:6443", assert_hostname="kubernetes.test")
    assert KubeClient(k8s.ApiClient(config)).connections is None


def test_one_connection_is_kept_alive_and_reused() -> None:
    for server in _serve():
        conns = Connections(f"http://127.0.0.1:{server.port}")
        for i in range(5):
            status, data, _ = conns.request(
                "POST", f"/x/{i}", b'{"a":1}', {"Content-Type": "application/json"}
            )
            assert status == 200 and json.loads(data)["body"] == '{"a":1}'
        assert len({port for _, _, port in server.seen}) == 1


def test_a_connection_the_server_dropped_while_idle_is_not_reused() -> None:
    """Without this check the next request on it fails (urllib3 makes the same check before reuse)."""
    for server in _serve(mode="drop"):
        conns = Connections(f"http://127.0.0.1:{server.port}")
        for _ in range(3):
            assert conns.request("GET", "/x", None, {})[0] == 200
            time.sleep(0.05)  # the server's close arrives
        assert len({port for _, _, port in server.seen}) == 3


def test_connection_close_is_honoured() -> None:
    for server in _serve(mode="close"):
        conns = Connections(f"http://127.0.0.1:{server.port}")
        assert conns.request("GET", "/x", None, {})[0] == 200
        assert conns._idle == []


def test_a_chunked_answer_is_read_whole() -> None:
    """kube-apiserver sends large answers chunked."""
    for server in _serve(mode="chunked"):
        conns = Connections(f"http://127.0.0.1:{server.port}/prefix/")
        status, data, _ = conns.request("GET", "/api/v1/x", None, {})
        assert status == 200 and json.loads(data)["path"] == "/prefix/api/v1/x"


def test_no_answer_is_a_urllib3_error_as_before() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once it is closed
    conns = Connections(f"http://127.0.0.1:{port}")
    with pytest.raises(urllib3.exceptions.HTTPError):
        conns.request("GET", "/x", None, {})


def test_at_most_maxsize_connections_are_kept_idle() -> None:
    for server in _serve():
        conns = Connections(f"http://127.0.0.1:{server.port}", maxsize=2)
        taken = [conns.take() for _ in range(4)]
        for conn in taken:
            conns.give_back(conn)
        assert len(conns._idle) == 2
        assert server.seen == []  # taking a connection sends nothing


class _Recorder:
    """A socket that keeps what is written to it, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def _http_client_bytes(
    host: str, port: int, tls: bool, method: str, target: str, headers: dict[str, str], body: bytes | None
) -> bytes:
    """What http.client's own request() writes for these (its head and body, however many writes)."""
    cls = http.client.HTTPSConnection if tls else http.client.HTTPConnection
    conn = cls(host, port)
    sock = _Recorder()
    conn.sock = sock
    conn.request(method, target, body=body, headers=headers)
    return b"".join(sock.writes)


@pytest.mark.parametrize(
    ("host", "port", "tls"),
    [
        ("127.0.0.1", 6443, True),
        ("kubernetes.test", 443, True),
        ("10.0.0.1", 80, False),
        ("::1", 8080, False),
    ],
)
@pytest.mark.parametrize(
    ("method", "body"),
    [("GET", None), ("DELETE", None), ("POST", b'{"a":1}'), ("PATCH", b"[]"), ("PUT", None), ("POST", b"")],
)
def test_a_request_head_is_the_bytes_http_client_writes(
    host: str, port: int, tls: bool, method: str, body: bytes | None
) -> None:
    """Heads (the request's head without putheader's cost per header) writes what http.client would,
    byte for byte: the request line, Host (the port only when not the scheme's), Accept-Encoding,
    Content-Length (0 for a bodiless POST, PATCH or PUT), then the headers in their order."""
    heads = Heads(host, port, 443 if tls else 80)
    headers = {"Accept": "application/json", "User-Agent": "cloudtriggers/x", "Authorization": "Bearer abc"}
    if body is not None:
        headers["Content-Type"] = "application/merge-patch+json"
    target = "/apis/cloudtriggers.io/v1alpha1/namespaces/apps/triggers/web%2Dhook?fieldManager=x"
    expected = _http_client_bytes(host, port, tls, method, target, headers, body)
    for _ in range(2):  # the second time from the lines it kept
        assert heads.head(method, target, headers, body) + (body or b"") == expected


def test_a_request_head_refuses_what_http_client_refuses() -> None:
    heads = Heads("127.0.0.1", 6443, 443)
    with pytest.raises(http.client.InvalidURL):
        heads.head("GET", "/api/v1/x y", {}, None)
    with pytest.raises(ValueError, match="method"):
        heads.head("GE\nT", "/x", {}, None)
    with pytest.raises(ValueError, match="header value") as refused:
        heads.head("GET", "/x", {"Authorization": "Bearer a\r\nX-Injected: 1"}, None)
    assert "Bearer" not in str(refused.value)  # the token is never in the message
    with pytest.raises(ValueError, match="header name"):
        heads.head("GET", "/x", {"Bad:Name": "v"}, None)
    with pytest.raises(ValueError, match="connection's to write"):  # never written twice
        heads.head("GET", "/x", {"host": "elsewhere"}, None)


class _Counting:
    """A connected socket whose writes are kept as they go out."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.writes: list[bytes] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.real.sendall(data)


def test_a_request_and_its_body_go_in_one_write() -> None:
    """One sendall a request: http.client writes the head and the body apart, two segments with
    TCP_NODELAY, one more system call and (in the operator) one more release of the GIL."""
    for server in _serve():
        conns = Connections(f"http://127.0.0.1:{server.port}")
        conn = conns.new_connection()
        conn.connect()
        assert conn.sock is not None
        counting = _Counting(conn.sock)
        conn.sock = counting
        conns.give_back(conn)  # the idle connection the request takes
        status, data, _ = conns.request("PATCH", "/x", b'{"b":2}', {"Content-Type": "application/json"})
        assert status == 200 and json.loads(data)["body"] == '{"b":2}'
        assert len(counting.writes) == 1 and counting.writes[0].endswith(b'\r\n\r\n{"b":2}')
