"""The SWR sandbox answers like the SWR v2 trigger API and its gateway (providers-swr.md).

Fidelity is proven by the official client: huaweicloudsdkswr drives all five operations against it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkswr.v2 import (
    CreateTriggerRequest,
    CreateTriggerRequestBody,
    DeleteTriggerRequest,
    ListTriggersDetailsRequest,
    ShowTriggerRequest,
    SwrClient,
    UpdateTriggerRequest,
    UpdateTriggerRequestBody,
)

from cloudtriggers.sandbox.swr import SwrAccount, SwrSandbox, SwrTemporaryCredentials
from cloudtriggers.signing import huawei

BASE = "/v2/manage/namespaces/group/repos"


@dataclass
class World:
    sb: SwrSandbox
    alice: SwrAccount
    reader: SwrAccount


@pytest.fixture
def world() -> Iterator[World]:
    with SwrSandbox() as sb:
        alice = sb.add_account("alice")
        reader = sb.add_account("reader", read_only=True)
        sb.add_repository("group", "web")
        sb.add_repository("group", "team/api")
        yield World(sb, alice, reader)


def call(
    sb: SwrSandbox,
    cred: SwrAccount | SwrTemporaryCredentials,
    method: str,
    path: str,
    body: Any = None,
    *,
    sk: str | None = None,
    project: str | None = None,
    token: str | None = None,
    extra: dict[str, str] | None = None,
) -> requests.Response:
    """A hand-signed request (the signer itself is proven against the SDK in test_huawei_signing)."""
    data = json.dumps(body).encode() if body is not None else b""
    url = sb.url + path
    headers = huawei.sign(
        method,
        url,
        {"Content-Type": "application/json", **(extra or {})},
        data,
        cred.access_key,
        sk or cred.secret_key,
        project_id=project,
        security_token=token,
    )
    return requests.request(method, url, data=data or None, headers=headers, timeout=5)


def trigger_body(name: str = "web", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "action": "update",
        "app_type": "deployments",
        "application": "web",
        "cluster_id": "",
        "cluster_name": "prod",
        "cluster_ns": "default",
        "condition": ".*",
        "container": "",
        "enable": "true",
        "name": name,
        "trigger_mode": "cce",
        "trigger_type": "all",
    }
    body.update(over)
    return body


# ---- the official client


def sdk(sb: SwrSandbox, ak: str, sk: str, project: str, token: str | None = None) -> SwrClient:
    creds = BasicCredentials(ak, sk, project)  # a project id: no IAM lookup
    if token:
        creds.with_security_token(token)
    return SwrClient.new_builder().with_credentials(creds).with_endpoint(sb.url).build()


@pytest.mark.parametrize("temporary", [False, True])
def test_official_client_drives_all_five_operations(world: World, temporary: bool) -> None:
    a = world.alice
    if temporary:
        t = world.sb.add_temporary_credentials("alice")
        client = sdk(world.sb, t.access_key, t.secret_key, a.project_id, t.security_token)
    else:
        client = sdk(world.sb, a.access_key, a.secret_key, a.project_id)
    repo = "team$api"  # the SDK does not replace '/' itself (reference section 4)
    body = CreateTriggerRequestBody(
        action="update",
        app_type="deployments",
        application="api",
        cluster_ns="default",
        cluster_name="prod",
        condition="v1;v2",
        enable="true",
        name="Tags_regular_expression",
        trigger_type="tag",
    )
    created = client.create_trigger(CreateTriggerRequest(namespace="group", repository=repo, body=body))
    assert created.status_code == 201

    listed = client.list_triggers_details(ListTriggersDetailsRequest(namespace="group", repository=repo))
    assert [t.name for t in listed.body] == ["Tags_regular_expression"]
    assert listed.body[0].trigger_history is None  # null in lists, as in the doc's example

    shown = client.show_trigger(
        ShowTriggerRequest(namespace="group", repository=repo, trigger="Tags_regular_expression")
    )
    got = (shown.enable, shown.condition, shown.trigger_mode, shown.creator_name)
    assert got == ("true", "v1;v2", "cce", "alice")

    updated = client.update_trigger(
        UpdateTriggerRequest(
            namespace="group",
            repository=repo,
            trigger="Tags_regular_expression",
            body=UpdateTriggerRequestBody(enable="false"),
        )
    )
    assert updated.status_code == 201
    assert world.sb.trigger("group", "team/api", "Tags_regular_expression")["enable"] == "false"  # type: ignore[index]

    deleted = client.delete_trigger(
        DeleteTriggerRequest(namespace="group", repository=repo, trigger="Tags_regular_expression")
    )
    assert deleted.status_code == 204
    assert world.sb.triggers("group", "team/api") == []
    calls = world.sb.calls()
    assert [c.status for c in calls] == [201, 200, 200, 201, 204]
    assert all(c.path.startswith(f"{BASE}/team%24api/triggers") for c in calls)
    assert all(c.headers.get("x-project-id") == a.project_id for c in calls)
    assert all(("x-security-token" in c.headers) == temporary for c in calls)


def test_official_client_sees_errors_with_their_codes(world: World) -> None:
    a = world.alice
    client = sdk(world.sb, a.access_key, a.secret_key, a.project_id)
    with pytest.raises(ClientRequestException) as err:
        client.show_trigger(ShowTriggerRequest(namespace="group", repository="web", trigger="nope"))
    assert err.value.status_code == 404
    bad = sdk(world.sb, a.access_key, "x" * 40, a.project_id)
    with pytest.raises(ClientRequestException) as err:
        bad.list_triggers_details(ListTriggersDetailsRequest(namespace="group", repository="web"))
    assert (err.value.status_code, err.value.error_code) == (401, "APIG.0301")


# ---- signatures and the lock-out


def test_bad_signature_is_apig_0301_in_gateway_shape(world: World) -> None:
    r = call(world.sb, world.alice, "GET", f"{BASE}/web/triggers", sk="y" * 40)
    assert r.status_code == 401
    body = r.json()
    assert body["error_code"] == "APIG.0301" and "verify aksk signature fail" in body["error_msg"]
    assert body["request_id"] and r.headers["X-Request-Id"]
    assert world.sb.auth_failures(world.alice.access_key) == 1


def test_tampered_body_fails_verification(world: World) -> None:
    data = json.dumps(trigger_body()).encode()
    url = world.sb.url + f"{BASE}/web/triggers"
    a = world.alice
    headers = huawei.sign("POST", url, {"Content-Type": "application/json"}, data, a.access_key, a.secret_key)
    r = requests.post(url, data=data.replace(b"prod", b"prud"), headers=headers, timeout=5)
    assert r.status_code == 401 and world.sb.triggers("group", "web") == []


def test_five_failures_lock_the_key_for_five_minutes(world: World) -> None:
    a = world.alice
    for _ in range(4):
        assert call(world.sb, a, "GET", f"{BASE}/web/triggers", sk="y" * 40).status_code == 401
    assert not world.sb.locked(a.access_key)
    assert call(world.sb, a, "GET", f"{BASE}/web/triggers", sk="y" * 40).status_code == 401
    assert world.sb.locked(a.access_key)
    # Locked: even a correct signature is refused...
    r = call(world.sb, a, "GET", f"{BASE}/web/triggers")
    assert r.status_code == 401 and "locked" in r.json()["error_msg"]
    world.sb.advance(299)
    assert call(world.sb, a, "GET", f"{BASE}/web/triggers").status_code == 401
    # ...until five minutes have passed.
    world.sb.advance(2)
    assert call(world.sb, a, "GET", f"{BASE}/web/triggers").status_code == 200


def test_a_success_resets_the_consecutive_count(world: World) -> None:
    a = world.alice
    for _ in range(4):
        call(world.sb, a, "GET", f"{BASE}/web/triggers", sk="y" * 40)
    assert call(world.sb, a, "GET", f"{BASE}/web/triggers").status_code == 200
    assert world.sb.auth_failures(a.access_key) == 0
    for _ in range(4):
        call(world.sb, a, "GET", f"{BASE}/web/triggers", sk="y" * 40)
    assert not world.sb.locked(a.access_key)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("stale-date", "expired"),
        ("unknown-key", "does not exist"),
        ("wrong-project", "X-Project-Id"),
        ("unsigned-date", "X-Sdk-Date is not signed"),
    ],
)
def test_other_authentication_failures(world: World, kind: str, reason: str) -> None:
    a = world.alice
    path = f"{BASE}/web/triggers"
    if kind == "stale-date":
        r = call(world.sb, a, "GET", path, extra={"X-Sdk-Date": "20200101T000000Z"})
    elif kind == "unknown-key":
        ghost = SwrAccount("ghost", "GHOSTKEY000000000000", "s" * 40, "p")
        r = call(world.sb, ghost, "GET", path)
    elif kind == "wrong-project":
        r = call(world.sb, a, "GET", path, project="not-my-project")
    else:
        url = world.sb.url + path
        headers = huawei.sign("GET", url, {}, b"", a.access_key, a.secret_key)
        auth = headers["Authorization"].replace("x-sdk-date", "x-nothing")
        r = requests.get(url, headers={**headers, "Authorization": auth}, timeout=5)
    assert r.status_code == 401 and r.json()["error_code"] == "APIG.0301"
    assert reason in r.json()["error_msg"]


def test_temporary_credentials_need_their_token_and_expire(world: World) -> None:
    t = world.sb.add_temporary_credentials("alice", expires_in=60)
    path = f"{BASE}/web/triggers"
    assert call(world.sb, t, "GET", path, token=t.security_token).status_code == 200
    r = call(world.sb, t, "GET", path)
    assert r.status_code == 401 and "security token" in r.json()["error_msg"]
    world.sb.advance(61)
    r = call(world.sb, t, "GET", path, token=t.security_token)
    assert r.status_code == 401 and "expired" in r.json()["error_msg"]
    assert world.sb.calls()[0].headers["x-security-token"] == "[REDACTED]"


# ---- the operations


def test_create_is_201_without_body_and_enable_stays_a_string(world: World) -> None:
    r = call(world.sb, world.alice, "POST", f"{BASE}/web/triggers", trigger_body(enable="false"))
    assert r.status_code == 201 and r.content == b""
    shown = call(world.sb, world.alice, "GET", f"{BASE}/web/triggers/web").json()
    assert shown["enable"] == "false" and shown["trigger_history"] == []
    assert shown["creator_name"] == "alice" and shown["created_at"].endswith("Z")
    r = call(world.sb, world.alice, "POST", f"{BASE}/web/triggers", trigger_body("other", enable=True))
    assert r.status_code == 400 and isinstance(r.json(), list)  # old SWR shape
    assert "enable must be a string" in r.json()[0]["detail"]


def test_duplicate_name_is_409(world: World) -> None:
    assert call(world.sb, world.alice, "POST", f"{BASE}/web/triggers", trigger_body()).status_code == 201
    r = call(world.sb, world.alice, "POST", f"{BASE}/web/triggers", trigger_body())
    assert r.status_code == 409 and r.json()[0]["errorMessage"] == "Trigger already exists"


@pytest.mark.parametrize("name", ["1abc", "a--b", "a-_b", "abc_", "-abc", "a b", "a" * 65, "a.b"])
def test_name_rules_reject(world: World, name: str) -> None:
    r = call(world.sb, world.alice, "POST", f"{BASE}/web/triggers", trigger_body(name))
    assert r.status_code == 400 and "invalid trigger name" in r.json()[0]["detail"]


@pytest.mark.parametrize("name", ["All_tags", "Tags_regular_expression", "a", "a-1_b", "A" * 64])
def test_name_rules_accept(world: World, name: str) -> None:
    assert call(world.sb, world.alice, "POST", f"{BASE}/web/triggers", trigger_body(name)).status_code == 201


def test_patch_changes_only_enable_and_answers_201(world: World) -> None:
    world.sb.create_trigger("group", "web", "web", condition=".*")
    body = {"enable": "false", "condition": "x"}
    r = call(world.sb, world.alice, "PATCH", f"{BASE}/web/triggers/web", body)
    assert r.status_code == 201 and r.content == b""
    t = world.sb.trigger("group", "web", "web")
    assert t is not None and t["enable"] == "false" and t["condition"] == ".*"
    r = call(world.sb, world.alice, "PATCH", f"{BASE}/web/triggers/web", {"enable": False})
    assert r.status_code == 400


def test_delete_is_204_then_404(world: World) -> None:
    world.sb.create_trigger("group", "web", "web")
    assert call(world.sb, world.alice, "DELETE", f"{BASE}/web/triggers/web").status_code == 204
    r = call(world.sb, world.alice, "DELETE", f"{BASE}/web/triggers/web")
    assert r.status_code == 404 and r.json()[0]["errorMessage"] == "Trigger not found"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v2/manage/namespaces/nobody/repos/web/triggers", "Namespace not found"),
        (f"{BASE}/nothing/triggers", "Repository not found"),
        (f"{BASE}/web/triggers/nothing", "Trigger not found"),
    ],
)
def test_not_found_in_old_array_shape(world: World, path: str, message: str) -> None:
    r = call(world.sb, world.alice, "GET", path)
    assert r.status_code == 404 and r.json()[0]["errorMessage"] == message


def test_slash_in_repository_only_as_dollar(world: World) -> None:
    world.sb.create_trigger("group", "team/api", "api")
    assert call(world.sb, world.alice, "GET", f"{BASE}/team%24api/triggers/api").status_code == 200
    assert call(world.sb, world.alice, "GET", f"{BASE}/team$api/triggers/api").status_code == 200
    r = call(world.sb, world.alice, "GET", f"{BASE}/team%2Fapi/triggers/api")
    assert r.status_code == 404 and r.json()["error_code"] == "APIG.0101"


def test_read_only_account_gets_403_in_new_shape(world: World) -> None:
    assert call(world.sb, world.reader, "GET", f"{BASE}/web/triggers").status_code == 200
    r = call(world.sb, world.reader, "POST", f"{BASE}/web/triggers", trigger_body())
    body = r.json()
    assert r.status_code == 403
    assert body["error_code"] == body["errors"][0]["errorCode"] == "SVCSTG.SWR.4030170"
    assert body["error_msg"] == "Insufficient permissions"


def test_cci_triggers_have_blank_cluster_fields(world: World) -> None:
    body = trigger_body(trigger_mode="cci", cluster_id="c1", cluster_name="prod")
    assert call(world.sb, world.alice, "POST", f"{BASE}/web/triggers", body).status_code == 201
    t = world.sb.trigger("group", "web", "web")
    assert t is not None and (t["cluster_id"], t["cluster_name"]) == ("", "")


def test_push_records_history_for_matching_enabled_triggers(world: World) -> None:
    world.sb.create_trigger("group", "web", "all")
    world.sb.create_trigger("group", "web", "tags", trigger_type="tag", condition="v1;v2")
    world.sb.create_trigger("group", "web", "off", enable="false")
    assert world.sb.push("group", "web", "v2") == ["all", "tags"]
    assert world.sb.push("group", "web", "v3") == ["all"]
    history = world.sb.trigger("group", "web", "tags")["trigger_history"]  # type: ignore[index]
    assert [h["tag"] for h in history] == ["v2"] and history[0]["result"] == "success"


# ---- faults


def test_throttle_is_429_apig_0308(world: World) -> None:
    world.sb.faults.throttle_rate = 1.0
    r = call(world.sb, world.alice, "GET", f"{BASE}/web/triggers")
    assert r.status_code == 429 and r.json()["error_code"] == "APIG.0308"
    assert "Retry-After" not in r.headers
    world.sb.faults.retry_after = 3
    assert call(world.sb, world.alice, "GET", f"{BASE}/web/triggers").headers["Retry-After"] == "3"


def test_drop_after_create_creates_but_never_answers(world: World) -> None:
    world.sb.faults.drop_after_create = 1
    with pytest.raises(requests.ConnectionError):
        call(world.sb, world.alice, "POST", f"{BASE}/web/triggers", trigger_body())
    assert [t["name"] for t in world.sb.triggers("group", "web")] == ["web"]
    assert world.sb.calls("POST")[0].dropped


def test_fail_next_and_error_rate_and_latency(world: World) -> None:
    world.sb.fail_next(1, 503)
    r = call(world.sb, world.alice, "GET", f"{BASE}/web/triggers")
    assert r.status_code == 503 and r.json()[0]["errorCode"] == "SVCSTG.SWR.5000001"
    custom = {"error_code": "SVCSTG.SWR.4000001", "error_msg": "custom"}
    world.sb.fail_next(1, 400, custom)
    assert call(world.sb, world.alice, "GET", f"{BASE}/web/triggers").json() == custom
    world.sb.faults.configure(error_rate=1.0, seed=7)
    assert call(world.sb, world.alice, "GET", f"{BASE}/web/triggers").status_code in (500, 502, 503)
    world.sb.reset_faults()
    world.sb.faults.latency = 0.2
    r = call(world.sb, world.alice, "GET", f"{BASE}/web/triggers")
    assert r.status_code == 200 and r.elapsed.total_seconds() >= 0.2


def test_faults_come_after_authentication(world: World) -> None:
    world.sb.fail_next(1, 503)
    assert call(world.sb, world.alice, "GET", f"{BASE}/web/triggers", sk="y" * 40).status_code == 401
    assert call(world.sb, world.alice, "GET", f"{BASE}/web/triggers").status_code == 503


def test_control_endpoint_sets_faults(world: World) -> None:
    r = requests.put(world.sb.url + "/-/sandbox/faults", json={"throttle_rate": 1.0}, timeout=5)
    assert r.status_code == 200 and r.json()["throttle_rate"] == 1.0
    assert call(world.sb, world.alice, "GET", f"{BASE}/web/triggers").status_code == 429
    assert requests.get(world.sb.url + "/-/health", timeout=5).status_code == 200


# ---- the per-user rate limit (the gateway's flow control, reference section 7)


def test_rate_limit_is_429_apig_0308_naming_the_limit(world: World) -> None:
    world.sb.faults.configure(rate_limit=2, rate_window=3600)
    assert call(world.sb, world.alice, "GET", f"{BASE}/web/triggers").status_code == 200
    temp = world.sb.add_temporary_credentials("alice")  # the same user: one count
    assert call(world.sb, temp, "GET", f"{BASE}/web/triggers", token=temp.security_token).status_code == 200
    r = call(world.sb, world.alice, "GET", f"{BASE}/web/triggers")
    assert r.status_code == 429 and "Retry-After" not in r.headers  # the gateway documents none
    body = r.json()
    assert set(body) == {"error_code", "error_msg", "request_id"}  # the APIG shape
    assert body["error_code"] == "APIG.0308"
    assert body["error_msg"] == (
        "The throttling threshold has been reached: policy user over ratelimit,limit:2,time:1 hour"
    )
    assert call(world.sb, world.reader, "GET", f"{BASE}/web/triggers").status_code == 200  # another user
    assert (world.sb.faults.throttled("alice"), world.sb.faults.throttled("reader")) == (1, 0)
    # Authentication comes first: a bad signature is APIG.0301 and counts against nobody.
    assert call(world.sb, world.alice, "GET", f"{BASE}/web/triggers", sk="y" * 40).status_code == 401
    assert world.sb.faults.throttled("alice") == 1


def test_rate_limit_message_is_the_references_for_a_one_second_policy(world: World) -> None:
    world.sb.faults.configure(rate_limit=1, rate_window=1.0)
    statuses = [call(world.sb, world.alice, "GET", f"{BASE}/web/triggers") for _ in range(3)]
    throttled = [r for r in statuses if r.status_code == 429]
    assert throttled, "3 requests cannot fit two one-second windows of 1"
    assert throttled[0].json()["error_msg"].endswith("policy user over ratelimit,limit:1,time:1 second")


def test_official_client_sees_apig_0308(world: World) -> None:
    world.sb.faults.configure(rate_limit=1, rate_window=3600)
    a = world.alice
    client = sdk(world.sb, a.access_key, a.secret_key, a.project_id)
    client.list_triggers_details(ListTriggersDetailsRequest(namespace="group", repository="web"))
    with pytest.raises(ClientRequestException) as err:
        client.list_triggers_details(ListTriggersDetailsRequest(namespace="group", repository="web"))
    # The SDK retries 429s with urllib3 (retry_times, default 0) and reports the exhausted retry as a
    # bare 429: it never reads the body (reference section 7).
    assert err.value.status_code == 429
