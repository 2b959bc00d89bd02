"""The ACK sandbox answers like the CS 2015-12-15 trigger API and STS described in providers-ack.md.

Its fidelity is proven with the official client (alibabacloud-cs20151215 on alibabacloud-tea-openapi):
create/describe/delete, AccessKey and STS credentials, and the SDK's own error types.
"""

from __future__ import annotations

import base64
import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from alibabacloud_cs20151215 import models as cs_models
from alibabacloud_cs20151215.client import Client as CsClient
from alibabacloud_tea_openapi.exceptions import ClientException, ThrottlingException
from alibabacloud_tea_openapi.models import Config

from cloudtriggers.sandbox.ack import AckAccount, AckSandbox, Faults
from cloudtriggers.signing import aliyun


@dataclass
class World:
    sb: AckSandbox
    alice: AckAccount
    bob: AckAccount
    cid: str  # alice's cluster
    bob_cid: str

    def sdk(self, ak: str, secret: str, token: str | None = None) -> CsClient:
        return CsClient(
            Config(
                access_key_id=ak,
                access_key_secret=secret,
                security_token=token,
                endpoint=self.sb.url.removeprefix("http://"),
                protocol="http",
                region_id="cn-beijing",
                read_timeout=5000,
                connect_timeout=2000,
            )
        )

    def call(
        self,
        method: str,
        path: str,
        action: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        account: AckAccount | None = None,
        token: str | None = None,
        tamper: dict[str, str] | None = None,
        **sign_kw: Any,
    ) -> requests.Response:
        """A hand-signed request, optionally with headers changed after signing."""
        acct = account or self.alice
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        headers = {
            "host": self.sb.url.removeprefix("http://"),
            "x-acs-version": "2015-12-15",
            "x-acs-action": action,
            "accept": "application/json",
        }
        if body is not None:
            headers["content-type"] = aliyun.JSON_CONTENT_TYPE
        ak = sign_kw.pop("ak", acct.access_key_id)
        secret = sign_kw.pop("secret", acct.access_key_secret)
        signed = aliyun.sign(method, path, query or {}, headers, data, ak, secret, token, **sign_kw)
        signed.update(tamper or {})
        return requests.request(
            method, self.sb.url + path, params=query, data=data or None, headers=signed, timeout=5
        )


@pytest.fixture
def world() -> Iterator[World]:
    with AckSandbox() as sb:
        alice = sb.add_account("alice")
        bob = sb.add_account("bob")
        cid = sb.add_cluster("alice", applications=("default/web", "default/api"))
        bob_cid = sb.add_cluster("bob")
        yield World(sb, alice, bob, cid, bob_cid)


def triggers_path(cid: str) -> str:
    return f"/clusters/{cid}/triggers"


def describe(w: World, name: str = "web", **kw: Any) -> requests.Response:
    q = {"Name": name, "Namespace": "default", **kw.pop("query", {})}
    return w.call("GET", triggers_path(w.cid), "DescribeTrigger", query=q, **kw)


def create(w: World, project: str = "default/web", **kw: Any) -> requests.Response:
    body = {"action": "redeploy", "cluster_id": w.cid, "project_id": project, "type": "deployment"}
    return w.call("POST", triggers_path(w.cid), "CreateTrigger", body=body, **kw)


def jwt_part(token: str, i: int) -> dict[str, Any]:
    seg = token.split(".")[i]
    return dict(json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))))


# -- the official client ---------------------------------------------------------------------------


def test_official_client_create_describe_delete(world: World) -> None:
    client = world.sdk(world.alice.access_key_id, world.alice.access_key_secret)
    created = client.create_trigger(
        world.cid,
        cs_models.CreateTriggerRequest(
            cluster_id=world.cid, project_id="default/web", action="redeploy", type="deployment"
        ),
    )
    assert created.status_code == 200
    assert created.body.to_map() == {
        "id": created.body.id,
        "cluster_id": world.cid,
        "project_id": "default/web",
        "type": "deployment",
        "action": "redeploy",
    }  # no token, no name: only DescribeTrigger shows them
    got = client.describe_trigger(
        world.cid,
        cs_models.DescribeTriggerRequest(
            name="web", namespace="default", type="deployment", action="redeploy"
        ),
    )
    [item] = got.body
    assert item.id == created.body.id and item.project_id == "default/web"
    assert item.token == world.sb.triggers(world.cid)[0]["token"]
    deleted = client.delete_trigger(world.cid, created.body.id)
    assert deleted.status_code == 200
    assert world.sb.triggers(world.cid) == []
    assert [c.action for c in world.sb.calls()] == ["CreateTrigger", "DescribeTrigger", "DeleteTrigger"]
    # The SDK signs accept, user-agent and x-acs-credentials-provider as well: all verified.
    assert "x-acs-credentials-provider" in world.sb.calls()[0].signed_headers


