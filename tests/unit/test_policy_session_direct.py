"""PolicySession's direct path (providers/base.py): a request it prepares itself and hands to the
adapter must be the request requests' own Session.request would send, byte for byte, with the same
exceptions; anything it does not handle goes through requests unchanged; and no cookie is kept."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
import urllib3

from cloudtriggers.providers.ack import _never_connected
from cloudtriggers.providers.base import ErrorClass, PolicySession, ProviderError, new_session
from cloudtriggers.providers.endpoints import EndpointPolicy

LOCAL = EndpointPolicy.parse(allowed=["http://127.0.0.1"])


# -- a server that records what reaches it ---------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    line: str  # the request line as sent
    headers: list[tuple[str, str]]  # as sent: order, spelling and values
    body: bytes


@dataclass
class Recorder:
    port: int = 0
    seen: list[Seen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(rec: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as provider APIs answer
        disable_nagle_algorithm = True  # headers and body are two writes

        def _any(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            rec.seen.append(Seen(self.requestline, list(self.headers.items()), body))
            path = self.path.split("?", 1)[0]
            if path == "/slow":
                time.sleep(1.0)
            status, extra = 200, []
            if path == "/redirect":
                status, extra = 302, [("Location", "http://127.0.0.1:1/elsewhere")]
            elif path == "/cookie":
                extra = [("Set-Cookie", "sid=account-a-secret; Path=/")]
            answer = json.dumps({"ok": True}).encode()
            try:
                self.send_response(status)
                for k, v in extra:
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # the client gave up (read timeout)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[Recorder]:
    rec = Recorder()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rec))
    httpd.daemon_threads = True
    rec.port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield rec
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def session() -> PolicySession:
    s = new_session(LOCAL)
    assert isinstance(s, PolicySession)
    return s


@dataclass
class Paths:
    # What each send of the direct path was given: the transport's (timeout, verify), or the
    # adapter's keyword arguments.
    direct: list[Any] = field(default_factory=list)
    fallback: int = 0  # calls of requests' own Session.request
    adapter: list[dict[str, Any]] = field(default_factory=list)  # kwargs of each adapter send


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch, session: PolicySession) -> Paths:
    """Which way each request of `session` went: the direct path sends with the transport (or the
    adapter when the session has none), requests' Session.request is the fallback (and sends with
    the adapter)."""
    got = Paths()
    real_request = requests.Session.request
    adapter = session.get_adapter("http://127.0.0.1/")
    real_send = adapter.send
    assert session.transport is not None
    real_transport_send = session.transport.send
    falling_back = False

    def request(self: requests.Session, *args: Any, **kwargs: Any) -> requests.Response:
        nonlocal falling_back
        got.fallback += 1
        falling_back = True
        try:
            return real_request(self, *args, **kwargs)
        finally:
            falling_back = False

    def send(p: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        got.adapter.append(kwargs)
        if not falling_back:
            got.direct.append(kwargs)
        return real_send(p, **kwargs)

    def transport_send(p: requests.PreparedRequest, timeout: Any, verify: Any) -> requests.Response:
        got.direct.append((timeout, verify))
        return real_transport_send(p, timeout, verify)

    monkeypatch.setattr(requests.Session, "request", request)
    monkeypatch.setattr(adapter, "send", send)
    monkeypatch.setattr(session.transport, "send", transport_send)
    return got


def _via_requests(s: PolicySession, prepare: Callable[[], Any]) -> Any:
    """Call `prepare` with the session forced onto requests' own path."""
    s.direct = False
    try:
        return prepare()
    finally:
        s.direct = True


# -- preparation -------------------------------------------------------------------------------------

