"""Provider requests over kept-alive http.client connections, under the endpoint policy.

PolicySession's direct path (base.py) prepares a request exactly as requests would; this sends it.
requests' HTTPAdapter and urllib3 under it cost about 2.3 times the client CPU of a plain
http.client exchange for a provider's small JSON call (~470 against ~205 µs a GET against the GitLab
sandbox): the pool manager's lookup, the Retry and Timeout objects, urllib3's response wrapper and
requests' response building on every call. What the adapter path does, this does the same way:

- every new connection goes to an address the endpoint policy allows, resolved at connect time
  (endpoints.py), through urllib3's create_connection with urllib3's socket options (TCP_NODELAY);
- TLS: urllib3's base context (kube_http.tls_context) with the CA bundle requests would use
  (certifi's, or REQUESTS_CA_BUNDLE's path), the URL's host sent as SNI and checked by ssl;
- the request's bytes as urllib3 writes them: Host and Accept-Encoding unless given, the framing
  header, urllib3's User-Agent when none is given, then the request's headers in order;
- the answer as requests shows it: repeated headers joined with ", ", gzip/deflate decoded by
  urllib3's own decoder, the encoding from Content-Type;
- failures as the requests exceptions HTTPAdapter raises for them (a refused connection is a
  ConnectionError around urllib3's NewConnectionError, which ack.py's `_never_connected` reads;
  ConnectTimeout, ReadTimeout, SSLError; a broken body ChunkedEncodingError); EndpointRefused as is;
- an idle connection that the server has closed is not reused (urllib3 checks the same).

Anything else (a proxy, a client certificate, a streamed or chunked body, a urllib3 Timeout object)
stays on the adapter: base.py only hands this what it covers (`Transport.covers`).
"""

from __future__ import annotations

import errno
import http.client
import io
import os
import ssl
from typing import Any

import requests
import urllib3
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_encoding_from_headers
from urllib3.connection import HTTPConnection as Urllib3Connection
from urllib3.connection import _get_default_user_agent
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ReadTimeoutError
from urllib3.util.request import _METHODS_NOT_EXPECTING_BODY
from urllib3.util.url import _encode_target

from ..http_answers import Answer
from ..kube_http import IdleConnections, tls_context
from .endpoints import DEFAULT_PORTS, EndpointPolicy, open_checked

_USER_AGENT = _get_default_user_agent()  # what urllib3 sends when a request names none


class _Checked(http.client.HTTPConnection):
    """A connection opened only to an address the policy allows; TLS on top when `context` is set."""

    response_class = Answer

    def __init__(self, origin: _Origin) -> None:
        super().__init__(origin.host, origin.port, timeout=None)
        self.origin = origin

    def connect(self) -> None:
        o = self.origin
        sock = open_checked(
            o.policy,
            o.scheme,
            self.host,
            self.port,
            self.timeout,
            conn=self,
            socket_options=Urllib3Connection.default_socket_options,
        )
        if o.context is not None:
            try:
                sock = o.context.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        self.sock = sock

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        """A request's head and its bytes body in one write. http.client writes them apart (two
        sendall calls), and with TCP_NODELAY each is a segment of its own: one more system call,
        segment and wake-up of the server a request, and in the operator one more release of the GIL
        that its event loop then waits to take back. The bytes are the same; anything but a plain
        bytes body goes http.client's way."""
        if type(message_body) is not bytes or encode_chunked:
            super()._send_output(message_body, encode_chunked=encode_chunked)  # type: ignore[misc]
            return
        buffer: list[bytes] = self._buffer  # type: ignore[attr-defined]
        buffer.extend((b"", message_body))
        data = b"\r\n".join(buffer)
        del buffer[:]
        self.send(data)


class _Origin(IdleConnections):
    """The kept-alive connections to one scheme://host:port with one CA setting."""

    def __init__(self, policy: EndpointPolicy, scheme: str, host: str, port: int, verify: bool | str) -> None:
        super().__init__(maxsize=32)
        self.policy = policy
        self.scheme = scheme
        self.host = host
        self.port = port
        self.context = _context(verify) if scheme == "https" else None

    def new_connection(self) -> http.client.HTTPConnection:
        return _Checked(self)

    def __str__(self) -> str:
        return f"{self.scheme.upper()}ConnectionPool(host={self.host!r}, port={self.port!r})"