def test_official_client_with_sts_credentials(world: World) -> None:
    sts = world.sb.issue_sts("alice")
    client = world.sdk(sts.access_key_id, sts.access_key_secret, sts.security_token)
    client.create_trigger(
        world.cid,
        cs_models.CreateTriggerRequest(cluster_id=world.cid, project_id="default/api", action="redeploy"),
    )
    [rec] = world.sb.calls()
    assert rec.sts and rec.account == "alice" and rec.status == 200
    assert {"x-acs-security-token", "x-acs-accesskey-id"} <= set(rec.signed_headers)
    assert world.sb.triggers(world.cid)[0]["type"] == "deployment"  # the default type


def test_official_client_sees_signature_and_key_errors(world: World) -> None:
    req = cs_models.DescribeTriggerRequest(name="web", namespace="default")
    with pytest.raises(ClientException) as bad_sig:
        world.sdk(world.alice.access_key_id, "not-the-secret").describe_trigger(world.cid, req)
    assert bad_sig.value.code == "SignatureDoesNotMatch" and bad_sig.value.status_code == 400
    with pytest.raises(ClientException) as unknown:
        world.sdk("LTAI5tUnknownKey000", "x").describe_trigger(world.cid, req)
    assert unknown.value.code == "InvalidAccessKeyId.NotFound" and unknown.value.status_code == 404


def test_official_client_raises_throttling_with_retry_after_ms(world: World) -> None:
    world.sb.faults.retry_after_ms = 2500
    world.sb.fail_next(1, 400, "Throttling.User")
    client = world.sdk(world.alice.access_key_id, world.alice.access_key_secret)
    with pytest.raises(ThrottlingException) as exc:
        client.describe_trigger(world.cid, cs_models.DescribeTriggerRequest(name="web", namespace="default"))
    assert exc.value.code == "Throttling.User" and exc.value.retry_after == 2500


# -- signature verification --------------------------------------------------------------------------


def test_good_signature_is_accepted_and_recorded(world: World) -> None:
    r = create(world)
    assert r.status_code == 200, r.text
    assert r.headers["x-acs-request-id"]
    [rec] = world.sb.calls()
    assert (rec.method, rec.action, rec.status, rec.account, rec.sts) == (
        "POST",
        "CreateTrigger",
        200,
        "alice",
        False,
    )
    assert rec.code == ""


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        ({"x-acs-action": "DeleteTrigger"}, "SignatureDoesNotMatch"),
        ({"host": "cs.cn-beijing.aliyuncs.com"}, "SignatureDoesNotMatch"),
        ({"accept": "text/plain"}, "SignatureDoesNotMatch"),
    ],
)
def test_any_signed_header_changed_after_signing_is_signature_does_not_match(
    world: World, tamper: dict[str, str], code: str
) -> None:
    r = describe(world, tamper=tamper)
    assert r.status_code == 400
    body = r.json()
    # The gateway answers in PascalCase and tells its string to sign, as Alibaba does.
    assert body["Code"] == code
    assert body["Message"].startswith("Specified signature is not matched with our calculation.")
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}


def test_changed_query_or_body_is_rejected(world: World) -> None:
    data = b'{"action":"redeploy"}'
    headers = aliyun.sign(
        "GET",
        triggers_path(world.cid),
        {"Name": "web", "Namespace": "default"},
        {
            "host": world.sb.url.removeprefix("http://"),
            "x-acs-version": "2015-12-15",
            "x-acs-action": "DescribeTrigger",
        },
        b"",
        world.alice.access_key_id,
        world.alice.access_key_secret,
    )
    url = world.sb.url + triggers_path(world.cid)
    r = requests.get(url, params={"Name": "api", "Namespace": "default"}, headers=headers, timeout=5)
    assert r.json()["Code"] == "SignatureDoesNotMatch"
    r = requests.post(url, data=data, headers={**headers, "x-acs-action": "CreateTrigger"}, timeout=5)
    assert r.json()["Code"] == "SignatureDoesNotMatch"


def test_unsigned_acs_header_and_missing_authorization_are_incomplete(world: World) -> None:
    r = describe(world, tamper={"x-acs-extra": "1"})
    assert (r.status_code, r.json()["Code"]) == (400, "IncompleteSignature")
    assert "x-acs-extra" in r.json()["Message"]
    r = requests.get(
        world.sb.url + triggers_path(world.cid), params={"Name": "web", "Namespace": "default"}, timeout=5
    )
    assert (r.status_code, r.json()["Code"]) == (400, "IncompleteSignature")


