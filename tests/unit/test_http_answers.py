"""http_answers.py: the answer headers it parses are the message http.client's email parser builds,
for every block, plain or odd; plain blocks skip the email parser; both kept-alive paths use it."""

from __future__ import annotations

import email.parser
import http.client
import io
import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cloudtriggers.http_answers import Answer, parse_headers
from cloudtriggers.kube_http import Connections

PLAIN = [
    b"\r\n",
    b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n",
    # An API server's answer, as kube-apiserver sends it.
    b"Audit-Id: 5d1e6a4e-0d8b-4e5f-a1e1-2c3d4e5f6a7b\r\nCache-Control: no-cache, private\r\n"
    b"Content-Type: application/json\r\nX-Kubernetes-Pf-Flowschema-Uid: 9f1c\r\n"
    b"X-Kubernetes-Pf-Prioritylevel-Uid: 1c9f\r\nDate: Sun, 06 Dec 2026 13:00:00 GMT\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n",
    # GitLab's rate-limit headers, repeated names, empty and blank values, tabs, LF alone.
    b"RateLimit-Remaining: 0\r\nRateLimit-Reset: 1765000000\r\nRetry-After: 60\r\nSet-Cookie: a=1\r\n"
    b"Set-Cookie: b=2\r\nX-Empty:\r\nX-Blank:   \t\r\nX-Tab:\tv\t \r\n\r\n",
    b"Server: nginx\nContent-Type: text/plain; charset=utf-8\n\n",
    b"X-Latin: caf\xe9 \xa0\r\nFrom: someone\r\nX-Colons: a:b::c\r\n\r\n",
]

ODD = [
    b"X-Folded: one\r\n two\r\n\tthree\r\n\r\n",  # obs-fold
    b" Leading: space\r\n\r\n",
    b"No colon here\r\nX-After: 1\r\n\r\n",
    b": no name\r\nX-After: 1\r\n\r\n",
    b"Name : space before the colon\r\n\r\n",
    b"X-CR: a\rb\r\n\r\n",  # a bare CR splits the line for the email parser
    b"X-CR-End: a\r\r\n\r\n",
    b"X-Nel: a\x85b\r\nX-VT: a\x0bb\r\nX-FF: a\x0cb\r\nX-FS: a\x1cb\r\n\r\n",
    b"X-Name\xe9: v\r\nX-Del\x7f: v\r\n\r\n",
    b"From nobody Sun Dec  6 13:00:00 2026\r\nX-A: 1\r\n\r\n",  # an mbox "From " line
    b"X-A: 1\r\n",  # the connection closed before the blank line
    b"X-A: 1",
    b"",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Type: multipart/mixed; boundary=x\r\n\r\n",
]


def _fuzzed(n: int, seed: int = 14) -> Iterator[bytes]:
    rng = random.Random(seed)
    pieces = [
        b"A",
        b"x-y",
        b"Content-Type",
        b":",
        b": ",
        b" ",
        b"\t",
        b"\r",
        b"\n",
        b"\r\n",
        b"\x85",
        b"\xe9",
    ]
    pieces += [b"\x0b", b"v", b"From ", b"\x7f", b"1", b"multipart/x", b"message/y"]
    for _ in range(n):
        lines = []
        for _ in range(rng.randint(0, 6)):
            if rng.random() < 0.6:
                lines.append(
                    rng.choice([b"X-A", b"Content-Type", b"Y"])
                    + b": "
                    + rng.choice([b"1", b"v w", b"", b"multipart/x", b"Message/y; a=b"])
                    + b"\r\n"
                )
            else:
                lines.append(b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 8))) + b"\r\n")
        yield b"".join(lines) + rng.choice([b"\r\n", b"\n", b""])


def _view(msg: Any) -> dict[str, Any]:
    # Defects are exception instances (equal only to themselves): compared by kind and text.
    view = dict(vars(msg))
    view["defects"] = [(type(d), str(d)) for d in msg.defects]
    if isinstance(view.get("_payload"), list):
        view["_payload"] = [_view(part) for part in view["_payload"]]
    return view