def _context(verify: bool | str) -> ssl.SSLContext:
    """requests' HTTPAdapter.cert_verify: True means certifi's bundle; a string is a file or a folder."""
    location = DEFAULT_CA_BUNDLE_PATH if verify is True else str(verify)
    if not verify:
        return tls_context(verify=False)
    if not location or not os.path.exists(location):
        raise OSError(f"Could not find a suitable TLS CA certificate bundle, invalid path: {location}")
    if os.path.isdir(location):
        return tls_context(verify=True, ca_dir=location)
    return tls_context(verify=True, ca_file=location)


class Transport:
    """Thread-safe; one per provider session (so per endpoint policy)."""

    def __init__(self, policy: EndpointPolicy) -> None:
        self.policy = policy
        self._origins: dict[tuple[str, bool | str], _Origin] = {}

    @staticmethod
    def covers(p: requests.PreparedRequest, timeout: Any) -> bool:
        """What send() handles as the adapter would: a bytes or str body with its Content-Length (or
        none), and a timeout that is a number, a (connect, read) pair or None."""
        if p.body is not None and (not isinstance(p.body, (bytes, str)) or "Content-Length" not in p.headers):
            return False
        if isinstance(timeout, tuple):
            return len(timeout) == 2
        return timeout is None or isinstance(timeout, (int, float))

    def send(self, p: requests.PreparedRequest, timeout: Any, verify: bool | str) -> requests.Response:
        url = str(p.url)
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        # A prepared URL always has a path after its host (requests adds "/").
        key = (url[: url.index("/", url.index("://") + 3)], verify)
        origin = self._origins.get(key)
        if origin is None:
            # The pool key urllib3 makes: host lower-cased, IPv6 brackets off, the scheme's default port.
            parts = urllib3.util.parse_url(url)
            scheme = (parts.scheme or "").lower()
            host = (parts.host or "").strip("[]")
            origin = _Origin(self.policy, scheme, host, parts.port or DEFAULT_PORTS.get(scheme, 0), verify)
            origin = self._origins.setdefault(key, origin)
        return self._exchange(origin, p, url, connect, read)

    def _exchange(
        self,
        origin: _Origin,
        p: requests.PreparedRequest,
        url: str,
        connect: float | None,
        read: float | None,
    ) -> requests.Response:
        conn = origin.take()
        conn.timeout = connect
        try:
            if conn.sock is None:
                conn.connect()
            else:
                conn.sock.settimeout(connect)  # urllib3 sends under the connect timeout too
            try:
                self._write(conn, p)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may have answered and closed: the answer is still read, as urllib3 does
            except OSError as e:
                if e.errno not in (errno.EPROTOTYPE, errno.ECONNRESET) or isinstance(e, ssl.SSLError):
                    raise
            if conn.sock is not None:
                conn.sock.settimeout(read)
            answer = conn.getresponse()
        except BaseException as e:
            conn.close()
            raise _as_requests_error(e, p, origin, url, read) from (e if isinstance(e, Exception) else None)
        try:
            body = answer.read()
        except BaseException as e:
            conn.close()
            raise _as_body_error(e, p, origin, url) from (e if isinstance(e, Exception) else None)
        if answer.will_close:
            conn.close()
        else:
            origin.give_back(conn)
        return _response(p, url, answer, body)

    @staticmethod
    def _write(conn: http.client.HTTPConnection, p: requests.PreparedRequest) -> None:
        """urllib3's HTTPConnection.request for a bytes or str body (or none), without chunking."""
        method = str(p.method)
        headers = p.headers
        keys = {k.lower() for k in headers}
        conn.putrequest(
            method,
            _encode_target(p.path_url),  # HTTPAdapter.request_url, then urllib3's urlopen
            skip_host="host" in keys,
            skip_accept_encoding="accept-encoding" in keys,
        )
        body = p.body.encode("utf-8") if isinstance(p.body, str) else p.body
        if "content-length" not in keys and "transfer-encoding" not in keys:
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            elif method.upper() not in _METHODS_NOT_EXPECTING_BODY:
                conn.putheader("Content-Length", "0")
        if "user-agent" not in keys:
            conn.putheader("User-Agent", _USER_AGENT)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body or None)  # the head and the body in one write (_Checked._send_output)

    def close(self) -> None:
        for origin in list(self._origins.values()):
            origin.close()


