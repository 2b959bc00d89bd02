"""The endpoint policy: which hosts the operator may call for a Trigger (docs/security.md).

Whoever may create a Trigger chooses the host the operator calls (spec.gitlab.url, the ACK and SWR
`endpoint`), from the operator's own network. The policy is checked where it cannot be bypassed: on
every address a connection is about to be opened to, after DNS resolution, so a name that resolves
to a private address (or starts to: DNS rebinding) is refused like the address itself, and the
connection goes to exactly the address that was checked. Redirects are never followed (base.py).

Order of the decision, for the URL's scheme, host and port and each address it resolves to:
1. link-local and cloud metadata addresses: always refused;
2. a denied pattern matches: refused;
3. an allowed pattern matches: allowed;
4. `only_allowed`: refused (a strict allowlist);
5. plain http, or an address that is not public (loopback, private, shared, reserved): refused;
6. otherwise (https to a public address): allowed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

# Instance metadata services that are not link-local: Alibaba Cloud's, and AWS's over IPv6.
# (169.254.169.254 of AWS, GCP, Azure, Huawei Cloud and OpenStack is link-local.)
METADATA = frozenset(ipaddress.ip_address(a) for a in ("100.100.100.200", "fd00:ec2::254"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")
DEFAULT_PORTS = {"http": 80, "https": 443}


class EndpointRefused(Exception):
    """The policy refuses this endpoint; no connection was opened."""


def _embedded_v4(addr: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64): it is what is reached."""
    if isinstance(addr, ipaddress.IPv4Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def parse_address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0].strip("[]"))
    except ValueError:
        return None


def _host_of(host: str) -> str:
    return host.strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class Pattern:
    """`scheme://host[:port]`: scheme http, https or *; host a DNS name, `*.suffix` (any name below
    it), `*` (any host), an IP address or a network in CIDR form (`10.0.0.0/8`, `[fd00::/8]`)."""

    text: str
    scheme: str
    host: str = ""  # a name or a `*.suffix` wildcard; "" when `network` is set or the host is `*`
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Pattern:
        raw = text.strip()
        scheme, sep, rest = raw.partition("://")
        if not sep or scheme not in ("http", "https", "*"):
            raise ValueError(f"endpoint pattern {text!r}: give a scheme, e.g. https://gitlab.example.com")
        rest = rest.rstrip("/")
        port: int | None = None
        if rest.startswith("["):
            inside, _, after = rest[1:].partition("]")
            host = inside
            if after:
                if not after.startswith(":"):
                    raise ValueError(f"endpoint pattern {text!r}: unexpected {after!r}")
                port = cls._port(text, after[1:])
        else:
            host, colon, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "")
            if colon:
                port = cls._port(text, port_text)
            else:
                host = rest
        if not host or any(c in host for c in "?#@ ") or (":" in host and not rest.startswith("[")):
            raise ValueError(f"endpoint pattern {text!r}: no host")
        if host == "*":
            return cls(raw, scheme, port=port)
        if "/" in host or parse_address(host) is not None:
            try:
                network = ipaddress.ip_network(host, strict=False)
            except ValueError as e:
                raise ValueError(f"endpoint pattern {text!r}: {e}") from None
            return cls(raw, scheme, network=network, port=port)
        name = _host_of(host)
        if "*" in name[1:] or (name.startswith("*") and not name.startswith("*.")):
            raise ValueError(f"endpoint pattern {text!r}: a wildcard is only `*.` at the start")
        return cls(raw, scheme, host=name, port=port)

    @staticmethod
    def _port(text: str, value: str) -> int:
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise ValueError(f"endpoint pattern {text!r}: bad port {value!r}")
        return int(value)

    def matches(self, scheme: str, host: str, port: int, addr: Address | None) -> bool:
        if self.scheme != "*" and self.scheme != scheme:
            return False
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            if addr is None:
                return False
            v4 = _embedded_v4(addr)
            return addr in self.network or (v4 is not None and v4 in self.network)
        if not self.host:
            return True
        name = _host_of(host)
        if self.host.startswith("*."):
            return name.endswith(self.host[1:])
        return name == self.host


