"""http.client's answers with their headers parsed without the email package, to the same message.

http.client hands every answer's header block to email's feed parser, which is general (MIME,
folded lines, defects) and slow: it was about 8 % of the operator's CPU while Triggers were
created, through the API server's answers (kube_http.py) and the providers' (transport.py). An
answer's headers are almost always plain `Name: value` lines; for those this builds the message the
feed parser would (tests/unit/test_http_answers.py compares both over a corpus of odd blocks). Any
other block (a folded line, a line without a colon, a bare CR, no blank line at the end, a
multipart or message Content-Type) still goes to the feed parser. http.client's own begin() runs
unchanged: only the parse_headers it calls differs, so the status line, the framing and the limits
on line length and header count are its own.
"""

from __future__ import annotations

import email.parser
import http.client
import re
import types
from typing import Any, BinaryIO

# A line the feed parser reads as one whole header: a name of printable ASCII without a colon (its
# headerRE), a colon, the value up to the line's end; nothing in it that would split it into two
# lines (its line reader splits at CR, LF and CRLF).
_PLAIN = re.compile(r"([\041-\071\073-\176]+):[ \t]*([^\r\n]*)\r?\n")
# A Content-Type that makes the email parser look for parts (multipart/*, message/*).
_NESTED = re.compile(r"multipart|message", re.IGNORECASE)


def parse_headers(fp: BinaryIO, _class: type[http.client.HTTPMessage] = http.client.HTTPMessage) -> Any:
    """http.client.parse_headers, to the same message."""
    lines = http.client._read_headers(fp)  # type: ignore[attr-defined]
    if lines[-1] in (b"\r\n", b"\n"):
        headers = []
        match = _PLAIN.fullmatch
        for line in lines[:-1]:
            m = match(line.decode("iso-8859-1"))
            if m is None:
                break
            if m[1].lower() == "content-type" and _NESTED.search(m[2]):
                break  # the email parser would read a body of parts into it
            # compat32's header_source_parse: the value without its leading blanks or line end.
            headers.append((m[1], m[2]))
        else:
            msg = _class()
            msg._headers = headers  # type: ignore[attr-defined]
            msg.set_payload("")  # what the feed parser leaves after the blank line
            return msg
    return email.parser.Parser(_class=_class).parsestr(b"".join(lines).decode("iso-8859-1"))


def _begin() -> Any:
    """HTTPResponse.begin with this module's parse_headers: the stdlib's own code object, run with a
    copy of http.client's globals where that one name differs (no copy of its source to keep in
    step, and nothing patched for anyone else)."""
    stock = http.client.HTTPResponse.begin
    if "parse_headers" not in stock.__code__.co_names or not hasattr(http.client, "_read_headers"):
        return stock  # a Python whose begin parses some other way keeps its own
    namespace = dict(vars(http.client), parse_headers=parse_headers)
    return types.FunctionType(
        stock.__code__, namespace, stock.__name__, stock.__defaults__, stock.__closure__
    )


class Answer(http.client.HTTPResponse):
    """http.client's HTTPResponse, its headers parsed by parse_headers above."""

    begin = _begin()
