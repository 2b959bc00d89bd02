"""Huawei Cloud APIG request signing, SDK-HMAC-SHA256 (reference/providers-swr.md section 8).

Pure functions, standard library only: the SWR provider signs with them and the SWR sandbox verifies
with them. tests/unit/test_huawei_signing.py checks them byte for byte against
huaweicloudsdkcore.signer.signer.Signer.sign and the vendor's published test vector.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
HEADER_DATE = "X-Sdk-Date"
HEADER_CONTENT_SHA256 = "X-Sdk-Content-Sha256"
HEADER_PROJECT_ID = "X-Project-Id"
HEADER_SECURITY_TOKEN = "X-Security-Token"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

QueryValue = str | int | bool | list[str]

_AUTH_RE = re.compile(
    rf"^{ALGORITHM} Access=(?P<ak>[^,\s]+), SignedHeaders=(?P<headers>[^,\s]+), Signature=(?P<sig>[0-9a-f]+)$"
)


def sdk_date(now: datetime | None = None) -> str:
    """The X-Sdk-Date value: UTC, basic ISO 8601 ("20191115T033655Z")."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime(DATE_FORMAT)


def parse_sdk_date(value: str) -> datetime:
    return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)


def _encode(text: str) -> str:
    # RFC 3986 unreserved characters stay; everything else is %XX (so '$' is signed as %24).
    return quote(text, safe="~")


def canonical_uri(path: str) -> str:
    """Each segment unquoted then re-quoted, and always a trailing '/' (".../vpcs" signs as ".../vpcs/")."""
    uri = "/".join(_encode(seg) for seg in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(params: Iterable[tuple[str, QueryValue]]) -> str:
    """Sorted "k=v" pairs joined by '&'; list values sorted and repeated; booleans as true/false."""
    out: list[str] = []
    for key, value in sorted(params, key=lambda kv: (kv[0], str(kv[1]))):
        k = _encode(key)
        if isinstance(value, list):
            out.extend(f"{k}={_encode(str(v))}" for v in sorted(value))
        elif isinstance(value, bool):
            out.append(f"{k}={_encode(str(value).lower())}")
        else:
            out.append(f"{k}={_encode(str(value))}")
    return "&".join(out)


def signed_header_names(headers: Mapping[str, str]) -> list[str]:
    """Every header is signed except those whose name contains '_' (sorted, lower case)."""
    return sorted({name.lower() for name in headers if "_" not in name})


def canonical_headers(headers: Mapping[str, str], names: Iterable[str]) -> str:
    """ "name:value\\n" per signed header, values stripped; a missing header signs as empty."""
    lower = {k.lower(): str(v).strip() for k, v in headers.items()}
    return "\n".join(f"{name}:{lower.get(name, '')}" for name in names) + "\n"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


def payload_hash(body: bytes, headers: Mapping[str, str]) -> str:
    if not body:
        return EMPTY_SHA256
    declared = _header(headers, HEADER_CONTENT_SHA256)
    if declared:
        return declared  # UNSIGNED-PAYLOAD for bodies that are not JSON or BSON
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, QueryValue]],
    headers: Mapping[str, str],
    body: bytes,
    names: list[str] | None = None,
) -> str:
    names = signed_header_names(headers) if names is None else names
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            canonical_headers(headers, names),  # ends in "\n": an empty line precedes the names
            ";".join(names),
            payload_hash(body, headers),
        ]
    )


def string_to_sign(canonical: str, date: str) -> str:
    return f"{ALGORITHM}\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def signature(secret_key: str, to_sign: str) -> str:
    return hmac.new(secret_key.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def authorization(access_key: str, names: list[str], sig: str) -> str:
    # ", " between the parts (Alibaba's ACS3 uses ",").
    return f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(names)}, Signature={sig}"


@dataclass(frozen=True)
class ParsedAuthorization:
    access_key: str
    signed_headers: list[str]
    signature: str


def parse_authorization(value: str) -> ParsedAuthorization | None:
    """The parts of an Authorization header, or None when it is not SDK-HMAC-SHA256."""
    m = _AUTH_RE.match(value.strip())
    if m is None:
        return None
    return ParsedAuthorization(m["ak"], m["headers"].split(";"), m["sig"])


def host_header(url: str) -> str:
    """host[:port] as sent in Host: the port only when it is not the scheme's default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    access_key: str,
    secret_key: str,
    *,
    project_id: str | None = None,
    security_token: str | None = None,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers to send for this request: `headers` plus Host, X-Sdk-Date, X-Project-Id and
    X-Security-Token when given, and Authorization. Every one of them is signed.

    `url` is the exact URL sent (path already percent-encoded, e.g. ``repos/group%24app``); its
    query string is signed too. Header values are sent stripped, as they are signed.
    """
    out = {k: str(v).strip() for k, v in headers.items()}
    if _header(out, "Host") is None:
        out["Host"] = host_header(url)
    if _header(out, HEADER_DATE) is None:
        out[HEADER_DATE] = sdk_date(now)
    if project_id:
        out[HEADER_PROJECT_ID] = project_id
    if security_token:
        out[HEADER_SECURITY_TOKEN] = security_token
    parts = urlsplit(url)
    query = [(unquote(k), unquote(v)) for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)]
    names = signed_header_names(out)
    canonical = canonical_request(method, parts.path or "/", query, out, body, names)
    date = _header(out, HEADER_DATE) or ""
    out["Authorization"] = authorization(
        access_key, names, signature(secret_key, string_to_sign(canonical, date))
    )
    return out


def verify(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    body: bytes,
    secret_key: str,
    parsed: ParsedAuthorization,
) -> bool:
    """Server side: recompute the signature over the headers the client says it signed."""
    date = _header(headers, HEADER_DATE) or ""
    canonical = canonical_request(method, path, query, headers, body, parsed.signed_headers)
    expected = signature(secret_key, string_to_sign(canonical, date))
    return hmac.compare_digest(expected, parsed.signature)