@dataclass(frozen=True)
class EndpointPolicy:
    allowed: tuple[Pattern, ...] = ()
    denied: tuple[Pattern, ...] = ()
    only_allowed: bool = False
    resolver: Resolver = field(default=socket.getaddrinfo, compare=False)

    @classmethod
    def parse(
        cls,
        allowed: Iterable[str] = (),
        denied: Iterable[str] = (),
        only_allowed: bool = False,
        resolver: Resolver | None = None,
    ) -> EndpointPolicy:
        return cls(
            tuple(Pattern.parse(p) for p in allowed if p.strip()),
            tuple(Pattern.parse(p) for p in denied if p.strip()),
            only_allowed,
            resolver or socket.getaddrinfo,
        )

    def refusal(self, scheme: str, host: str, port: int, addr: Address | None) -> str | None:
        """Why a connection to `addr` for scheme://host:port is refused; None when it is allowed."""
        where = f"{scheme}://{host}:{port}" + (f" ({addr})" if addr is not None and str(addr) != host else "")
        if addr is not None:
            for a in (addr, _embedded_v4(addr)):
                if a is not None and (a.is_link_local or a in METADATA or a.is_unspecified):
                    return f"{where}: a link-local or cloud metadata address is never called"
        for p in self.denied:
            if p.matches(scheme, host, port, addr):
                return f"{where} matches the denied endpoint {p.text}"
        for p in self.allowed:
            if p.matches(scheme, host, port, addr):
                return None
        if self.only_allowed:
            return f"{where} is not an allowed endpoint (only allowed endpoints are called)"
        if scheme != "https":
            return f"{where}: plain http is refused unless the endpoint is allowed"
        if addr is not None:
            v4 = _embedded_v4(addr)
            if not addr.is_global or (v4 is not None and not v4.is_global):
                return f"{where}: a loopback, private or reserved address is refused unless allowed"
        return None

    def resolve(self, scheme: str, host: str, port: int) -> list[tuple[int, Any]]:
        """The addresses of host that may be connected to, as (family, sockaddr), in resolver order.
        Raises EndpointRefused when there is none (socket.gaierror when the name does not resolve)."""
        literal = parse_address(host)
        infos = (
            [(socket.AF_INET6 if literal.version == 6 else socket.AF_INET, (str(literal), port))]
            if literal is not None
            else [(i[0], i[4]) for i in self.resolver(_host_of(host), port, type=socket.SOCK_STREAM)]
        )
        allowed, first_refusal = [], ""
        for family, sockaddr in infos:
            addr = parse_address(str(sockaddr[0]))
            why = (
                self.refusal(scheme, host, port, addr) if addr is not None else "an address of no known kind"
            )
            if why is None:
                allowed.append((family, sockaddr))
            elif not first_refusal:
                first_refusal = why
        if not allowed:
            raise EndpointRefused(first_refusal or f"{scheme}://{host}:{port} resolves to no address")
        return allowed

    def check_url(self, url: str) -> None:
        """The whole check for one URL, resolving it here (for a request that goes through a proxy,
        which resolves the name itself)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
        try:
            self.resolve(scheme, parts.hostname or "", port)
        except socket.gaierror as e:
            raise EndpointRefused(f"{scheme}://{parts.hostname}:{port} does not resolve: {e}") from None


def open_checked(
    policy: EndpointPolicy,
    scheme: str,
    host: str,
    port: int,
    timeout: float | None,
    *,
    conn: Any,
    source_address: tuple[str, int] | None = None,
    socket_options: list[tuple[int, int, int | bytes]] | None = None,
) -> socket.socket:
    """A socket to the first address of `host` that the policy allows, with urllib3's errors as its
    own _new_conn raises them (NameResolutionError, ConnectTimeoutError, NewConnectionError; `conn`
    is the connection they name). Both provider paths connect here: urllib3's pools (pool_classes)
    and the transport (transport.py)."""
    try:
        addresses = policy.resolve(scheme, host, port)
    except socket.gaierror as e:
        raise NameResolutionError(host, conn, e) from e
    error: OSError | None = None
    for _, sockaddr in addresses:
        try:
            return connection.create_connection(
                (str(sockaddr[0]), port),
                timeout,
                source_address=source_address,
                socket_options=socket_options,
            )
        except TimeoutError as e:
            raise ConnectTimeoutError(
                conn, f"Connection to {host} timed out. (connect timeout={timeout})"
            ) from e
        except OSError as e:
            error = e
    raise NewConnectionError(conn, f"Failed to establish a new connection: {error}") from error


def _checked(base: type[HTTPConnection], policy: EndpointPolicy, scheme: str) -> type[HTTPConnection]:
    class Checked(base):  # type: ignore[valid-type,misc]
        def _new_conn(self) -> socket.socket:
            tunnel = getattr(self, "_tunnel_host", None)
            if tunnel:  # https through a proxy, which resolves the name: check what we can see
                policy.check_url(f"{scheme}://{tunnel}:{getattr(self, '_tunnel_port', None) or ''}")
                return super()._new_conn()  # type: ignore[no-any-return]
            if getattr(self, "proxy", None) is not None:  # plain http via a proxy: PolicyAdapter checked
                return super()._new_conn()  # type: ignore[no-any-return]
            return open_checked(
                policy,
                scheme,
                self.host,
                self.port or DEFAULT_PORTS[scheme],
                self.timeout,
                conn=self,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )

    Checked.__name__ = f"Checked{base.__name__}"
    return Checked


def pool_classes(policy: EndpointPolicy) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes whose connections go only where `policy` allows."""

    class CheckedHTTPPool(HTTPConnectionPool):
        ConnectionCls = _checked(HTTPConnection, policy, "http")

    class CheckedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = _checked(HTTPSConnection, policy, "https")  # type: ignore[assignment]

    return {"http": CheckedHTTPPool, "https": CheckedHTTPSPool}
