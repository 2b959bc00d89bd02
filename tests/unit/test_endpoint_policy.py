"""The endpoint policy (providers/endpoints.py): what is refused, that a refused endpoint never
receives a request (checked with real servers that count what reaches them), and that no answer of
a non-provider service is copied into a condition."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from cloudtriggers.providers.base import AccountLimiter, ErrorClass, ProviderError, new_session
from cloudtriggers.providers.endpoints import EndpointPolicy, Pattern
from cloudtriggers.providers.gitlab import GitLabProvider
from cloudtriggers.reconcile import Reconciler
from cloudtriggers.settings import Settings
from fakekube import FakeKube

NS = "apps"
PUBLIC = "93.184.216.34"  # a global unicast address (no request ever goes to it here)


# -- the decision -------------------------------------------------------------------------------


def decide(policy: EndpointPolicy, url: str, addr: str) -> str | None:
    scheme, _, rest = url.partition("://")
    host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    default = {"http": 80, "https": 443}[scheme]
    return policy.refusal(scheme, host.strip("[]"), int(port or default), ipaddress.ip_address(addr))


@pytest.mark.parametrize(
    ("addr", "why"),
    [
        ("169.254.169.254", "metadata"),  # AWS, GCP, Azure, Huawei Cloud, OpenStack
        ("100.100.100.200", "metadata"),  # Alibaba Cloud
        ("fd00:ec2::254", "metadata"),  # AWS over IPv6
        ("::ffff:169.254.169.254", "metadata"),  # the same, IPv4-mapped
        ("64:ff9b::a9fe:a9fe", "metadata"),  # the same, through NAT64
        ("fe80::1", "metadata"),
        ("0.0.0.0", "metadata"),  # reaches the local host on Linux
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.9", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),  # carrier-grade NAT (shared address space)
        ("fd12:3456::1", "private"),
        ("::ffff:10.0.0.1", "private"),
    ],
)
def test_refused_by_default(addr: str, why: str) -> None:
    message = decide(EndpointPolicy(), "https://gitlab.example.com", addr)
    assert message is not None
    assert ("metadata" in message) is (why == "metadata")


def test_public_https_is_allowed_and_plain_http_is_not() -> None:
    assert decide(EndpointPolicy(), "https://gitlab.example.com", PUBLIC) is None
    assert "plain http" in (decide(EndpointPolicy(), "http://gitlab.example.com", PUBLIC) or "")


def test_allowed_patterns_open_http_and_private_addresses_but_never_metadata() -> None:
    policy = EndpointPolicy.parse(
        ["http://127.0.0.1", "https://10.0.0.0/8", "https://*.corp.example:8443", "http://169.254.0.0/16"]
    )
    assert decide(policy, "http://127.0.0.1:8080", "127.0.0.1") is None
    assert decide(policy, "https://10.9.8.7", "10.9.8.7") is None
    assert decide(policy, "https://git.corp.example:8443", "192.168.4.4") is None  # by name
    assert decide(policy, "https://a.b.corp.example:8443", "192.168.4.4") is None
    assert decide(policy, "https://corp.example:8443", "192.168.4.4") is not None  # not below it
    assert decide(policy, "https://git.corp.example:443", "192.168.4.4") is not None  # other port
    assert decide(policy, "http://10.9.8.7", "10.9.8.7") is not None  # other scheme
    assert "metadata" in (decide(policy, "http://169.254.169.254", "169.254.169.254") or "")


def test_denied_wins_and_only_allowed_is_a_strict_allowlist() -> None:
    policy = EndpointPolicy.parse(
        ["https://*.example.com"], ["https://secret.example.com"], only_allowed=True
    )
    assert decide(policy, "https://gitlab.example.com", PUBLIC) is None
    assert "denied" in (decide(policy, "https://secret.example.com", PUBLIC) or "")
    assert "not an allowed endpoint" in (decide(policy, "https://gitlab.com", PUBLIC) or "")


@pytest.mark.parametrize(
    "text",
    ["gitlab.example.com", "ftp://x", "https://", "https://a.*.example", "https://x:99999", "https://::1"],
)
def test_bad_patterns_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="endpoint pattern"):
        Pattern.parse(text)
    with pytest.raises(ValueError):
        Settings(allowed_endpoints=[text])


# -- the transport: real servers count what reaches them -------------------------------------


class Server:
    """A plain HTTP server on 127.0.0.1 that counts requests and answers with `answer`."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None]) -> None:
        outer = self
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                outer.hits += 1
                answer(self)

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, *_: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(status: int, body: bytes, content_type: str, **headers: str) -> Callable[[Any], None]:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    return answer