def test_replayed_nonce_and_stale_date(world: World) -> None:
    assert describe(world, nonce="a" * 32).status_code == 200
    r = describe(world, nonce="a" * 32)
    assert r.json()["Code"] == "SignatureNonceUsed"
    r = describe(world, now=datetime.now(UTC) - timedelta(minutes=16))
    assert r.json()["Code"] == "InvalidTimeStamp.Expired"


def test_sts_token_must_match_and_not_be_expired(world: World) -> None:
    sts = world.sb.issue_sts("alice")
    kw = {"ak": sts.access_key_id, "secret": sts.access_key_secret}
    assert describe(world, token=sts.security_token, **kw).status_code == 200
    assert describe(world, **kw).json()["Code"] == "MissingSecurityToken"
    wrong = describe(world, token=sts.security_token + "x", **kw).json()["Code"]
    assert wrong == "InvalidSecurityToken.MismatchWithAccessKey"
    world.sb.expire_credentials(sts.access_key_id)
    assert describe(world, token=sts.security_token, **kw).json()["Code"] == "InvalidSecurityToken.Expired"
    # A static AccessKey with someone's token is not accepted either.
    assert (
        describe(world, token=sts.security_token).json()["Code"]
        == "InvalidSecurityToken.MismatchWithAccessKey"
    )


# -- the API's behaviour ---------------------------------------------------------------------------------


def test_create_answers_id_only_and_describe_shows_jwt_token(world: World) -> None:
    created = create(world).json()
    assert set(created) == {"id", "cluster_id", "project_id", "type", "action"}
    assert isinstance(created["id"], str)
    [item] = describe(world).json()
    assert set(item) == {"id", "name", "cluster_id", "project_id", "type", "action", "token"}
    assert jwt_part(item["token"], 0) == {"alg": "RS256", "typ": "JWT"}
    assert jwt_part(item["token"], 1) == {"clusterId": world.cid, "id": created["id"]}  # no exp
    assert len(item["token"].split(".")) == 3


def test_numeric_ids_mode_answers_a_number() -> None:
    with AckSandbox(numeric_ids=True) as sb:
        acct = sb.add_account("a")
        cid = sb.add_cluster("a")
        w = World(sb, acct, acct, cid, cid)
        assert isinstance(create(w).json()["id"], int)
        assert isinstance(describe(w).json()[0]["id"], str)


def test_describe_filters_by_application_type_and_lower_case_action(world: World) -> None:
    world.sb.create_trigger_as("alice", world.cid, "default/web")
    world.sb.create_trigger_as("alice", world.cid, "default/web", type="application")
    world.sb.create_trigger_as("alice", world.cid, "default/api")
    assert len(describe(world).json()) == 2
    assert [t["type"] for t in describe(world, query={"Type": "application"}).json()] == ["application"]
    assert len(describe(world, query={"action": "redeploy"}).json()) == 2
    assert describe(world, query={"action": "scale"}).json() == []
    # "Action" is not the parameter's name: ignored, so nothing is filtered.
    assert len(describe(world, query={"Action": "scale"}).json()) == 2
    assert describe(world, name="nothing").json() == []
    missing = world.call("GET", triggers_path(world.cid), "DescribeTrigger", query={"Name": "web"})
    assert (missing.status_code, missing.json()["code"]) == (400, "InvalidParameter")


def test_create_validates_body_and_application(world: World) -> None:
    r = create(world, project="default/missing")
    assert (r.status_code, r.json()["code"]) == (400, "InvalidParameter")
    assert set(r.json()) == {"code", "message", "requestId"}  # CS errors are lower camel case
    body = {"action": "scale", "cluster_id": world.cid, "project_id": "default/web"}
    r = world.call("POST", triggers_path(world.cid), "CreateTrigger", body=body)
    assert r.status_code == 400 and "action" in r.json()["message"]
    assert world.sb.triggers(world.cid) == []


def test_other_accounts_cluster_is_not_found_and_ram_denial_is_forbidden(world: World) -> None:
    r = world.call(
        "GET", triggers_path(world.bob_cid), "DescribeTrigger", query={"Name": "w", "Namespace": "d"}
    )
    assert (r.status_code, r.json()["code"]) == (404, "ErrorClusterNotFound")
    reader = world.sb.add_account("reader", actions={"DescribeTrigger"})
    world.sb.add_cluster("reader", "c-reader")
    r = world.call(
        "POST",
        "/clusters/c-reader/triggers",
        "CreateTrigger",
        body={"action": "redeploy", "cluster_id": "c-reader", "project_id": "default/web"},
        account=reader,
    )
    assert (r.status_code, r.json()["Code"]) == (403, "Forbidden.RAM")


