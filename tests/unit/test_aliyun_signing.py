"""ACS3-HMAC-SHA256: the vendor's test vector, and byte-for-byte equality with the official SDK function.

The reference implementation is alibabacloud_tea_openapi.utils.Utils.get_authorization (0.4.6), which the
SDK's do_request calls with the request's method, pathname, query and complete header dictionary.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from alibabacloud_tea_openapi.utils import Utils

from cloudtriggers.providers.base import USER_AGENT
from cloudtriggers.signing import aliyun

AK, SECRET = "LTAI5tExampleKeyId0001", "ExampleSecret/with+chars=="
STS_AK, STS_SECRET = "STS.NTexample0001", "StsSecret0001"
STS_TOKEN = "CAIS" + "x" * 300
CLUSTER = "c5cdf7e3938bc4f8eb0e44b21a80f1234"
NOW = datetime(2026, 11, 22, 18, 37, 54, tzinfo=UTC)
NONCE = "3156853299f313e23d1673dc12e1703d"


@dataclass
class SdkRequest:
    """Duck-typed like darabonba's request: what get_authorization reads."""

    method: str
    pathname: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def sdk_authorization(
    method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes, ak: str, secret: str
) -> str:
    payload = Utils.hash(body, aliyun.ALGORITHM).hex()
    assert headers["x-acs-content-sha256"] == payload
    unsigned = {k: v for k, v in headers.items() if k != "authorization"}
    req = SdkRequest(method, path, dict(query), unsigned)
    return str(Utils.get_authorization(req, aliyun.ALGORITHM, payload, ak, secret))


# -- the published vector -------------------------------------------------------------------------


VECTOR_QUERY = {"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd", "RegionId": "cn-shanghai"}
VECTOR_HEADERS = {
    "host": "ecs.cn-shanghai.aliyuncs.com",
    "x-acs-action": "RunInstances",
    "x-acs-version": "2014-05-26",
    "x-acs-date": "2023-10-26T10:22:32Z",
    "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d",
    "x-acs-content-sha256": aliyun.EMPTY_SHA256,
}


def test_published_vector_hashed_canonical_request_and_signature() -> None:
    canonical = aliyun.canonical_request("POST", "/", VECTOR_QUERY, VECTOR_HEADERS, aliyun.EMPTY_SHA256)
    assert (
        hashlib.sha256(canonical.encode()).hexdigest()
        == "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
    )
    auth = aliyun.authorization(
        "POST",
        "/",
        VECTOR_QUERY,
        VECTOR_HEADERS,
        aliyun.EMPTY_SHA256,
        "YourAccessKeyId",
        "YourAccessKeySecret",
    )
    assert auth == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,"
        "SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
        "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    )


def test_published_vector_through_the_sdk_function_too() -> None:
    req = SdkRequest("POST", "/", dict(VECTOR_QUERY), dict(VECTOR_HEADERS))
    sdk = Utils.get_authorization(
        req, aliyun.ALGORITHM, aliyun.EMPTY_SHA256, "YourAccessKeyId", "YourAccessKeySecret"
    )
    assert sdk.endswith("Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0")


# -- the three trigger calls, byte for byte against the SDK -----------------------------------------


def _base_headers(action: str, body: bool) -> dict[str, str]:
    # The header set our provider sends (same names and order as the SDK's do_request).
    headers = {
        "host": "cs.cn-beijing.aliyuncs.com",
        "x-acs-version": "2015-12-15",
        "x-acs-action": action,
        "user-agent": USER_AGENT,
        "accept": "application/json",
    }
    if body:
        headers["content-type"] = aliyun.JSON_CONTENT_TYPE
    return headers