URLS = [
    "http://127.0.0.1:8080/api/v4/projects/group%2Fweb/triggers",
    "http://127.0.0.1/api/v4/projects/%24weird/x?per_page=100&page=2",
    "http://EXAMPLE.com:8443/a/B/../c?x=1&y=%2F&z=a+b",
    "https://example.com",  # no path
    "https://example.com?only=query",
    "http://[::1]:9000/v2/manage/namespaces/ns/repos/r/triggers",
    "http://[2001:DB8::1]/x",
    "https://registry.例え.jp/グループ/ü?q=ä ö",  # IDNA host, unicode path and query
    "https://example.com/a b/%zz/%7e?x=<>#frag",
    "  https://example.com/leading-space",
]
HEADERS: list[dict[str, Any] | None] = [
    None,
    {},
    {"PRIVATE-TOKEN": "glpat-x", "Accept": "application/json"},
    {"user-agent": "other/1.0", "accept": "application/json"},  # override in another spelling
    {"USER-AGENT": None, "Connection": None},  # None removes a session header
    {"Accept-Encoding": None, "X-New": "1", "accept-encoding": "gzip"},  # last spelling wins
    {"host": "example.com:443", "x-acs-action": "CreateTrigger", "content-type": "application/json"},
    {"Content-Length": "999", "Content-Type": "text/plain"},  # requests overrides the length
    {"X-Bytes": b"raw-value", "Authorization": "SDK-HMAC-SHA256 Access=ak"},
]
BODIES: list[tuple[Any, Any]] = [  # (data, json)
    (None, None),
    ("", None),
    (b"", None),
    ("plain text ü", None),
    (b"\x00\xff binary", None),
    (None, {"description": "Deploy ü ☃", "ref": "main", "n": [1, 2.5, None, True]}),
    (None, {}),
    (None, []),
    ("", {"description": "json wins over empty data"}),
    (b"data wins", {"description": "ignored"}),
]
METHODS = ["GET", "POST", "PUT", "DELETE", "patch"]


def _cases() -> list[tuple[str, str, Any, Any, Any]]:
    cases: list[tuple[str, str, Any, Any, Any]] = [(m, u, None, None, None) for m in METHODS for u in URLS]
    cases += [(m, URLS[0], h, None, None) for m in METHODS for h in HEADERS]
    cases += [(m, URLS[1], h, d, j) for m in METHODS for h in HEADERS[:4] + HEADERS[6:8] for d, j in BODIES]
    return cases


def _by_requests(s: PolicySession, method: str, url: str | bytes, headers: Any, data: Any, js: Any) -> Any:
    """What Session.request prepares for these arguments."""
    if isinstance(url, bytes):
        url = url.decode()
    req = requests.Request(
        method=method.upper(), url=url, headers=headers, data=data or {}, json=js, params={}
    )
    return s.prepare_request(req)


@pytest.mark.parametrize(("method", "url", "headers", "data", "js"), _cases())
def test_prepared_like_requests(
    session: PolicySession, method: str, url: str, headers: Any, data: Any, js: Any
) -> None:
    mine = session._prepare_direct(method, url, headers, data, js)
    theirs = _by_requests(session, method, url, headers, data, js)
    assert mine is not None
    assert (mine.method, mine.url) == (theirs.method, theirs.url)
    assert list(mine.headers.items()) == list(theirs.headers.items())  # keys, spelling, order, values
    assert mine.body == theirs.body and type(mine.body) is type(theirs.body)
    assert mine.hooks == theirs.hooks == {"response": []}
    assert "Cookie" not in mine.headers


def test_prepared_like_requests_with_bytes_url_and_changed_session_headers(session: PolicySession) -> None:
    session.headers["X-Session"] = "s"
    session.headers["Accept"] = None  # type: ignore[assignment]  # a None session header is dropped
    url = b"http://127.0.0.1:8080/api/v4/projects"
    mine = session._prepare_direct("get", url, {"x-session": "call"}, None, None)
    theirs = _by_requests(session, "get", url, {"x-session": "call"}, None, None)
    assert mine is not None
    assert (mine.method, mine.url, list(mine.headers.items())) == (
        theirs.method,
        theirs.url,
        list(theirs.headers.items()),
    )