def test_delete_removes_and_unknown_id_is_404(world: World) -> None:
    tid = create(world).json()["id"]
    r = world.call("DELETE", f"{triggers_path(world.cid)}/{tid}", "DeleteTrigger")
    assert r.status_code == 200
    r = world.call("DELETE", f"{triggers_path(world.cid)}/{tid}", "DeleteTrigger")
    assert r.status_code == 404 and r.json()["code"] == "ErrorTriggerNotFound"


def test_wrong_action_header_for_route_is_not_found(world: World) -> None:
    r = world.call("GET", triggers_path(world.cid), "CreateTrigger", query={"Name": "w", "Namespace": "d"})
    assert (r.status_code, r.json()["Code"]) == (404, "InvalidAction.NotFound")


def test_out_of_band_helpers(world: World) -> None:
    made = world.sb.create_trigger_as("alice", world.cid, "default/web")
    assert [t["id"] for t in world.sb.triggers(world.cid)] == [made["id"]]
    world.sb.delete_trigger(world.cid, made["id"])
    assert world.sb.triggers(world.cid) == []
    with pytest.raises(KeyError):
        world.sb.create_trigger_as("bob", world.cid, "default/web")
    world.sb.delete_cluster(world.cid)
    assert describe(world).json()["code"] == "ErrorClusterNotFound"


# -- faults -------------------------------------------------------------------------------------------


def test_throttle_is_pascal_case_with_retry_after_ms(world: World) -> None:
    world.sb.faults.configure(throttle_rate=1.0, retry_after_ms=750, throttle_status=429)
    r = describe(world)
    assert r.status_code == 429
    assert r.headers["x-acs-retry-after"] == "750"
    assert r.json()["Code"] == "Throttling.User"
    assert r.json()["Message"] == "Request was denied due to user flow control."


def test_fail_next_by_action_with_message(world: World) -> None:
    world.sb.fail_next(1, 500, action="DescribeTrigger", message="boom")
    assert create(world).status_code == 200  # not the targeted action: untouched
    r = describe(world)
    assert (r.status_code, r.json()["code"], r.json()["message"]) == (500, "InternalError", "boom")
    assert describe(world).status_code == 200


def test_error_rate_is_seeded_and_deterministic() -> None:
    def draws(seed: int) -> list[Any]:
        f = Faults(error_rate=0.5, seed=seed)
        return [f._draw() for _ in range(20)]

    assert draws(7) == draws(7)
    assert any(d is None for d in draws(7)) and any(d is not None for d in draws(7))
    assert {d[0] for d in draws(7) if d} <= {500, 502, 503}


def test_latency_is_added(world: World) -> None:
    world.sb.faults.latency = 0.2
    start = time.monotonic()
    describe(world)
    assert time.monotonic() - start >= 0.2


def test_drop_after_create_loses_the_answer_not_the_trigger(world: World) -> None:
    world.sb.faults.drop_after_create = 1
    with pytest.raises(requests.ConnectionError):
        create(world)
    assert len(world.sb.triggers(world.cid)) == 1
    [rec] = world.sb.calls()
    assert rec.dropped and rec.status == 200
    assert create(world).status_code == 200


def test_control_endpoint_sets_faults(world: World) -> None:
    r = requests.put(
        world.sb.url + "/-/sandbox/faults",
        json={"latency": 0.01, "fail_next": {"n": 1, "status": 503}},
        timeout=5,
    )
    assert r.json()["latency"] == 0.01 and r.json()["fail_next"][0]["code"] == "ServiceUnavailable"
    assert describe(world).status_code == 503
    assert requests.get(world.sb.url + "/-/health", timeout=5).status_code == 200
    assert world.sb.calls("GET", action="DescribeTrigger")[0].status == 503


def test_concurrent_creates_get_unique_ids(world: World) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        tid = create(world).json()["id"]
        with lock:
            ids.append(tid)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 8 == len(world.sb.triggers(world.cid))


# -- STS AssumeRoleWithOIDC ----------------------------------------------------------------------------

ROLE = "acs:ram::1234567890123401:role/cloudtriggers"
OIDC = "acs:ram::1234567890123401:oidc-provider/ack-rrsa-c1"