def _both(block: bytes) -> tuple[Any, Any]:
    def parse(parser: Any) -> Any:
        try:
            return _view(parser(io.BytesIO(block + b"BODY")))
        except Exception as e:  # the limits (line length, header count) raise the same
            return (type(e), str(e))

    return parse(http.client.parse_headers), parse(parse_headers)


@pytest.mark.parametrize("block", PLAIN + ODD)
def test_the_message_is_the_email_parsers(block: bytes) -> None:
    want, got = _both(block)
    assert got == want


def test_the_message_is_the_email_parsers_for_fuzzed_blocks() -> None:
    blocks = list(_fuzzed(3000))
    differ = [b for b in blocks if _both(b)[0] != _both(b)[1]]
    assert not differ, differ[:5]


def test_too_many_or_too_long_header_lines_are_refused_as_http_client_refuses_them() -> None:
    many = b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n"
    long = b"X-Long: " + b"v" * 70_000 + b"\r\n\r\n"
    for block in (many, long):
        want, got = _both(block)
        assert isinstance(want, tuple) and got == want


@pytest.mark.parametrize("block", PLAIN)
def test_plain_blocks_skip_the_email_parser(block: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the email parser ran")

    monkeypatch.setattr("cloudtriggers.http_answers.email.parser.Parser.parsestr", refuse)
    parse_headers(io.BytesIO(block))


@pytest.mark.parametrize("block", [b for b in ODD if b.endswith(b"\n\r\n")][:3])
def test_odd_blocks_go_to_the_email_parser(block: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    stock = email.parser.Parser.parsestr  # the class http_answers uses

    def spy(self: Any, text: str, headersonly: bool = False) -> Any:
        seen.append(text)
        return stock(self, text, headersonly)

    monkeypatch.setattr("cloudtriggers.http_answers.email.parser.Parser.parsestr", spy)
    parse_headers(io.BytesIO(block))
    assert seen == [block.decode("iso-8859-1")]


def test_answer_runs_http_clients_own_begin_with_this_parser() -> None:
    # If a Python's begin stopped calling parse_headers, Answer would quietly be the stock one.
    assert Answer.begin is not http.client.HTTPResponse.begin
    assert Answer.begin.__code__ is http.client.HTTPResponse.begin.__code__
    assert "parse_headers" in Answer.begin.__code__.co_names
    assert Answer.begin.__globals__["parse_headers"] is parse_headers
    assert http.client.parse_headers is not parse_headers  # nothing patched for anyone else


ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n"
    b'X-A: 1\r\nX-A: 2\r\n\r\n{"a":1}',
    b"HTTP/1.1 100 Continue\r\nX-Skip: 1\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 204 No Content\r\nX-Folded: a\r\n b\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close",
]


@pytest.mark.parametrize("raw", ANSWERS)
def test_an_answer_reads_as_http_clients_own(raw: bytes) -> None:
    def read(cls: type[http.client.HTTPResponse]) -> tuple[Any, ...]:
        a, b = socket.socketpair()
        try:
            b.sendall(raw)
            b.shutdown(socket.SHUT_WR)
            resp = cls(a, method="GET")
            resp.begin()
            return resp.status, resp.reason, resp.version, resp.will_close, _view(resp.msg), resp.read()
        finally:
            a.close()
            b.close()

    assert read(Answer) == read(http.client.HTTPResponse)


def test_the_api_servers_answers_are_read_with_it() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Seen: yes\r\n\r\n{}")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    pool = Connections(f"http://127.0.0.1:{port}")
    conn = pool.new_connection()
    assert conn.response_class is Answer
    pool.give_back(conn)
    assert pool.request("GET", "/api", None, {})[:2] == (200, b"{}")
    t.join(5)
    srv.close()
    pool.close()
