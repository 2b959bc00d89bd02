"""The ACK provider against the ACK sandbox: calls, ids, error classes, throttling, timeouts, credentials."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from cloudtriggers.models import AckSpec
from cloudtriggers.providers.ack import (
    HOOK_URL,
    RRSA_MARKER,
    AckProvider,
    _error_fields,
    _sts_endpoint,
    classify,
    trigger_id,
)
from cloudtriggers.providers.base import (
    USER_AGENT,
    AccountLimiter,
    CredentialsError,
    ErrorClass,
    ProviderError,
    Target,
)
from cloudtriggers.sandbox import LOOPBACK
from cloudtriggers.sandbox.ack import AckAccount, AckSandbox

ROLE = "acs:ram::1234567890123401:role/cloudtriggers"
OIDC = "acs:ram::1234567890123401:oidc-provider/ack-rrsa-c1"
SINCE = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class World:
    sb: AckSandbox
    alice: AckAccount
    cid: str
    provider: AckProvider
    limiter: AccountLimiter
    tmp: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def block(self, **over: Any) -> AckSpec:
        data = {
            "regionId": "cn-beijing",
            "clusterId": self.cid,
            "projectId": "default/web",
            "endpoint": self.sb.url,
        }
        return AckSpec.model_validate({**data, **over})

    def target(
        self, creds: dict[str, str] | None = None, known: dict[str, Any] | None = None, **over: Any
    ) -> Target:
        if creds is None:
            creds = {"accessKeyId": self.alice.access_key_id, "accessKeySecret": self.alice.access_key_secret}
        return Target("apps", "web", "uid-1", self.block(**over), creds, known or {})


def make_provider(**kw: Any) -> tuple[AckProvider, AccountLimiter]:
    limiter = AccountLimiter(rate=1000, burst=1000)
    kw.setdefault("environ", {})
    return AckProvider(policy=LOOPBACK, limiter=limiter, timeout=(2.0, 5.0), **kw), limiter


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with AckSandbox() as sb:
        alice = sb.add_account("alice")
        cid = sb.add_cluster("alice", applications=("default/web", "default/api"))
        provider, limiter = make_provider()
        yield World(sb, alice, cid, provider, limiter, tmp_path)


# -- endpoints and identity ------------------------------------------------------------------------


def test_endpoints_regional_vpc_central_and_override() -> None:
    public, _ = make_provider()
    vpc, _ = make_provider(network="vpc")
    from_env, _ = make_provider(environ={"CLOUDTRIGGERS_ACK_NETWORK": "vpc"})
    spec = AckSpec.model_validate({"regionId": "cn-hangzhou", "clusterId": "c1", "projectId": "default/web"})
    assert public.endpoint(spec) == "https://cs.cn-hangzhou.aliyuncs.com"
    assert vpc.endpoint(spec) == from_env.endpoint(spec) == "https://cs-vpc.cn-hangzhou.aliyuncs.com"
    central = spec.model_copy(update={"region_id": "cn-zhangbei"})
    assert vpc.endpoint(central) == "https://cs.aliyuncs.com"  # the SDK's endpoint map wins over network
    override = spec.model_copy(update={"endpoint": "http://127.0.0.1:9/"})
    assert vpc.endpoint(override) == "http://127.0.0.1:9"
    with pytest.raises(ValueError):
        make_provider(environ={"CLOUDTRIGGERS_ACK_NETWORK": "intranet"})


def test_claim_key_is_the_same_for_public_and_vpc_endpoints() -> None:
    public, _ = make_provider()
    vpc, _ = make_provider(network="vpc")
    spec = AckSpec.model_validate({"regionId": "cn-beijing", "clusterId": "c1", "projectId": "default/web"})
    assert (
        public.claim_key(spec, {}, "7")
        == vpc.claim_key(spec, {}, "7")
        == "ack|cs.cn-beijing.aliyuncs.com|c1|7"
    )
    assert public.claim_key(spec, {"clusterId": "c9"}, "7").endswith("|c9|7")  # the recorded cluster first


def test_desired_and_trigger_ids() -> None:
    provider, _ = make_provider()
    spec = AckSpec.model_validate(
        {"regionId": "cn-beijing", "clusterId": "c1", "projectId": "ns/app", "type": "application"}
    )
    target = Target("apps", "web", "u", spec, {})
    assert provider.desired(target) == {"projectId": "ns/app", "type": "application", "action": "redeploy"}
    assert trigger_id(111) == trigger_id("111") == "111"
    assert trigger_id(True) is None and trigger_id("") is None and trigger_id(None) is None


# -- the calls -------------------------------------------------------------------------------------


def test_create_reads_token_from_describe_and_returns_outputs(world: World) -> None:
    obs = world.provider.create(world.target())
    [server] = world.sb.triggers(world.cid)
    assert obs.external_id == server["id"]
    assert obs.token == server["token"]
    assert obs.outputs == {"token": server["token"], "url": HOOK_URL + server["token"]}
    assert obs.outputs["url"].startswith("https://cs.console.aliyun.com/hook/trigger?token=eyJ")
    assert obs.fields == {"projectId": "default/web", "type": "deployment", "action": "redeploy"}
    assert obs.at_provider == {
        "regionId": "cn-beijing",
        "clusterId": world.cid,
        "projectId": "default/web",
        "type": "deployment",
        "action": "redeploy",
        "name": "web",
    }
    assert server["token"] not in json.dumps(obs.at_provider)
    create, describe = world.sb.calls()
    assert (create.method, create.path, create.action) == (
        "POST",
        f"/clusters/{world.cid}/triggers",
        "CreateTrigger",
    )
    assert describe.action == "DescribeTrigger"
    assert describe.query == {
        "Name": "web",
        "Namespace": "default",
        "Type": "deployment",
        "action": "redeploy",
    }
    assert create.user_agent == USER_AGENT and describe.user_agent == USER_AGENT
    assert {"host", "content-type", "x-acs-content-sha256", "x-acs-date"} <= set(create.signed_headers)


def test_numeric_ids_from_create_are_handled() -> None:
    with AckSandbox(numeric_ids=True) as sb:
        acct = sb.add_account("a")
        cid = sb.add_cluster("a")
        provider, limiter = make_provider()
        w = World(sb, acct, cid, provider, limiter, Path("."))
        obs = provider.create(w.target())
        assert obs.external_id == sb.triggers(cid)[0]["id"]
        assert provider.observe(w.target(), obs.external_id) is not None


def test_observe_filters_by_id_and_reads_where_it_was_made(world: World) -> None:
    first = world.provider.create(world.target())
    world.provider.create(world.target())
    assert world.provider.observe(world.target(), first.external_id).external_id == first.external_id  # type: ignore[union-attr]
    assert world.provider.observe(world.target(), "999") is None
    # After a projectId change the spec names the new application; the old trigger is found
    # through what was recorded when it was created.
    moved = world.target(projectId="default/api", known=first.at_provider)
    assert world.provider.observe(moved, first.external_id) is not None
    assert world.provider.observe(world.target(projectId="default/api"), first.external_id) is None


def test_find_matches_project_type_and_action(world: World) -> None:
    a = world.sb.create_trigger_as("alice", world.cid, "default/web")
    world.sb.create_trigger_as("alice", world.cid, "default/web", type="application")
    world.sb.create_trigger_as("alice", world.cid, "default/api")
    b = world.sb.create_trigger_as("alice", world.cid, "default/web")
    found = world.provider.find(world.target(), SINCE)
    assert [o.external_id for o in found] == [a["id"], b["id"]]
    assert all(o.outputs for o in found)


def test_delete_and_not_found_counts_as_deleted(world: World) -> None:
    obs = world.provider.create(world.target())
    world.provider.delete(world.target(), obs.external_id)
    assert world.sb.triggers(world.cid) == []
    world.provider.delete(world.target(), obs.external_id)  # 404: already gone
    assert [c.status for c in world.sb.calls("DELETE")] == [200, 404]


def test_delete_uses_the_recorded_cluster_and_a_gone_cluster_counts_as_deleted(world: World) -> None:
    obs = world.provider.create(world.target())
    world.sb.delete_cluster(world.cid)
    world.provider.delete(world.target(known=obs.at_provider), obs.external_id)


def test_delete_refused_while_trigger_still_exists_raises(world: World) -> None:
    obs = world.provider.create(world.target())
    world.sb.fail_next(1, 400, "ErrorTriggerInUse", action="DeleteTrigger")
    with pytest.raises(ProviderError) as exc:
        world.provider.delete(world.target(), obs.external_id)
    assert exc.value.kind is ErrorClass.PERMANENT and exc.value.code == "ErrorTriggerInUse"
    assert len(world.sb.triggers(world.cid)) == 1


def test_update_is_never_possible(world: World) -> None:
    obs = world.provider.create(world.target())
    assert world.provider.in_place == frozenset() and world.provider.replace_order == "create_first"
    with pytest.raises(ProviderError) as exc:
        world.provider.update(world.target(), obs, ["projectId"])
    assert exc.value.kind is ErrorClass.PERMANENT


# -- errors -------------------------------------------------------------------------------------------


def test_bad_secret_and_unknown_key_are_auth(world: World) -> None:
    bad = world.target({"accessKeyId": world.alice.access_key_id, "accessKeySecret": "wrong-secret-value"})
    with pytest.raises(ProviderError) as exc:
        world.provider.observe(bad, "1")
    assert exc.value.kind is ErrorClass.AUTH and exc.value.code == "SignatureDoesNotMatch"
    assert exc.value.reason == "CredentialsInvalid"
    assert "wrong-secret-value" not in str(exc.value)
    unknown = world.target({"accessKeyId": "LTAI5tNobody", "accessKeySecret": "x" * 10})
    with pytest.raises(ProviderError) as exc:
        world.provider.observe(unknown, "1")
    assert (exc.value.kind, exc.value.code, exc.value.status) == (
        ErrorClass.AUTH,
        "InvalidAccessKeyId.NotFound",
        404,
    )


def test_sts_token_from_the_secret_is_signed_and_expiry_is_auth(world: World) -> None:
    sts = world.sb.issue_sts("alice")
    creds = {
        "accessKeyId": sts.access_key_id,
        "accessKeySecret": sts.access_key_secret,
        "securityToken": sts.security_token,
    }
    world.provider.create(world.target(creds))
    rec = world.sb.calls("POST")[0]
    assert rec.sts and rec.status == 200 and "x-acs-security-token" in rec.signed_headers
    world.sb.expire_credentials(sts.access_key_id)
    with pytest.raises(ProviderError) as exc:
        world.provider.find(world.target(creds), SINCE)
    assert (exc.value.kind, exc.value.code) == (ErrorClass.AUTH, "InvalidSecurityToken.Expired")
    assert sts.security_token not in str(exc.value)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (403, "Forbidden.RAM", ErrorClass.FORBIDDEN),
        (403, "NoPermission", ErrorClass.FORBIDDEN),
        (403, "ErrorCheckAcl", ErrorClass.FORBIDDEN),
        (404, "ErrorClusterNotFound", ErrorClass.TARGET_NOT_FOUND),
        (500, "InternalError", ErrorClass.TRANSIENT),
        (503, "ServiceUnavailable", ErrorClass.TRANSIENT),
        (400, "InvalidParameter", ErrorClass.PERMANENT),
        (400, "ErrorClusterState", ErrorClass.PERMANENT),
        (404, "InvalidAction.NotFound", ErrorClass.PERMANENT),
        (400, "Throttling.User", ErrorClass.THROTTLED),
        (429, "Throttling", ErrorClass.THROTTLED),
        (400, "Rejected.Throttling", ErrorClass.THROTTLED),
        (400, "InvalidSecurityToken.Malformed", ErrorClass.AUTH),
        (403, "Forbidden.AccessKeyDisabled", ErrorClass.AUTH),
    ],
)
def test_error_classes_on_read(world: World, status: int, code: str, kind: ErrorClass) -> None:
    world.sb.faults.retry_after_ms = 10
    world.sb.fail_next(1, status, code)
    with pytest.raises(ProviderError) as exc:
        world.provider.find(world.target(), SINCE)
    assert (exc.value.kind, exc.value.code, exc.value.status) == (kind, code, status)
    assert exc.value.message.startswith(f"DescribeTrigger {status}: ")
    assert "RequestId" in exc.value.message


def test_5xx_on_create_is_ambiguous(world: World) -> None:
    world.sb.fail_next(1, 500, action="CreateTrigger")
    with pytest.raises(ProviderError) as exc:
        world.provider.create(world.target())
    assert exc.value.kind is ErrorClass.AMBIGUOUS


def test_real_answers_map_to_classes(world: World) -> None:
    with pytest.raises(ProviderError) as exc:
        world.provider.create(world.target(projectId="default/missing"))
    assert (exc.value.kind, exc.value.code) == (ErrorClass.PERMANENT, "InvalidParameter")
    assert "default/missing" in exc.value.message
    with pytest.raises(ProviderError) as exc:
        world.provider.find(world.target(clusterId="c-unknown"), SINCE)
    assert (exc.value.kind, exc.value.reason) == (ErrorClass.TARGET_NOT_FOUND, "TargetNotFound")
    reader = world.sb.add_account("reader", actions={"DescribeTrigger"})
    cid = world.sb.add_cluster("reader")
    creds = {"accessKeyId": reader.access_key_id, "accessKeySecret": reader.access_key_secret}
    with pytest.raises(ProviderError) as exc:
        world.provider.create(world.target(creds, clusterId=cid))
    assert (exc.value.kind, exc.value.code) == (ErrorClass.FORBIDDEN, "Forbidden.RAM")


def test_both_error_body_casings_and_xml(world: World) -> None:
    assert classify(400, "", create=False, retry_after=True) is ErrorClass.THROTTLED
    world.sb.fail_next(1, 400, "InvalidParameter", message="lower camel case body")  # {code, message}
    world.sb.fail_next(1, 400, "Throttling.User", message="PascalCase body")  # {Code, Message}
    for expected in ("lower camel case body", "PascalCase body"):
        with pytest.raises(ProviderError) as exc:
            world.provider.find(world.target(), SINCE)
        assert expected in exc.value.message and exc.value.code
    xml = requests.Response()
    xml.status_code = 400
    xml.headers["content-type"] = "text/xml;charset=utf-8"
    xml._content = b"<Error><RequestId>R1</RequestId><Code>Throttling.Api</Code><Message>m</Message></Error>"
    assert _error_fields(xml, None) == ("Throttling.Api", "m", "R1")


def test_secrets_and_tokens_are_redacted_from_messages(world: World) -> None:
    made = world.sb.create_trigger_as("alice", world.cid, "default/web")
    echo = f"echo {world.alice.access_key_secret} and {made['token']}"
    world.sb.fail_next(1, 400, "InvalidParameter", message=echo)
    with pytest.raises(ProviderError) as exc:
        world.provider.find(world.target(), SINCE)
    assert world.alice.access_key_secret not in str(exc.value)
    assert made["token"] not in str(exc.value)
    assert "***" in str(exc.value)


def test_throttled_honours_x_acs_retry_after_milliseconds(world: World) -> None:
    world.sb.faults.retry_after_ms = 300
    world.sb.fail_next(1, 400, "Throttling.User")
    with pytest.raises(ProviderError) as exc:
        world.provider.find(world.target(), SINCE)
    assert (exc.value.kind, exc.value.retry_after, exc.value.reason) == (
        ErrorClass.THROTTLED,
        0.3,
        "Throttled",
    )
    # The account's limiter now holds every call of this account for that long.
    start = time.monotonic()
    world.provider.find(world.target(), SINCE)
    assert 0.25 <= time.monotonic() - start < 1.0
    assert world.limiter.waited_seconds >= 0.25


def test_retry_after_is_capped_like_the_sdk(world: World) -> None:
    world.sb.faults.retry_after_ms = 600_000
    world.sb.fail_next(1, 429, "Throttling.User")
    with pytest.raises(ProviderError) as exc:
        world.provider.find(world.target(), SINCE)
    assert exc.value.retry_after == 120.0


def test_read_timeout_is_transient_and_create_timeout_ambiguous(world: World) -> None:
    provider = AckProvider(policy=LOOPBACK, limiter=world.limiter, timeout=(1.0, 0.2), environ={})
    world.sb.faults.latency = 0.5
    with pytest.raises(ProviderError) as exc:
        provider.find(world.target(), SINCE)
    assert exc.value.kind is ErrorClass.TRANSIENT and "ReadTimeout" in exc.value.message
    with pytest.raises(ProviderError) as exc:
        provider.create(world.target())
    assert exc.value.kind is ErrorClass.AMBIGUOUS
    time.sleep(0.4)
    assert len(world.sb.triggers(world.cid)) == 1  # the timed-out create did happen


def test_lost_create_answer_is_ambiguous_and_findable(world: World) -> None:
    world.sb.faults.drop_after_create = 1
    with pytest.raises(ProviderError) as exc:
        world.provider.create(world.target())
    assert exc.value.kind is ErrorClass.AMBIGUOUS
    [found] = world.provider.find(world.target(), SINCE)
    assert found.external_id == world.sb.triggers(world.cid)[0]["id"]


def test_failed_describe_after_create_is_ambiguous(world: World) -> None:
    world.sb.faults.retry_after_ms = 50
    world.sb.fail_next(1, 400, "Throttling.User", action="DescribeTrigger")
    with pytest.raises(ProviderError) as exc:
        world.provider.create(world.target())
    assert exc.value.kind is ErrorClass.AMBIGUOUS and exc.value.retry_after == 0.05
    assert "created trigger" in exc.value.message
    assert len(world.sb.triggers(world.cid)) == 1


def test_refused_connection_is_transient_even_for_create(world: World) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ProviderError) as exc:
        world.provider.create(world.target(endpoint=f"http://127.0.0.1:{port}"))
    assert exc.value.kind is ErrorClass.TRANSIENT  # never sent: certainly not created


def test_missing_keys_are_credentials_error(world: World) -> None:
    with pytest.raises(CredentialsError):
        world.provider.find(world.target({"accessKeyId": "x"}), SINCE)


# -- RRSA -------------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def rrsa_world(world: World, **env: str) -> tuple[AckProvider, Clock, Path]:
    world.sb.add_role(ROLE, OIDC, "alice")
    token_file = world.tmp / "token"
    token_file.write_text(world.sb.oidc_token())
    environ = {
        "ALIBABA_CLOUD_ROLE_ARN": ROLE,
        "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": OIDC,
        "ALIBABA_CLOUD_OIDC_TOKEN_FILE": str(token_file),
        "ALIBABA_CLOUD_STS_ENDPOINT": world.sb.url,
        "CLOUDTRIGGERS_ACK_TRUSTED_ENDPOINTS": f"https://other.example, {world.sb.url}/",
        **env,
    }
    clock = Clock()
    provider = AckProvider(
        policy=LOOPBACK, limiter=world.limiter, timeout=(2.0, 5.0), environ=environ, clock=clock
    )
    return provider, clock, token_file


def test_ambient_credentials_only_with_all_three_variables(world: World) -> None:
    provider, _, _ = rrsa_world(world)
    assert provider.ambient_credentials(world.block()) == dict(RRSA_MARKER)
    partial, _ = make_provider(
        environ={"ALIBABA_CLOUD_ROLE_ARN": ROLE, "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": OIDC}
    )
    assert partial.ambient_credentials(world.block()) is None


def test_rrsa_fetches_sts_credentials_caches_and_refreshes_before_expiry(world: World) -> None:
    provider, clock, token_file = rrsa_world(world)
    target = world.target(dict(RRSA_MARKER))
    provider.create(target)
    [sts] = world.sb.calls(action="AssumeRoleWithOIDC")
    assert sts.method == "POST" and sts.status == 200 and sts.detail["RoleArn"] == ROLE
    assert "OIDCToken" not in sts.query  # in the form body, never in the URL
    create = world.sb.calls(action="CreateTrigger")[0]
    assert create.sts and create.account == "alice" and create.access_key_id.startswith("STS.")  # type: ignore[union-attr]
    # Cached: 44 minutes later (of a 60-minute lifetime) no new STS call.
    clock.now += 44 * 60
    provider.find(target, SINCE)
    assert len(world.sb.calls(action="AssumeRoleWithOIDC")) == 1
    # Within 15 minutes of expiry: refreshed, with the token file read again (ACK rotates it).
    token_file.write_text(world.sb.oidc_token(subject="system:serviceaccount:x:rotated"))
    clock.now += 2 * 60
    provider.find(target, SINCE)
    first, second = world.sb.calls(action="AssumeRoleWithOIDC")
    assert first.detail["OIDCTokenSha256"] != second.detail["OIDCTokenSha256"]
    later = world.sb.calls(action="DescribeTrigger")[-1]
    assert later.access_key_id != create.access_key_id
    assert provider.rrsa is not None and provider.rrsa.fetches == 2


def test_rrsa_failed_refresh_keeps_valid_credentials(world: World) -> None:
    provider, clock, token_file = rrsa_world(world)
    target = world.target(dict(RRSA_MARKER))
    provider.find(target, SINCE)
    token_file.write_text("")  # the refresh will fail
    clock.now += 50 * 60
    provider.find(target, SINCE)  # still valid for 10 minutes: used
    clock.now += 11 * 60
    with pytest.raises(CredentialsError) as exc:
        provider.find(target, SINCE)
    assert "is empty" in str(exc.value)


def test_rrsa_rejected_cached_token_is_fetched_again_once(world: World) -> None:
    provider, _, _ = rrsa_world(world)
    target = world.target(dict(RRSA_MARKER))
    provider.find(target, SINCE)
    first = world.sb.calls(action="DescribeTrigger")[0].access_key_id
    world.sb.expire_credentials(first)  # type: ignore[arg-type]
    provider.find(target, SINCE)
    assert len(world.sb.calls(action="AssumeRoleWithOIDC")) == 2
    assert [c.code for c in world.sb.calls(action="DescribeTrigger")] == [
        "",
        "InvalidSecurityToken.Expired",
        "",
    ]


def test_rrsa_errors(world: World) -> None:
    provider, _, token_file = rrsa_world(world, ALIBABA_CLOUD_ROLE_ARN=ROLE + "-missing")
    target = world.target(dict(RRSA_MARKER))
    with pytest.raises(ProviderError) as exc:
        provider.find(target, SINCE)
    assert (exc.value.kind, exc.value.code) == (ErrorClass.AUTH, "EntityNotExist.Role")
    token = token_file.read_text()
    assert token not in str(exc.value)
    token_file.unlink()
    with pytest.raises(CredentialsError) as missing:
        provider.find(target, SINCE)
    assert str(token_file) in str(missing.value)
    world.sb.sts_faults.fail_next(1, 503)
    token_file.write_text(token)
    with pytest.raises(ProviderError) as exc:
        provider.find(target, SINCE)
    assert exc.value.kind is ErrorClass.TRANSIENT


def test_rrsa_credentials_never_go_to_an_untrusted_spec_endpoint(world: World) -> None:
    provider, _, _ = rrsa_world(world, CLOUDTRIGGERS_ACK_TRUSTED_ENDPOINTS="")
    with pytest.raises(CredentialsError) as exc:
        provider.find(world.target(dict(RRSA_MARKER)), SINCE)
    assert "RRSA" in str(exc.value) and world.sb.url in str(exc.value)
    assert world.sb.calls() == []  # not even the STS call
    # The official endpoints are always trusted (not called here: no network).
    assert provider._trusted("https://cs-vpc.cn-beijing.aliyuncs.com")
    assert provider._trusted("https://cs.aliyuncs.com/")
    assert not provider._trusted("https://1234.cn-hangzhou.fc.aliyuncs.com")  # runs anyone's code
    assert not provider._trusted("https://bucket.oss-cn-beijing.aliyuncs.com")
    assert not provider._trusted("http://cs.cn-beijing.aliyuncs.com")
    assert not provider._trusted("https://cs.cn-beijing.aliyuncs.com.evil.example")


def test_sts_endpoint_resolution() -> None:
    assert _sts_endpoint({}) == "https://sts.aliyuncs.com"
    assert _sts_endpoint({"ALIBABA_CLOUD_STS_REGION": "cn-beijing"}) == "https://sts.cn-beijing.aliyuncs.com"
    vpc = {"ALIBABA_CLOUD_STS_REGION": "cn-beijing", "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED": "true"}
    assert _sts_endpoint(vpc) == "https://sts-vpc.cn-beijing.aliyuncs.com"
    explicit = {**vpc, "ALIBABA_CLOUD_STS_ENDPOINT": "sts-vpc.cn-shanghai.aliyuncs.com"}
    assert _sts_endpoint(explicit) == "https://sts-vpc.cn-shanghai.aliyuncs.com"
    assert _sts_endpoint({"ALIBABA_CLOUD_STS_ENDPOINT": "http://127.0.0.1:1/"}) == "http://127.0.0.1:1"


def test_throttled_account_finds_the_providers_rate(world: World) -> None:
    """N DescribeTrigger calls from 8 threads, through the production limiter, against ACK limited to Q
    a second: ACK names no limit, so the pace halves on the first Throttling.User and settles below."""
    n, q = 30, 5
    world.sb.faults.configure(rate_limit=q, rate_window=1.0)
    provider = AckProvider(
        policy=LOOPBACK, limiter=AccountLimiter(), timeout=(2.0, 5.0), environ={}
    )  # no user caps
    t = world.target()

    def observe(_: int) -> None:
        while True:
            try:
                provider.observe(t, "1")
                return
            except ProviderError as e:
                assert e.kind is ErrorClass.THROTTLED, e  # the limiter holds the retry as long as asked

    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(observe, range(n)))
    took = time.monotonic() - start
    windows = world.sb.faults.throttled_windows("alice")
    print(f"\nack: {n} calls at {q}/s in {took:.2f} s (N/Q {n / q:.1f} s), throttled by window {windows}")
    assert took <= 1.5 * n / q + 1.0
    # One throttle per window at most, and few in all: a pace that only waited x-acs-retry-after and
    # never slowed down would be throttled in every window.
    assert all(c <= 1 for c in windows.values()) and sum(windows.values()) <= 3