def assume(w: World, token: str, method: str = "POST", **over: str) -> requests.Response:
    params = {
        "Action": "AssumeRoleWithOIDC",
        "Format": "JSON",
        "Version": "2015-04-01",
        "RoleArn": ROLE,
        "OIDCProviderArn": OIDC,
        "OIDCToken": token,
        "RoleSessionName": "test",
        "DurationSeconds": "3600",
        **over,
    }
    if method == "GET":
        return requests.get(w.sb.url + "/", params=params, timeout=5)
    return requests.post(w.sb.url + "/", data=params, timeout=5)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_assume_role_with_oidc_gives_working_sts_credentials(world: World, method: str) -> None:
    world.sb.add_role(ROLE, OIDC, "alice")
    token = world.sb.oidc_token()
    r = assume(world, token, method)
    assert r.status_code == 200, r.text
    creds = r.json()["Credentials"]
    assert set(creds) == {"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"}
    expires = aliyun.parse_acs_date(creds["Expiration"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert r.json()["AssumedRoleUser"]["Arn"].endswith("assumed-role/cloudtriggers/test")
    ok = describe(
        world, ak=creds["AccessKeyId"], secret=creds["AccessKeySecret"], token=creds["SecurityToken"]
    )
    assert ok.status_code == 200
    rec = world.sb.calls(action="AssumeRoleWithOIDC")[0]
    assert rec.detail["RoleArn"] == ROLE and len(rec.detail["OIDCTokenSha256"]) == 64
    assert token not in json.dumps(rec.query) + json.dumps(rec.detail)  # never kept


def test_assume_role_with_oidc_rejections(world: World) -> None:
    world.sb.add_role(ROLE, OIDC, "alice")
    good = world.sb.oidc_token()
    assert assume(world, good, RoleArn=ROLE + "x").json()["Code"] == "EntityNotExist.Role"
    assert assume(world, good, OIDCProviderArn="other").json()["Code"] == "EntityNotExist.OIDCProvider"
    assert assume(world, "not-a-jwt").json()["Code"] == "InvalidParameter.OIDCToken"
    expired = world.sb.oidc_token(expires_in=-10)
    assert assume(world, expired).json()["Code"] == "AuthenticationFail.OIDCToken.Expired"
    wrong_aud = world.sb.oidc_token(audience="kubernetes")
    assert assume(world, wrong_aud).json()["Code"] == "AuthenticationFail.OIDCToken.InvalidAud"
    assert assume(world, good, DurationSeconds="600").json()["Code"] == "InvalidParameter.DurationSeconds"
    assert assume(world, good, RoleSessionName="").json()["Code"] == "MissingRoleSessionName"


# -- the per-account rate limit (flow control, reference section 5) ----------------------------------


def test_rate_limit_is_throttling_user_per_account_with_retry_after_ms(world: World) -> None:
    world.sb.faults.configure(rate_limit=2, rate_window=3600)
    assert describe(world).status_code == 200
    sts = world.sb.issue_sts("alice")  # another credential of the same account shares its quota
    assert describe(world, ak=sts.access_key_id, secret=sts.access_key_secret, token=sts.security_token).ok
    r = describe(world)
    assert r.status_code == 400  # CS answers Throttling.User with 400
    body = r.json()
    assert set(body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}  # the gateway's shape
    assert (body["Code"], body["Message"]) == (
        "Throttling.User",
        "Request was denied due to user flow control.",
    )
    left_ms = (math.floor(time.time() / 3600) + 1) * 3600_000 - time.time() * 1000
    assert abs(int(r.headers["x-acs-retry-after"]) - left_ms) < 1000  # milliseconds to the window's end
    assert (
        world.call(
            "GET",
            triggers_path(world.bob_cid),
            "DescribeTrigger",
            account=world.bob,
            query={"Name": "web", "Namespace": "default"},
        ).status_code
        != 400
    )
    assert (world.sb.faults.throttled("alice"), world.sb.faults.throttled("bob")) == (1, 0)
    world.sb.faults.throttle_status = 429  # some Alibaba products answer it with 429
    assert describe(world).status_code == 429 and world.sb.faults.throttled("alice") == 2


def test_official_client_raises_throttling_exception_on_the_rate_limit(world: World) -> None:
    world.sb.faults.configure(rate_limit=1, rate_window=3600)
    client = world.sdk(world.alice.access_key_id, world.alice.access_key_secret)
    req = cs_models.DescribeTriggerRequest(name="web", namespace="default")
    client.describe_trigger(world.cid, req)
    with pytest.raises(ThrottlingException) as exc:
        client.describe_trigger(world.cid, req)
    assert exc.value.code == "Throttling.User" and 0 < exc.value.retry_after <= 3600_000
