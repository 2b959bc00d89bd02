"""Alibaba Cloud V3 request signing, ACS3-HMAC-SHA256 (reference/providers-ack.md section 7).

Pure functions, standard library only: the ACK provider signs with them and the ACK sandbox verifies
with them. tests/unit/test_aliyun_signing.py checks them against the vendor's published test vector and
byte for byte against alibabacloud_tea_openapi.utils.Utils.get_authorization.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

ALGORITHM = "ACS3-HMAC-SHA256"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"

_AUTH_RE = re.compile(
    rf"^(?P<alg>{ALGORITHM}) Credential=(?P<ak>[^,\s]+),SignedHeaders=(?P<headers>[^,\s]*),"
    r"Signature=(?P<sig>[0-9a-f]{64})$"
)


def acs_date(now: datetime | None = None) -> str:
    """The x-acs-date value: UTC, ISO 8601 to the second ("2023-10-26T10:22:32Z")."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime(DATE_FORMAT)


def parse_acs_date(value: str) -> datetime:
    return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)


def new_nonce() -> str:
    """x-acs-signature-nonce: 32 hex characters, unique per request (the server rejects a replay)."""
    return secrets.token_hex(16)


def hashed_payload(body: bytes) -> str:
    """Lower-hex SHA-256 of the exact body bytes; also sent as x-acs-content-sha256."""
    return hashlib.sha256(body).hexdigest()


def percent_encode(value: str) -> str:
    """RFC 3986 encoding of a path segment or query value, as the SDK does (space = %20, '~' kept)."""
    return quote(value, safe="~")


def canonical_query(query: Mapping[str, str | None]) -> str:
    # Keys are not encoded and sort by plain code point: Name, Namespace, Type, then lower-case action.
    keys = sorted(k for k, v in query.items() if v is not None)
    return "&".join(f"{k}={percent_encode(str(query[k]))}" for k in keys)


def canonical_headers(headers: Mapping[str, str | None]) -> tuple[str, str]:
    """(canonical header block, SignedHeaders): every header given, names lower-cased and sorted.

    Names that differ only in case are one header; their values are sorted and joined with ','.
    """
    values: dict[str, list[str]] = {}
    for name, value in headers.items():
        if value is not None:
            values.setdefault(name.lower(), []).append(str(value).strip())
    names = sorted(values)
    block = "".join(f"{n}:{','.join(sorted(values[n]))}\n" for n in names)
    return block, ";".join(names)


def canonical_request(
    method: str,
    pathname: str,
    query: Mapping[str, str | None],
    headers: Mapping[str, str | None],
    payload_hash: str,
) -> str:
    """`pathname` as sent on the wire (path parameters already percent-encoded)."""
    block, signed = canonical_headers(headers)
    return f"{method.upper()}\n{pathname or '/'}\n{canonical_query(query)}\n{block}\n{signed}\n{payload_hash}"


def string_to_sign(canonical: str) -> str:
    return f"{ALGORITHM}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"


def signature(access_key_secret: str, to_sign: str) -> str:
    return hmac.new(access_key_secret.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization(
    method: str,
    pathname: str,
    query: Mapping[str, str | None],
    headers: Mapping[str, str | None],
    payload_hash: str,
    access_key_id: str,
    access_key_secret: str,
) -> str:
    """The Authorization header over exactly `headers` (which must hold x-acs-content-sha256 already)."""
    _, signed = canonical_headers(headers)
    canonical = canonical_request(method, pathname, query, headers, payload_hash)
    sig = signature(access_key_secret, string_to_sign(canonical))
    # Parts are joined by "," with no space (Huawei's SDK-HMAC-SHA256 uses ", ").
    return f"{ALGORITHM} Credential={access_key_id},SignedHeaders={signed},Signature={sig}"


def sign(
    method: str,
    pathname: str,
    query: Mapping[str, str | None],
    headers: Mapping[str, str],
    body: bytes,
    access_key_id: str,
    access_key_secret: str,
    security_token: str | None = None,
    *,
    now: datetime | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """`headers` plus the V3 headers and Authorization, every header signed, as the SDK's do_request.

    `headers` should already carry host, x-acs-action, x-acs-version and whatever else goes on the
    wire that the server may check (accept, user-agent, content-type for a body).
    """
    out = {k.lower(): v for k, v in headers.items()}
    out["x-acs-date"] = acs_date(now)
    out["x-acs-signature-nonce"] = nonce or new_nonce()
    payload = hashed_payload(body)
    out["x-acs-content-sha256"] = payload
    if security_token:
        # STS: the token travels in a signed header; Credential= still names the STS AccessKey id.
        out["x-acs-accesskey-id"] = access_key_id
        out["x-acs-security-token"] = security_token
    out["authorization"] = authorization(
        method, pathname, query, out, payload, access_key_id, access_key_secret
    )
    return out


@dataclass(frozen=True)
class ParsedAuthorization:
    access_key_id: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> ParsedAuthorization:
    """Split an ACS3-HMAC-SHA256 Authorization header; ValueError when it is not one."""
    m = _AUTH_RE.match(value.strip())
    if m is None:
        raise ValueError("not an ACS3-HMAC-SHA256 Authorization header")
    names = tuple(n for n in m.group("headers").split(";") if n)
    return ParsedAuthorization(m.group("ak"), names, m.group("sig"))