@pytest.mark.parametrize(
    ("url", "headers", "js", "error"),
    [
        ("http://", None, None, requests.exceptions.InvalidURL),
        ("example.com/x", None, None, requests.exceptions.MissingSchema),
        ("https://*.example.com/", None, None, requests.exceptions.InvalidURL),
        ("http://127.0.0.1/", {"X-Bad": "a\r\nb"}, None, requests.exceptions.InvalidHeader),
        ("http://127.0.0.1/", {" X-Bad": "a"}, None, requests.exceptions.InvalidHeader),
        ("http://127.0.0.1/", {"X-Int": 5}, None, requests.exceptions.InvalidHeader),
        ("http://127.0.0.1/", None, {"x": float("nan")}, requests.exceptions.InvalidJSONError),
    ],
)
def test_invalid_input_raises_what_requests_raises(
    session: PolicySession, url: str, headers: Any, js: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        _by_requests(session, "POST", url, headers, None, js)
    with pytest.raises(error):
        session.request("POST", url, headers=headers, json=js, timeout=(1, 1))


# -- on the wire ---------------------------------------------------------------------------------------

WIRE: list[tuple[str, str, dict[str, Any]]] = [
    (
        "GET",
        "/api/v4/projects/group%2Fweb",
        {"headers": {"PRIVATE-TOKEN": "t", "Accept": "application/json"}},
    ),
    ("GET", "/x/%24y/ü?q=a b&r=%2F", {}),
    ("POST", "/api/v4/projects/7/triggers", {"json": {"description": "Deploy ü ☃"}, "headers": {"A": "1"}}),
    ("POST", "/empty", {"data": None}),
    ("POST", "/empty-bytes", {"data": b""}),
    ("PUT", "/text", {"data": "text ü", "headers": {"content-type": "text/plain; charset=utf-8"}}),
    ("PATCH", "/bin", {"data": b"\x00\x01\xfe"}),
    ("DELETE", "/api/v4/projects/7/triggers/3", {"headers": {"user-agent": "other/1", "Connection": None}}),
    ("GET", "/ack", {"headers": {"host": "cs.example.com", "x-acs-action": "DescribeTrigger"}}),
    ("GET", "/no-agent", {"headers": {"User-Agent": None}}),  # urllib3 then sends its own
    ("POST", "/no-encoding", {"headers": {"Accept-Encoding": None}, "data": b"x"}),  # http.client: identity
    ("GET", "//double/slash?x=%zz", {}),
]


def test_direct_and_requests_send_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch, server: Recorder, session: PolicySession, paths: Paths
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)

    def send_all() -> list[requests.Response]:
        return [
            session.request(m, server.url + path, timeout=(5, 30), allow_redirects=False, **kw)
            for m, path, kw in WIRE
        ]

    n = len(WIRE)
    direct = send_all()  # prepared here, sent by the transport
    assert paths.fallback == 0 and paths.direct == [((5, 30), True)] * n and paths.adapter == []
    transport = session.transport
    session.transport = None
    try:
        via_adapter = send_all()  # prepared here, sent by the adapter
    finally:
        session.transport = transport
    assert paths.fallback == 0 and len(paths.direct) == 2 * n
    fallback = _via_requests(session, send_all)  # requests' own path
    assert paths.fallback == n and len(paths.direct) == 2 * n and len(paths.adapter) == 2 * n

    assert server.seen[:n] == server.seen[n : 2 * n] == server.seen[2 * n :]
    assert all(s.line.endswith("HTTP/1.1") for s in server.seen)
    # The adapter got the same arguments from the direct path as from requests.
    assert paths.adapter[:n] == paths.adapter[n:]
    assert paths.adapter[0] == {
        "stream": False,
        "timeout": (5, 30),
        "verify": True,
        "cert": None,
        "proxies": {},
    }
    for a, b, c in zip(direct, via_adapter, fallback, strict=True):
        assert (a.status_code, a.url, a.content, a.history) == (c.status_code, c.url, c.content, c.history)
        assert (b.status_code, b.url, b.content, b.history) == (c.status_code, c.url, c.content, c.history)
        assert _undated(a.headers) == _undated(c.headers)
        assert a.json() == {"ok": True}
        assert a.elapsed.total_seconds() > 0 and b.elapsed.total_seconds() > 0  # the metrics hook reads it
        assert a.request.url == b.request.url == c.request.url
        assert list(a.request.headers.items()) == list(c.request.headers.items())


def _undated(headers: Any) -> list[tuple[str, str]]:
    """The answer's headers but Date (the two requests may be answered a second apart)."""
    return [(k, v) for k, v in headers.items() if k.lower() != "date"]