@pytest.fixture
def ok_server() -> Iterator[Server]:
    s = Server(reply(200, b'{"id": 1}', "application/json"))
    yield s
    s.close()


def resolver(names: dict[str, list[str]]) -> Callable[..., list[tuple[Any, ...]]]:
    """getaddrinfo for made-up names (what a tenant's DNS could answer)."""

    def resolve(host: str, port: int, *_: Any, **__: Any) -> list[tuple[Any, ...]]:
        out = []
        for a in names[host]:
            fam = socket.AF_INET6 if ":" in a else socket.AF_INET
            out.append((fam, socket.SOCK_STREAM, 6, "", (a, port)))
        return out

    return resolve


def call(policy: EndpointPolicy, url: str) -> int:
    return new_session(policy).get(url, timeout=(2, 5)).status_code


def refused(policy: EndpointPolicy, url: str) -> ProviderError:
    with pytest.raises(ProviderError) as e:
        call(policy, url)
    assert e.value.kind is ErrorClass.ENDPOINT and e.value.reason == "EndpointNotAllowed"
    return e.value


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every address a provider session opens a connection to."""
    from urllib3.util import connection

    seen: list[tuple[str, int]] = []
    real = connection.create_connection

    def record(address: tuple[str, int], *a: Any, **k: Any) -> socket.socket:
        seen.append(address)
        return real(address, *a, **k)

    monkeypatch.setattr(connection, "create_connection", record)
    return seen


def test_loopback_and_http_receive_nothing_by_default(ok_server: Server, connects: list[Any]) -> None:
    refused(EndpointPolicy(), f"http://127.0.0.1:{ok_server.port}/api/v4/user")
    refused(EndpointPolicy(), f"https://127.0.0.1:{ok_server.port}/api/v4/user")
    refused(EndpointPolicy(), f"https://localhost:{ok_server.port}/")
    assert ok_server.hits == 0 and connects == []


def test_the_explicit_allowance_reaches_the_sandbox(ok_server: Server) -> None:
    assert call(EndpointPolicy.parse(["http://127.0.0.1"]), f"http://127.0.0.1:{ok_server.port}/") == 200
    assert ok_server.hits == 1


def test_a_name_that_resolves_to_a_private_address_receives_nothing(
    ok_server: Server, connects: list[Any]
) -> None:
    dns = resolver({"gitlab.tenant.test": ["127.0.0.1"], "internal.tenant.test": ["10.0.0.7"]})
    policy = EndpointPolicy.parse(["http://*.tenant.test:1"], resolver=dns)  # another port: no help
    e = refused(policy, f"http://gitlab.tenant.test:{ok_server.port}/")
    assert "127.0.0.1" in str(e)
    strict = EndpointPolicy(resolver=dns)
    refused(strict, "https://internal.tenant.test/")
    assert ok_server.hits == 0 and connects == []
    # Allowed by name, the connection goes to the address that was checked.
    allowed = EndpointPolicy.parse([f"http://gitlab.tenant.test:{ok_server.port}"], resolver=dns)
    assert call(allowed, f"http://gitlab.tenant.test:{ok_server.port}/") == 200
    assert connects == [("127.0.0.1", ok_server.port)]


def test_a_metadata_address_is_never_connected_to_even_when_allowed(connects: list[Any]) -> None:
    dns = resolver({"metadata.tenant.test": ["169.254.169.254"], "mixed.tenant.test": ["100.100.100.200"]})
    policy = EndpointPolicy.parse(["http://*.tenant.test", "http://169.254.169.254"], resolver=dns)
    for url in (
        "http://metadata.tenant.test/latest/meta-data/",
        "http://169.254.169.254/latest/meta-data/",
        "http://mixed.tenant.test/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/",
    ):
        assert "metadata" in str(refused(policy, url))
    assert connects == []


def test_only_allowed_addresses_of_a_name_are_tried(ok_server: Server, connects: list[Any]) -> None:
    # A name answering a refused and an allowed address (a rebinding attempt mixes them): only the
    # allowed one is connected to.
    dns = resolver({"both.tenant.test": ["10.0.0.7", "127.0.0.1"]})
    policy = EndpointPolicy.parse(["http://127.0.0.1"], resolver=dns)
    assert call(policy, f"http://both.tenant.test:{ok_server.port}/") == 200
    assert connects == [("127.0.0.1", ok_server.port)]


def test_a_redirect_is_not_followed_and_its_target_receives_nothing() -> None:
    inner = Server(reply(200, b"INNER-SECRET", "text/plain"))
    outer = Server(reply(302, b"", "text/html", Location=f"http://127.0.0.1:{inner.port}/admin"))
    try:
        policy = EndpointPolicy.parse(["http://127.0.0.1"])
        with pytest.raises(ProviderError) as e:
            call(policy, f"http://127.0.0.1:{outer.port}/api/v4/user")
        assert "redirect" in str(e.value) and str(inner.port) not in str(e.value)
        assert outer.hits == 1 and inner.hits == 0
    finally:
        inner.close()
        outer.close()


# -- through the reconciler: the condition a user reads ---------------------------------------


def reconciler(provider: GitLabProvider) -> tuple[FakeKube, Reconciler]:
    kube = FakeKube()
    kube.put_secret(NS, "gl", {"token": "glpat-" + "x" * 20})
    return kube, Reconciler(kube, {"gitlab": provider}, Settings())


def test_a_refused_endpoint_is_a_condition_of_its_own_with_no_retry(ok_server: Server) -> None:
    kube, rec = reconciler(GitLabProvider(limiter=AccountLimiter(rate=1000, burst=1000)))
    url = f"http://127.0.0.1:{ok_server.port}"
    kube.apply(NS, "web", {"gitlab": {"url": url, "project": "g/w"}, "credentialsSecretRef": {"name": "gl"}})
    out = rec.reconcile(NS, "web")
    assert out.reason == "EndpointNotAllowed" and out.requeue_after is None  # again on a spec change
    ready = kube.cond(NS, "web")
    assert (ready["status"], ready["reason"]) == ("False", "EndpointNotAllowed")
    assert "plain http is refused" in ready["message"]
    assert ok_server.hits == 0
    # Deleting it: nothing was created, so nothing to delete and nothing to wait for.
    assert rec.finalize(kube.triggers[(NS, "web")]) == "nothing"
    assert ok_server.hits == 0


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (500, b"<html><body>INTERNAL-ADMIN-PAGE db_password=hunter2</body></html>", "text/html"),
        (404, b'{"detail": "INTERNAL-ADMIN-PAGE"}', "application/json"),  # JSON, but not GitLab's
        (401, b"INTERNAL-ADMIN-PAGE", "text/plain"),
    ],
)
def test_a_non_provider_answer_is_summarised_never_copied(
    status: int, body: bytes, content_type: str
) -> None:
    server = Server(reply(status, body, content_type))
    try:
        provider = GitLabProvider(
            limiter=AccountLimiter(rate=1000, burst=1000), policy=EndpointPolicy.parse(["http://127.0.0.1"])
        )
        kube, rec = reconciler(provider)
        spec = {"gitlab": {"url": f"http://127.0.0.1:{server.port}", "project": "g/w"}}
        kube.apply(NS, "web", {**spec, "credentialsSecretRef": {"name": "gl"}})
        rec.reconcile(NS, "web")
        message = kube.cond(NS, "web")["message"]
        assert "INTERNAL-ADMIN-PAGE" not in message and "hunter2" not in message
        assert f"not a provider error answer ({content_type}, {len(body)} bytes)" in message
        assert "INTERNAL-ADMIN-PAGE" not in str(kube.events)
    finally:
        server.close()


@pytest.mark.parametrize("block", ["ack", "swr"])
def test_ack_and_swr_summarise_a_non_provider_answer_too(block: str) -> None:
    from cloudtriggers.providers.ack import AckProvider
    from cloudtriggers.providers.swr import SwrProvider

    body = b"<html>INTERNAL-ADMIN-PAGE</html>"
    server = Server(reply(502, body, "text/html"))
    try:
        policy = EndpointPolicy.parse(["http://127.0.0.1"])
        limiter = AccountLimiter(rate=1000, burst=1000)
        kube = FakeKube()
        url = f"http://127.0.0.1:{server.port}"
        if block == "ack":
            provider: Any = AckProvider(limiter=limiter, policy=policy, environ={}, timeout=(2, 5))
            kube.put_secret(NS, "c", {"accessKeyId": "LTAI" + "a" * 20, "accessKeySecret": "s" * 30})
            spec = {
                "regionId": "cn-beijing",
                "clusterId": "c" * 32,
                "projectId": "default/web",
                "endpoint": url,
            }
        else:
            provider = SwrProvider(limiter=limiter, policy=policy, timeout=(2, 5))
            kube.put_secret(NS, "c", {"accessKey": "A" * 20, "secretKey": "s" * 40})
            spec = {
                **{"region": "cn-north-4", "organization": "group", "repository": "web"},
                **{
                    "application": "web",
                    "clusterNamespace": "default",
                    "clusterName": "prod",
                    "endpoint": url,
                },
            }
        rec = Reconciler(kube, {block: provider}, Settings())
        kube.apply(NS, "t", {block: spec, "credentialsSecretRef": {"name": "c"}})
        rec.reconcile(NS, "t")
        message = kube.cond(NS, "t")["message"]
        assert server.hits >= 1  # it was asked (allowed), and answered with a page
        assert "INTERNAL-ADMIN-PAGE" not in message
        assert f"not a provider error answer (text/html, {len(body)} bytes)" in message
    finally:
        server.close()


def test_the_environments_proxy_and_ca_bundle_still_apply_read_once_per_origin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cloudtriggers.providers.base import new_session

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "gitlab.internal")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/corp-ca.pem")
    s = new_session()
    got = s.merge_environment_settings("https://gitlab.com/api/v4/user", {}, None, None, None)
    assert got["proxies"].get("https") == "http://proxy.corp:3128" and got["verify"] == "/etc/corp-ca.pem"
    bypass = s.merge_environment_settings("https://gitlab.internal/api/v4/user", {}, None, None, None)
    assert "https" not in bypass["proxies"]  # NO_PROXY
    got["proxies"]["https"] = "tampered"  # a caller's change never reaches the next request
    monkeypatch.setenv("HTTPS_PROXY", "http://other:1")  # read once: the first answer stands
    again = s.merge_environment_settings("https://gitlab.com/other", {}, None, None, None)
    assert again["proxies"].get("https") == "http://proxy.corp:3128"
    explicit = s.merge_environment_settings("https://gitlab.com/x", {"https": "http://p:2"}, None, None, None)
    assert explicit["proxies"]["https"] == "http://p:2"


def test_no_credentials_from_netrc_reach_a_provider_endpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """requests sends ~/.netrc's entry for a host as Basic auth when a request has none of its own (a
    GitLab call carries its token in a header): a tenant's endpoint must never get the operator's."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login operator password hunter2\n")
    monkeypatch.setenv("NETRC", str(netrc))
    seen: list[str | None] = []

    def answer(h: BaseHTTPRequestHandler) -> None:
        seen.append(h.headers.get("Authorization"))
        reply(200, b"{}", "application/json")(h)

    server = Server(answer)
    try:
        url = f"http://127.0.0.1:{server.port}/api/v4/user"
        plain = requests.Session()  # what requests does on its own: the check sees it
        assert plain.get(url, timeout=5).status_code == 200
        s = new_session(EndpointPolicy.parse(["http://127.0.0.1"]))
        assert s.get(url, timeout=5, headers={"PRIVATE-TOKEN": "t"}).status_code == 200
    finally:
        server.close()
    assert seen[0] is not None and seen[0].startswith("Basic ")
    assert seen[1] is None