def _create_body() -> bytes:
    body = {
        "action": "redeploy",
        "cluster_id": CLUSTER,
        "project_id": "default/web-server",
        "type": "deployment",
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


CALLS: list[tuple[str, str, str, dict[str, str], bytes]] = [
    ("CreateTrigger", "POST", f"/clusters/{CLUSTER}/triggers", {}, _create_body()),
    (
        "DescribeTrigger",
        "GET",
        f"/clusters/{CLUSTER}/triggers",
        {"Name": "web-server", "Namespace": "default", "Type": "deployment", "action": "redeploy"},
        b"",
    ),
    ("DeleteTrigger", "DELETE", f"/clusters/{CLUSTER}/triggers/759734974860001", {}, b""),
]


@pytest.mark.parametrize("sts", [False, True], ids=["accesskey", "sts"])
@pytest.mark.parametrize("call", CALLS, ids=[c[0] for c in CALLS])
def test_trigger_calls_match_the_sdk_byte_for_byte(
    call: tuple[str, str, str, dict[str, str], bytes], sts: bool
) -> None:
    action, method, path, query, body = call
    ak, secret, token = (STS_AK, STS_SECRET, STS_TOKEN) if sts else (AK, SECRET, None)
    signed = aliyun.sign(
        method, path, query, _base_headers(action, bool(body)), body, ak, secret, token, now=NOW, nonce=NONCE
    )
    ours = signed["authorization"]
    assert ours == sdk_authorization(method, path, query, signed, body, ak, secret)
    assert ours.startswith(f"ACS3-HMAC-SHA256 Credential={ak},SignedHeaders=")
    names = aliyun.parse_authorization(ours).signed_headers
    if sts:
        # STS: the token and the key id travel in signed headers; Credential= is the STS key id.
        assert signed["x-acs-security-token"] == STS_TOKEN and signed["x-acs-accesskey-id"] == STS_AK
        assert {"x-acs-security-token", "x-acs-accesskey-id"} <= set(names)
    else:
        assert not any(n in names for n in ("x-acs-security-token", "x-acs-accesskey-id"))
    assert ("content-type" in names) == bool(body)
    assert signed["x-acs-date"] == "2026-11-22T18:37:54Z"
    assert signed["x-acs-content-sha256"] == hashlib.sha256(body).hexdigest()


def test_describe_query_sorts_mixed_case_keys_with_action_last() -> None:
    query = {"action": "redeploy", "Type": "deployment", "Namespace": "default", "Name": "web"}
    assert aliyun.canonical_query(query) == "Name=web&Namespace=default&Type=deployment&action=redeploy"


def test_the_sdk_header_set_matches_too() -> None:
    """The SDK also signs x-acs-credentials-provider; fed the same dictionary, we agree with it."""
    headers = {**_base_headers("DescribeTrigger", False), "x-acs-credentials-provider": "static_sts"}
    query = {"Name": "web", "Namespace": "default"}
    signed = aliyun.sign(
        "GET", f"/clusters/{CLUSTER}/triggers", query, headers, b"", STS_AK, STS_SECRET, STS_TOKEN
    )
    assert signed["authorization"] == sdk_authorization(
        "GET", f"/clusters/{CLUSTER}/triggers", query, signed, b"", STS_AK, STS_SECRET
    )
    assert aliyun.parse_authorization(signed["authorization"]).signed_headers == (
        "accept",
        "host",
        "user-agent",
        "x-acs-accesskey-id",
        "x-acs-action",
        "x-acs-content-sha256",
        "x-acs-credentials-provider",
        "x-acs-date",
        "x-acs-security-token",
        "x-acs-signature-nonce",
        "x-acs-version",
    )


@pytest.mark.parametrize(
    "value",
    ["a b", "tilde~star*plus+", "ünïcode/slash", "semi;colon&amp=eq", "  padded  "],
)
def test_awkward_query_values_and_header_whitespace_match_the_sdk(value: str) -> None:
    query = {"Name": value, "Namespace": "default", "Empty": "", "zeta": "1"}
    headers = {**_base_headers("DescribeTrigger", False), "x-acs-custom": f"  {value}  "}
    signed = aliyun.sign(
        "GET", "/clusters/c%2F1/triggers", query, headers, b"", AK, SECRET, now=NOW, nonce=NONCE
    )
    assert signed["authorization"] == sdk_authorization(
        "GET", "/clusters/c%2F1/triggers", query, signed, b"", AK, SECRET
    )


def test_non_ascii_json_body_hash_matches_the_sdk() -> None:
    body = json.dumps({"project_id": "默认/web"}, ensure_ascii=False, separators=(",", ":")).encode()
    headers = _base_headers("CreateTrigger", True)
    signed = aliyun.sign("POST", "/clusters/c1/triggers", {}, headers, body, AK, SECRET, now=NOW, nonce=NONCE)
    assert signed["x-acs-content-sha256"] == Utils.hash(body, aliyun.ALGORITHM).hex()
    assert signed["authorization"] == sdk_authorization(
        "POST", "/clusters/c1/triggers", {}, signed, body, AK, SECRET
    )


def test_none_values_are_left_out_like_the_sdk() -> None:
    query: dict[str, Any] = {"Name": "web", "Type": None}
    headers: dict[str, Any] = {"host": "h", "x-skip": None}
    assert aliyun.canonical_query(query) == "Name=web"
    assert aliyun.canonical_headers(headers) == ("host:h\n", "host")


def test_a_different_secret_or_header_changes_the_signature() -> None:
    args = ("GET", "/", {"Name": "web"}, _base_headers("DescribeTrigger", False), b"")
    a = aliyun.sign(*args, AK, SECRET, now=NOW, nonce=NONCE)["authorization"]
    b = aliyun.sign(*args, AK, SECRET + "x", now=NOW, nonce=NONCE)["authorization"]
    c = aliyun.sign(*args, AK, SECRET, now=NOW, nonce="0" * 32)["authorization"]
    assert len({a, b, c}) == 3


def test_nonce_is_32_hex_and_fresh() -> None:
    nonces = {aliyun.new_nonce() for _ in range(100)}
    assert len(nonces) == 100 and all(len(n) == 32 and int(n, 16) >= 0 for n in nonces)


def test_parse_authorization_round_trip_and_rejects_other_schemes() -> None:
    signed = aliyun.sign("GET", "/", {}, {"host": "h", "x-acs-action": "A"}, b"", AK, SECRET)
    parsed = aliyun.parse_authorization(signed["authorization"])
    assert parsed.access_key_id == AK
    assert parsed.signed_headers[0] == "host"
    assert len(parsed.signature) == 64
    for bad in ("acs AK:c2ln", f"ACS3-HMAC-SHA256 Credential={AK}, SignedHeaders=host, Signature=ab", ""):
        with pytest.raises(ValueError):
            aliyun.parse_authorization(bad)


def test_acs_date_round_trip() -> None:
    assert aliyun.parse_acs_date(aliyun.acs_date(NOW)) == NOW