def test_the_environments_ca_bundle_is_used(
    monkeypatch: pytest.MonkeyPatch, server: Recorder, session: PolicySession, paths: Paths
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/some-bundle.pem")
    session.request("GET", server.url + "/", timeout=(5, 30))
    session.direct = False
    session.request("GET", server.url + "/", timeout=(5, 30))
    assert paths.fallback == 1
    assert paths.direct == [((5, 30), "/etc/ssl/certs/some-bundle.pem")]
    assert [kw["verify"] for kw in paths.adapter] == ["/etc/ssl/certs/some-bundle.pem"]


# -- which path is taken -----------------------------------------------------------------------------


def test_the_providers_calls_take_the_direct_path(
    server: Recorder, session: PolicySession, paths: Paths
) -> None:
    hdr = {"PRIVATE-TOKEN": "t", "Accept": "application/json"}
    session.request("GET", server.url + "/p", headers=hdr, timeout=(5, 30), allow_redirects=False)
    session.request(
        "POST", server.url + "/p", headers=hdr, timeout=(5, 30), allow_redirects=False, json={"a": 1}
    )
    session.request(b"PUT", (server.url + "/p").encode(), headers=hdr, timeout=(5, 30), data=b"x")
    session.request("DELETE", server.url + "/p", headers=hdr, timeout=(5, 30), data="")
    assert paths.fallback == 0 and len(paths.direct) == 4
    assert [s.line.split()[0] for s in server.seen] == ["GET", "POST", "PUT", "DELETE"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"params": {"page": "2"}},
        {"params": {}},
        {"data": {"form": "field"}},
        {"data": [("form", "field")]},
        {"files": {"f": ("f.txt", b"content")}},
        {"auth": ("user", "password")},
        {"cookies": {"c": "1"}},
        {"proxies": {}},
        {"verify": False},
        {"cert": None},
        {"stream": True},
        {"hooks": {"response": []}},
        {"headers": {b"X-Bytes-Name": "1"}},
    ],
    ids=lambda kw: next(iter(kw)),
)
def test_other_arguments_go_through_requests(
    server: Recorder, session: PolicySession, paths: Paths, kwargs: dict[str, Any]
) -> None:
    resp = session.request("POST", server.url + "/f", timeout=(5, 30), **kwargs)
    assert resp.status_code == 200
    assert paths.fallback == 1


def test_a_positional_argument_goes_through_requests(
    server: Recorder, session: PolicySession, paths: Paths
) -> None:
    session.request("GET", server.url + "/f", {"page": "2"}, timeout=(5, 30))  # params
    assert paths.fallback == 1
    assert server.seen[0].line == "GET /f?page=2 HTTP/1.1"


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.hooks["response"].append(lambda r, *a, **k: r),
        lambda s: s.params.update({"p": "1"}),
        lambda s: setattr(s, "verify", False),
        lambda s: setattr(s, "trust_env", False),
        lambda s: setattr(s, "stream", True),
        lambda s: setattr(s, "auth", ("user", "password")),
        lambda s: s.cookies.set("put", "by-code"),
        lambda s: setattr(s, "direct", False),
    ],
    ids=["hook", "params", "verify", "trust_env", "stream", "auth", "cookie", "flag"],
)
def test_session_settings_go_through_requests(
    server: Recorder, session: PolicySession, paths: Paths, change: Callable[[PolicySession], None]
) -> None:
    change(session)
    session.request("GET", server.url + "/s", timeout=(5, 30))
    assert paths.fallback == 1


def test_session_proxies_and_cert_go_through_requests(session: PolicySession, paths: Paths) -> None:
    for attr, value in (("proxies", {"http": "http://127.0.0.1:9"}), ("cert", "/no/such/cert.pem")):
        s = new_session(LOCAL)
        setattr(s, attr, value)
        calls = paths.fallback
        with pytest.raises((requests.RequestException, OSError, ProviderError)):
            s.request("GET", "http://192.0.2.1/x", timeout=(0.2, 0.2))
        assert paths.fallback == calls + 1


class _Fallback(Exception):
    pass


