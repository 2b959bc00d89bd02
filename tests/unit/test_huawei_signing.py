"""SDK-HMAC-SHA256: the vendor's test vector, and byte-for-byte equality with the official SDK's signer.

The reference function is huaweicloudsdkcore.signer.signer.Signer.sign, reached the way the SDK
reaches it: Credentials.sign_request adds X-Project-Id (BasicCredentials) and X-Security-Token
(temporary keys) and then signs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import quote

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from cloudtriggers.providers.base import USER_AGENT
from cloudtriggers.signing import huawei

# The published vector (API signing guide, reference section 8.4).
V_AK = "QTWAOYTTINDUT2QVKYUC"
V_SK = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"
V_URL = (
    "https://service.region.example.com/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs"
    "?limit=2&marker=13551d6b-755d-4757-b956-536f674975c0"
)
V_AUTH = (
    "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;x-sdk-date, "
    "Signature=7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"
)
V_CANONICAL_SHA256 = "b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"

AK = "HPUAQ1ZKCW4GXTRBMNLE"
SK = "kZ8mVq3rWc0Ny7XbT2aLsG5hJdF1eRuP9oIvKwE4"
PROJECT = "0b5c2f8e9d0a4c1b8e7f6a5d4c3b2a19"
TOKEN = "gQpjbi1ub3J0aC00" + "x" * 300  # temporary security tokens are long opaque strings
HOST = "swr-api.cn-north-4.myhuaweicloud.com"
DATE = "20240102T030405Z"
SDK_UA = "huaweicloud-usdk-python/3.0"


def test_vendor_vector_authorization() -> None:
    headers = huawei.sign(
        "GET", V_URL, {"Content-Type": "application/json", "X-Sdk-Date": "20191115T033655Z"}, b"", V_AK, V_SK
    )
    assert headers["Authorization"] == V_AUTH
    assert headers["Host"] == "service.region.example.com"  # added by the signer, and signed


def test_vendor_vector_canonical_request_hash() -> None:
    canonical = huawei.canonical_request(
        "GET",
        "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs",
        [("marker", "13551d6b-755d-4757-b956-536f674975c0"), ("limit", "2")],
        {
            "Content-Type": "application/json",
            "X-Sdk-Date": "20191115T033655Z",
            "Host": "service.region.example.com",
        },
        b"",
    )
    assert hashlib.sha256(canonical.encode()).hexdigest() == V_CANONICAL_SHA256
    # The signed path ends in '/' although the request path does not.
    assert canonical.split("\n")[1] == "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs/"
    assert canonical.split("\n")[-1] == huawei.EMPTY_SHA256


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/manage/namespaces/group/repos/web/triggers", "/v2/manage/namespaces/group/repos/web/triggers/"),
        ("/v2/x/", "/v2/x/"),
        ("/repos/team%24web/triggers", "/repos/team%24web/triggers/"),
        ("/repos/team$web/triggers", "/repos/team%24web/triggers/"),  # '$' sent raw still signs as %24
        ("/a%7Eb/c d", "/a~b/c%20d/"),
    ],
)
def test_canonical_uri(path: str, expected: str) -> None:
    assert huawei.canonical_uri(path) == expected


def test_headers_with_underscore_are_not_signed_and_body_is_covered() -> None:
    base = {"Content-Type": "application/json", "X-Sdk-Date": DATE, "x_custom": "v"}
    url = f"https://{HOST}/v2/manage/namespaces/g/repos/r/triggers"
    a = huawei.sign("POST", url, base, b'{"a": 1}', AK, SK)
    b = huawei.sign("POST", url, base, b'{"a": 2}', AK, SK)
    assert "x_custom" not in a["Authorization"]
    assert a["Authorization"] != b["Authorization"]


def test_parse_authorization_round_trip() -> None:
    parsed = huawei.parse_authorization(V_AUTH)
    assert parsed is not None
    assert parsed.access_key == V_AK
    assert parsed.signed_headers == ["content-type", "host", "x-sdk-date"]
    assert huawei.parse_authorization("Bearer abc") is None


# -- byte-for-byte against the SDK -----------------------------------------------------------------


def _path(repo: str, name: str | None = None) -> str:
    # What huaweicloudsdkcore.client._parse_path_params builds: quote(v, safe='') per parameter.
    p = f"/v2/manage/namespaces/{quote('group', safe='')}/repos/{quote(repo, safe='')}/triggers"
    return p if name is None else f"{p}/{quote(name, safe='')}"


CREATE_BODY = {
    "action": "update",
    "app_type": "deployments",
    "application": "web",
    "cluster_id": "5b28c12f-dc10-11e9-97b3-0255ac1001b5",
    "cluster_name": "prod",
    "cluster_ns": "default",
    "condition": ".*",
    "container": "",
    "enable": "true",
    "name": "All_tags",
    "trigger_mode": "cce",
    "trigger_type": "all",
}

OPERATIONS: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "create": ("POST", _path("team$web"), CREATE_BODY),
    "list": ("GET", _path("team$web"), None),
    "show": ("GET", _path("team$web", "All_tags"), None),
    "update": ("PATCH", _path("team$web", "All_tags"), {"enable": "false"}),
    "delete": ("DELETE", _path("web", "All_tags"), None),
}
CREDENTIALS = {
    "basic": (None, None),
    "project": (PROJECT, None),
    "temporary": (PROJECT, TOKEN),
    "temporary-no-project": (None, TOKEN),
}


def _sdk_sign(
    method: str, path: str, body: bytes, project: str | None, token: str | None, user_agent: str
) -> dict[str, str]:
    creds = BasicCredentials(AK, SK, project)
    if token:
        creds.with_security_token(token)
    req = SdkRequest(
        method=method,
        schema="https",
        host=HOST,
        resource_path=path,
        query_params=[],
        header_params={"Content-Type": "application/json", "User-Agent": user_agent, "X-Sdk-Date": DATE},
        body=body,
    )
    signed = creds.sign_request(req)
    assert signed.uri == path
    return dict(signed.header_params)


@pytest.mark.parametrize("cred", list(CREDENTIALS))
@pytest.mark.parametrize("op", list(OPERATIONS))
def test_matches_sdk_byte_for_byte(op: str, cred: str) -> None:
    method, path, body_obj = OPERATIONS[op]
    project, token = CREDENTIALS[cred]
    body = json.dumps(body_obj).encode() if body_obj is not None else b""
    for ua in (SDK_UA, USER_AGENT):
        expected = _sdk_sign(method, path, body, project, token, ua)
        ours = huawei.sign(
            method,
            f"https://{HOST}{path}",
            {"Content-Type": "application/json", "User-Agent": ua, "X-Sdk-Date": DATE},
            body,
            AK,
            SK,
            project_id=project,
            security_token=token,
        )
        assert ours == expected  # every header, Authorization included, byte for byte
    names = ours["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert ("x-project-id" in names) == (project is not None)
    assert ("x-security-token" in names) == (token is not None)


def test_create_with_temporary_credentials_signs_the_documented_header_set() -> None:
    method, path, body_obj = OPERATIONS["create"]
    headers = huawei.sign(
        method,
        f"https://{HOST}{path}",
        {"Content-Type": "application/json", "User-Agent": USER_AGENT},
        json.dumps(body_obj).encode(),
        AK,
        SK,
        project_id=PROJECT,
        security_token=TOKEN,
    )
    # Reference section 8.2: exactly these, for an SWR create with a security token.
    assert (
        "SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date;x-security-token,"
        in (headers["Authorization"])
    )
    assert huawei.parse_sdk_date(headers["X-Sdk-Date"])  # generated when absent


def test_query_string_matches_sdk_including_lists_and_booleans() -> None:
    query: list[tuple[str, Any]] = [("marker", "a b"), ("tags", ["z", "a~"]), ("all", True), ("limit", 2)]
    req = SdkRequest(
        method="GET",
        schema="https",
        host=HOST,
        resource_path="/v2/x",
        query_params=list(query),
        header_params={"Content-Type": "application/json", "X-Sdk-Date": DATE},
        body="",
    )
    Signer(BasicCredentials(AK, SK)).sign(req)
    assert huawei.canonical_query(query) == req.uri.split("?", 1)[1]
    headers = {"Content-Type": "application/json", "X-Sdk-Date": DATE}
    ours = huawei.sign("GET", f"https://{HOST}{req.uri}", headers, b"", AK, SK)
    assert ours["Authorization"] == req.header_params["Authorization"]


def test_host_header_drops_default_ports_only() -> None:
    assert huawei.host_header("https://h.example.com:443/x") == "h.example.com"
    assert huawei.host_header("http://127.0.0.1:8930") == "127.0.0.1:8930"
    assert huawei.host_header("http://h:80/") == "h"