def _response(
    p: requests.PreparedRequest, url: str, answer: http.client.HTTPResponse, body: bytes
) -> requests.Response:
    """requests' HTTPAdapter.build_response and the body read of Response.content, from http.client's
    answer. The headers as urllib3's HTTPHeaderDict shows them to requests: one entry per name in the
    first spelling, repeated values joined with ", "."""
    joined: dict[str, list[str]] = {}
    for name, value in answer.msg.items():
        if "\r\n" in value:
            value = urllib3.connection._normalize_header_value(value)
        got = joined.get(name.lower())
        if got is None:
            joined[name.lower()] = [name, value]
        else:
            got.append(value)
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    for name, *values in joined.values():
        headers[name] = ", ".join(values)
    if body and "content-encoding" in joined:
        body = _decoded(p, body, headers)
    r = requests.Response()
    r.status_code = answer.status
    r.headers = headers
    r.encoding = get_encoding_from_headers(headers)
    r.reason = answer.reason
    r.url = url
    r.request = p
    r._content = body
    r._content_consumed = True  # type: ignore[attr-defined]
    r.raw = None
    return r


def _decoded(p: requests.PreparedRequest, body: bytes, headers: CaseInsensitiveDict[str]) -> bytes:
    """The body as urllib3 decodes it for requests (only the encodings urllib3 knows)."""
    try:
        return urllib3.HTTPResponse(
            body=io.BytesIO(body), headers=dict(headers), preload_content=True, decode_content=True
        ).data
    except urllib3.exceptions.DecodeError as e:
        raise requests.exceptions.ContentDecodingError(e, request=p) from None


def _as_requests_error(
    e: BaseException, p: requests.PreparedRequest, origin: _Origin, url: str, read: float | None
) -> BaseException:
    """What HTTPAdapter.send raises for the same failure before an answer (urllib3 under requests'
    Retry(0, read=False)); EndpointRefused and anything not a transport failure pass as they are."""
    pool: Any = origin  # its str() is the pool's that urllib3 names in the message
    if isinstance(e, NewConnectionError):  # NameResolutionError too: a ConnectionError, not a timeout
        return requests.ConnectionError(MaxRetryError(pool, url, e), request=p)
    if isinstance(e, ConnectTimeoutError):  # (NewConnectionError subclasses it, hence the order)
        return requests.ConnectTimeout(MaxRetryError(pool, url, e), request=p)
    if isinstance(e, ssl.SSLError):  # the handshake's failures (a handshake timeout is a TimeoutError)
        return requests.exceptions.SSLError(
            MaxRetryError(pool, url, urllib3.exceptions.SSLError(e)), request=p
        )
    if isinstance(e, TimeoutError):
        return requests.ReadTimeout(
            ReadTimeoutError(pool, url, f"Read timed out. (read timeout={read})"), request=p
        )
    if isinstance(e, (OSError, http.client.HTTPException)):
        return requests.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted.", e), request=p)
    return e


def _as_body_error(e: BaseException, p: requests.PreparedRequest, origin: _Origin, url: str) -> BaseException:
    """What Response.content raises for the same failure while the body is read."""
    pool: Any = origin
    if isinstance(e, TimeoutError):
        return requests.ConnectionError(ReadTimeoutError(pool, url, "Read timed out."), request=p)
    if isinstance(e, ssl.SSLError):
        return requests.exceptions.SSLError(urllib3.exceptions.SSLError(e), request=p)
    if isinstance(e, (OSError, http.client.HTTPException)):
        error = urllib3.exceptions.ProtocolError(f"Connection broken: {e!r}", e)
        return requests.exceptions.ChunkedEncodingError(error, request=p)
    return e