@pytest.mark.parametrize(
    ("var", "url"),
    [("HTTP_PROXY", "http://203.0.113.7/api"), ("HTTPS_PROXY", "https://203.0.113.7/api")],
)
def test_a_proxy_in_the_environment_goes_through_requests(
    monkeypatch: pytest.MonkeyPatch, var: str, url: str
) -> None:
    for v in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(v, raising=False)
        monkeypatch.delenv(v.lower(), raising=False)
    monkeypatch.setenv(var, "http://127.0.0.1:9")
    s = new_session(LOCAL)  # the environment is read once per origin and session
    assert isinstance(s, PolicySession)
    adapter = s.get_adapter(url)
    sent: list[Any] = []
    monkeypatch.setattr(adapter, "send", lambda *a, **k: sent.append(k))
    fallback: list[dict[str, Any]] = []

    def request(self: requests.Session, *args: Any, **kwargs: Any) -> requests.Response:
        fallback.append(kwargs)
        raise _Fallback

    monkeypatch.setattr(requests.Session, "request", request)
    with pytest.raises(_Fallback):
        s.request("GET", url, headers={"A": "1"}, timeout=(5, 30))
    assert len(fallback) == 1 and not sent


def test_the_proxy_policy_check_still_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a proxy, only the URL can be checked (_PolicyAdapter.send): still done, nothing sent."""
    for v in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(v, raising=False)
        monkeypatch.delenv(v.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with pytest.raises(ProviderError) as e:
        new_session(LOCAL).request("GET", "http://203.0.113.7/api", timeout=(5, 30))
    assert e.value.code == "EndpointNotAllowed"


# -- behaviour on the direct path --------------------------------------------------------------------


def test_a_redirect_is_an_error_not_followed(server: Recorder, session: PolicySession, paths: Paths) -> None:
    with pytest.raises(ProviderError) as e:
        session.request("GET", server.url + "/redirect", headers={"PRIVATE-TOKEN": "t"}, timeout=(5, 30))
    assert (e.value.kind, e.value.code, e.value.status) == (ErrorClass.PERMANENT, "302", 302)
    assert paths.fallback == 0 and len(paths.direct) == 1
    assert len(server.seen) == 1  # the Location was not called


def test_a_refused_endpoint_sends_nothing(server: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    s = new_session(EndpointPolicy())  # refuses plain http and loopback
    fallback: list[Any] = []
    real = requests.Session.request

    def recording(self: requests.Session, *a: Any, **k: Any) -> requests.Response:
        fallback.append(a)
        return real(self, *a, **k)

    monkeypatch.setattr(requests.Session, "request", recording)
    with pytest.raises(ProviderError) as e:
        s.request("POST", server.url + "/t", json={"a": 1}, timeout=(5, 30))
    assert (e.value.kind, e.value.code) == (ErrorClass.ENDPOINT, "EndpointNotAllowed")
    assert not fallback and not server.seen


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("direct", [True, False])
def test_a_refused_connection_is_requests_connection_error(
    session: PolicySession, paths: Paths, direct: bool
) -> None:
    session.direct = direct
    with pytest.raises(requests.ConnectionError) as e:
        session.request("POST", f"http://127.0.0.1:{_closed_port()}/t", json={"a": 1}, timeout=(5, 30))
    assert isinstance(e.value.args[0].reason, urllib3.exceptions.NewConnectionError)
    assert _never_connected(e.value)  # ACK tells "never sent" from "answer lost" by this
    assert paths.fallback == (0 if direct else 1)


@pytest.mark.parametrize("direct", [True, False])
def test_a_slow_answer_is_requests_read_timeout(
    server: Recorder, session: PolicySession, paths: Paths, direct: bool
) -> None:
    session.direct = direct
    with pytest.raises(requests.ReadTimeout) as e:
        session.request("GET", server.url + "/slow", timeout=(5, 0.2))
    assert not _never_connected(e.value)  # it was sent
    assert paths.fallback == (0 if direct else 1)


# -- cookies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("direct", [True, False])
def test_cookies_are_neither_kept_nor_sent(server: Recorder, session: PolicySession, direct: bool) -> None:
    session.direct = direct
    first = session.request("GET", server.url + "/cookie", headers={"PRIVATE-TOKEN": "a"}, timeout=(5, 30))
    assert "sid=account-a-secret" in first.headers["Set-Cookie"]  # the server did set one
    session.request("GET", server.url + "/next", headers={"PRIVATE-TOKEN": "b"}, timeout=(5, 30))
    session.request("POST", server.url + "/next", json={"x": 1}, timeout=(5, 30))
    assert len(session.cookies) == 0
    for seen in server.seen:
        assert "cookie" not in {k.lower() for k, _ in seen.headers}
