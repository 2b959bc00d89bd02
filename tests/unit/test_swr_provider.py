"""The SWR client on the wire: what it sends, how answers map to error classes, and the lock-out guard."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from cloudtriggers import __version__
from cloudtriggers.models import SwrSpec
from cloudtriggers.providers.base import (
    AccountLimiter,
    CredentialsError,
    ErrorClass,
    ProviderError,
    Target,
    diff,
)
from cloudtriggers.providers.swr import (
    AuthGuard,
    SwrProvider,
    default_endpoint,
    parse_error,
    triggers_path,
)
from cloudtriggers.sandbox import LOOPBACK
from cloudtriggers.sandbox.swr import SwrAccount, SwrSandbox
from cloudtriggers.signing import huawei

BASE = "/v2/manage/namespaces/group/repos"


class Clock:
    """A monotonic clock the test moves by hand (the guard's 5-minute window without waiting)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def sb() -> Iterator[SwrSandbox]:
    with SwrSandbox() as sb:
        sb.add_account("alice", access_key="ALICEKEY0000000000AA", secret_key="alice-secret-" + "s" * 27)
        sb.add_repository("group", "web")
        sb.add_repository("group", "team/web")
        sb.add_repository("other", "web")
        yield sb


def alice(sb: SwrSandbox) -> SwrAccount:
    return sb._accounts["alice"]


def spec(sb: SwrSandbox, **over: Any) -> SwrSpec:
    base: dict[str, Any] = {
        "region": "cn-north-4",
        "organization": "group",
        "repository": "web",
        "application": "web",
        "clusterNamespace": "default",
        "clusterName": "prod",
        "endpoint": sb.url,
    }
    base.update(over)
    return SwrSpec.model_validate(base)


def target(
    sb: SwrSandbox, *, creds: dict[str, str] | None = None, known: dict[str, Any] | None = None, **over: Any
) -> Target:
    a = alice(sb)
    return Target(
        namespace="apps",
        name="web",
        uid="u1",
        block=spec(sb, **over),
        credentials=creds or {"accessKey": a.access_key, "secretKey": a.secret_key},
        known=known or {},
        object_name="web",
    )


def provider(
    timeout: tuple[float, float] = (2.0, 5.0),
    clock: Clock | None = None,
    limiter: AccountLimiter | None = None,
) -> SwrProvider:
    guard = AuthGuard(clock=clock) if clock else None
    return SwrProvider(
        policy=LOOPBACK,
        limiter=limiter or AccountLimiter(rate=1000, burst=1000),
        timeout=timeout,
        guard=guard,
    )


def bad_creds(sb: SwrSandbox) -> dict[str, str]:
    return {"accessKey": alice(sb).access_key, "secretKey": "wrong-secret-" + "w" * 27}


# ---- what goes on the wire


def test_create_sends_strings_and_reads_back_what_the_spec_asks(sb: SwrSandbox) -> None:
    p = provider()
    t = target(sb, enabled=False, container="app")
    created = p.create(t)
    assert diff(p.desired(t), created) == []
    assert created.external_id == "web" and created.fields["enabled"] is False
    assert created.at_provider == {
        "region": "cn-north-4",
        "organization": "group",
        "repository": "web",
        "endpoint": sb.url,
        "createdAt": sb.trigger("group", "web", "web")["created_at"],  # type: ignore[index]
        "creatorName": "alice",
    }
    [post] = sb.calls("POST")
    assert post.body["enable"] == "false" and all(isinstance(v, str) for v in post.body.values())
    assert [c.method for c in sb.calls()] == ["POST", "GET"]  # 201 has no body: read it back


def test_user_agent_and_no_project_header_without_project_id(sb: SwrSandbox) -> None:
    seen: list[requests.PreparedRequest] = []
    p = provider()
    p.session.hooks["response"].append(lambda r, *a, **k: seen.append(r.request))
    p.create(target(sb))
    p.observe(target(sb), "web")
    assert len(seen) == 3
    for r in seen:
        assert r.headers["User-Agent"] == f"cloudtriggers/{__version__} (+https://cloudtriggers.io)"
        assert "X-Project-Id" not in r.headers
        assert "user-agent" in str(r.headers["Authorization"])  # signed, so it cannot be swapped on the way
    assert all("x-project-id" not in c.headers for c in sb.calls())


def test_project_id_and_security_token_are_sent_and_signed(sb: SwrSandbox) -> None:
    temp = sb.add_temporary_credentials("alice")
    creds = {
        "accessKey": temp.access_key,
        "secretKey": temp.secret_key,
        "securityToken": temp.security_token,
        "projectId": alice(sb).project_id,
    }
    seen: list[requests.PreparedRequest] = []
    p = provider()
    p.session.hooks["response"].append(lambda r, *a, **k: seen.append(r.request))
    p.create(target(sb, creds=creds))
    auth = huawei.parse_authorization(str(seen[0].headers["Authorization"]))
    assert auth is not None and {"x-project-id", "x-security-token", "x-sdk-date"} <= set(auth.signed_headers)
    assert seen[0].headers["X-Project-Id"] == alice(sb).project_id
    assert all(c.authenticated for c in sb.calls())


def test_slash_in_repository_is_sent_as_dollar(sb: SwrSandbox) -> None:
    p = provider()
    t = target(sb, repository="team/web")
    p.create(t)
    p.observe(t, "web")
    p.delete(t, "web")
    assert {c.path.rsplit("/triggers", 1)[0] for c in sb.calls()} == {f"{BASE}/team%24web"}
    assert triggers_path("group", "a/b/c", "x") == "/v2/manage/namespaces/group/repos/a%24b%24c/triggers/x"


def test_update_is_one_patch_of_enable_only(sb: SwrSandbox) -> None:
    p = provider()
    created = p.create(target(sb))
    sb.clear_requests()
    t = target(sb, enabled=False, known=created.at_provider)
    updated = p.update(t, created, ["enabled"])
    [patch] = sb.calls()
    assert (patch.method, patch.status, patch.body) == ("PATCH", 201, {"enable": "false"})
    assert updated.fields["enabled"] is False and diff(p.desired(t), updated) == []
    assert sb.trigger("group", "web", "web")["enable"] == "false"  # type: ignore[index]


def test_observe_and_delete_use_the_recorded_location(sb: SwrSandbox) -> None:
    p = provider()
    old = p.create(target(sb))
    moved = target(sb, organization="other", known=old.at_provider)  # spec changed, trigger not yet moved
    seen = p.observe(moved, "web")
    assert seen is not None and seen.fields["organization"] == "group"
    assert diff(p.desired(moved), seen) == ["organization"]  # a replacement, not an in-place update
    p.delete(moved, "web")
    assert sb.triggers("group", "web") == []
    assert p.create(moved).at_provider["organization"] == "other"  # create always goes where the spec says


def test_missing_trigger_is_none_and_delete_of_missing_is_ok(sb: SwrSandbox) -> None:
    p = provider()
    assert p.observe(target(sb), "web") is None
    p.delete(target(sb), "web")
    assert [c.status for c in sb.calls()] == [404, 404]


def test_cci_trigger_has_no_cluster_fields_to_differ(sb: SwrSandbox) -> None:
    p = provider()
    t = target(sb, triggerMode="cci", clusterName=None)
    created = p.create(t)
    assert "clusterId" not in p.desired(t) and "clusterName" not in p.desired(t)
    assert created.fields["clusterName"] is None  # "" on the wire
    assert diff(p.desired(t), created) == []


def test_history_is_reported_in_at_provider(sb: SwrSandbox) -> None:
    p = provider()
    p.create(target(sb))
    sb.push("group", "web", "v1.2.3")
    seen = p.observe(target(sb), "web")
    assert seen is not None
    assert (seen.at_provider["lastTag"], seen.at_provider["lastResult"]) == ("v1.2.3", "success")


def test_find_returns_the_trigger_of_that_name_made_since(sb: SwrSandbox) -> None:
    p = provider()
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert p.find(target(sb), since) == []
    p.create(target(sb))
    assert [o.external_id for o in p.find(target(sb), since)] == ["web"]
    assert p.find(target(sb), datetime.now(UTC) + timedelta(minutes=5)) == []  # older than the intent


def test_endpoints_and_claim_key() -> None:
    assert default_endpoint("cn-north-4") == "https://swr-api.cn-north-4.myhuaweicloud.com"
    assert default_endpoint("eu-west-101") == "https://swr-api.eu-west-101.myhuaweicloud.eu"
    block = SwrSpec.model_validate(
        {"region": "ap-southeast-1", "organization": "g", "repository": "a/b", "application": "w",
         "clusterNamespace": "d", "clusterId": "c"}
    )  # fmt: skip
    p = provider()
    assert p.claim_key(block, {}, "web") == "swr|swr-api.ap-southeast-1.myhuaweicloud.com|g|a/b|web"
    known = {"region": "ap-southeast-1", "organization": "old", "repository": "r"}
    assert p.claim_key(block, known, "web") == "swr|swr-api.ap-southeast-1.myhuaweicloud.com|old|r|web"
    assert p.ambient_credentials(block) is None


def test_missing_secret_key_is_credentials_error(sb: SwrSandbox) -> None:
    with pytest.raises(CredentialsError, match="secretKey"):
        provider().observe(target(sb, creds={"accessKey": "AK"}), "web")
    assert sb.calls() == []


# ---- errors


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ([{"errorCode": "SVCSTG.SWR.4001048", "errorMessage": "Failed to get Token", "detail": ""}],
         "SVCSTG.SWR.4001048", "Failed to get Token"),
        ({"errors": [{"errorCode": "SVCSTG.SWR.4030170", "errorMessage": "x"}],
          "error_code": "SVCSTG.SWR.4030170", "error_msg": "Insufficient permissions", "details": [],
          "encoded_authorization_message": "abc"},
         "SVCSTG.SWR.4030170", "Insufficient permissions"),
        ({"error_code": "APIG.0301", "error_msg": "Incorrect IAM authentication information",
          "request_id": "r1"},
         "APIG.0301", "Incorrect IAM authentication information"),
        ({"errors": [{"errorCode": "SVCSTG.SWR.4000001", "errorMessage": "only errors[]"}]},
         "SVCSTG.SWR.4000001", "only errors[]"),
        ({"errorCode": "E1", "errorMsg": "sdk spelling"}, "E1", "sdk spelling"),
    ],
)  # fmt: skip
def test_parse_error_shapes(body: Any, code: str, message: str) -> None:
    assert parse_error(body, "raw") == (code, message)


def test_parse_error_of_non_json_keeps_the_text() -> None:
    assert parse_error(None, " upstream timed out ") == ("", "upstream timed out")


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (400, None, ErrorClass.PERMANENT, "SVCSTG.SWR.4001008"),
        (403, None, ErrorClass.FORBIDDEN, "SVCSTG.SWR.4030170"),
        (404, None, ErrorClass.TARGET_NOT_FOUND, "SVCSTG.SWR.4040002"),
        (500, None, ErrorClass.AMBIGUOUS, "SVCSTG.SWR.5000001"),
        (429, None, ErrorClass.THROTTLED, "APIG.0308"),
        (400, {"error_code": "APIG.0308", "error_msg": "over ratelimit"}, ErrorClass.THROTTLED, "APIG.0308"),
        (401, None, ErrorClass.AUTH, "APIG.0301"),
    ],
)
def test_create_error_classes(sb: SwrSandbox, status: int, body: Any, kind: ErrorClass, code: str) -> None:
    if status == 404:
        t = target(sb, organization="nobody")
    else:
        sb.fail_next(1, status, body)
        t = target(sb)
    with pytest.raises(ProviderError) as err:
        provider().create(t)
    assert err.value.kind is kind and err.value.code == code and err.value.status == status
    assert "request id" in err.value.message
    if status == 404:
        assert "organization 'nobody' or repository 'web' not found" in err.value.message


def test_5xx_is_transient_for_reads(sb: SwrSandbox) -> None:
    sb.fail_next(1, 502)
    with pytest.raises(ProviderError) as err:
        provider().observe(target(sb), "web")
    assert err.value.kind is ErrorClass.TRANSIENT


def test_409_on_create_is_conflict(sb: SwrSandbox) -> None:
    sb.create_trigger("group", "web", "web", application="someone-elses")
    with pytest.raises(ProviderError) as err:
        provider().create(target(sb))
    assert err.value.kind is ErrorClass.CONFLICT and "already exists in group/web" in err.value.message


def test_invalid_name_is_permanent(sb: SwrSandbox) -> None:
    t = Target(**{**target(sb).__dict__, "object_name": "9lives"})
    with pytest.raises(ProviderError) as err:
        provider().create(t)
    assert err.value.kind is ErrorClass.PERMANENT and "invalid trigger name" in err.value.message


def test_throttle_holds_the_account_for_what_was_asked_else_two_seconds(sb: SwrSandbox) -> None:
    clock = Clock()

    def sleep(seconds: float) -> None:
        clock.t += seconds

    limiter = AccountLimiter(clock=clock, sleep=sleep)
    p = provider(limiter=limiter)
    sb.faults.throttle_rate = 1.0
    with pytest.raises(ProviderError) as err:
        p.observe(target(sb), "web")
    assert err.value.kind is ErrorClass.THROTTLED and err.value.retry_after is None
    (key,) = limiter.accounts()
    assert limiter.state(key).wait == 2.0  # type: ignore[union-attr]
    sb.faults.retry_after = 4
    start = clock.t
    with pytest.raises(ProviderError) as err:
        p.observe(target(sb), "web")
    assert clock.t - start == pytest.approx(2.0)  # the next call waited out the first throttle
    assert err.value.retry_after == 4
    assert limiter.state(key).wait == pytest.approx(4.0)  # type: ignore[union-attr]


def test_update_of_vanished_trigger_is_transient(sb: SwrSandbox) -> None:
    p = provider()
    created = p.create(target(sb))
    sb.delete_trigger("group", "web", "web")
    with pytest.raises(ProviderError) as err:
        p.update(target(sb, enabled=False), created, ["enabled"])
    assert err.value.kind is ErrorClass.TRANSIENT


def test_timeouts_are_transient_and_ambiguous_for_create(sb: SwrSandbox) -> None:
    sb.faults.latency = 0.6
    p = provider(timeout=(1.0, 0.2))
    with pytest.raises(ProviderError) as err:
        p.observe(target(sb), "web")
    assert err.value.kind is ErrorClass.TRANSIENT and "Timeout" in err.value.message
    with pytest.raises(ProviderError) as err:
        p.create(target(sb))
    assert err.value.kind is ErrorClass.AMBIGUOUS


def test_lost_create_answer_is_ambiguous_and_found_by_name(sb: SwrSandbox) -> None:
    sb.faults.drop_after_create = 1
    p = provider()
    since = datetime.now(UTC) - timedelta(minutes=1)
    with pytest.raises(ProviderError) as err:
        p.create(target(sb))
    assert err.value.kind is ErrorClass.AMBIGUOUS
    assert [o.external_id for o in p.find(target(sb), since)] == ["web"]


def test_no_secret_in_error_messages(sb: SwrSandbox) -> None:
    temp = sb.add_temporary_credentials("alice")
    creds = {
        "accessKey": temp.access_key,
        "secretKey": "bad-" + temp.secret_key,
        "securityToken": temp.security_token,
    }
    p = provider()
    messages = []
    for _ in range(4):  # three rejected by the gateway, the fourth by the guard
        with pytest.raises(ProviderError) as err:
            p.observe(target(sb, creds=creds), "web")
        messages.append(str(err.value))
    for m in messages:
        assert temp.secret_key not in m and temp.security_token not in m and creds["secretKey"] not in m


# ---- the lock-out guard


def test_guard_never_lets_a_fourth_consecutive_failure_through_in_five_minutes(sb: SwrSandbox) -> None:
    clock = Clock()
    p = provider(clock=clock)
    t = target(sb, creds=bad_creds(sb))
    for _ in range(3):
        with pytest.raises(ProviderError) as err:
            p.observe(t, "web")
        assert err.value.kind is ErrorClass.AUTH and err.value.code == "APIG.0301"
    for advance in (0, 60, 240):  # still within five minutes of the last failure
        clock.t += advance
        with pytest.raises(ProviderError) as err:
            p.observe(t, "web")
        assert err.value.kind is ErrorClass.AUTH and err.value.code == "LockoutGuard"
    assert len(sb.calls()) == 3
    assert sb.auth_failures(alice(sb).access_key) == 3 and not sb.locked(alice(sb).access_key)
    msg = err.value.message
    assert (
        "request not sent" in msg and "ALIC..." in msg and "Incorrect IAM authentication information" in msg
    )
    assert alice(sb).access_key not in msg
    # Five minutes after the last failure a single probe may go out; when it fails, five more minutes.
    clock.t += 1
    with pytest.raises(ProviderError) as err:
        p.observe(t, "web")
    assert err.value.code == "APIG.0301" and len(sb.calls()) == 4
    clock.t += 299
    with pytest.raises(ProviderError) as err:
        p.observe(t, "web")
    assert err.value.code == "LockoutGuard" and len(sb.calls()) == 4
    assert not sb.locked(alice(sb).access_key)  # 4 in a row: still one short of Huawei's lock


def test_guard_holds_under_concurrency(sb: SwrSandbox) -> None:
    sb.faults.latency = 0.05
    p = provider()
    t = target(sb, creds=bad_creds(sb))
    kinds: list[str] = []

    def worker() -> None:
        try:
            p.observe(t, "web")
        except ProviderError as e:
            kinds.append(e.code)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(sb.calls()) == 3 and kinds.count("APIG.0301") == 3
    assert kinds.count("LockoutGuard") == 9 and not sb.locked(alice(sb).access_key)


def test_a_success_resets_the_guard(sb: SwrSandbox) -> None:
    p = provider(clock=Clock())
    for _ in range(2):
        with pytest.raises(ProviderError):
            p.observe(target(sb, creds=bad_creds(sb)), "web")
    assert p.guard.failures(alice(sb).access_key) == 2
    assert p.observe(target(sb), "web") is None  # a 404 still proves the key works
    assert p.guard.failures(alice(sb).access_key) == 0
    for _ in range(3):
        with pytest.raises(ProviderError) as err:
            p.observe(target(sb, creds=bad_creds(sb)), "web")
        assert err.value.code == "APIG.0301"
    assert not sb.locked(alice(sb).access_key)


def test_guard_ignores_answers_without_a_verdict(sb: SwrSandbox) -> None:
    p = provider(clock=Clock())
    with pytest.raises(ProviderError):
        p.observe(target(sb, creds=bad_creds(sb)), "web")
    sb.fail_next(1, 503)
    with pytest.raises(ProviderError):
        p.observe(target(sb), "web")
    assert p.guard.failures(alice(sb).access_key) == 1  # a 5xx neither counts nor resets


def test_guard_keys_are_independent() -> None:
    clock = Clock()
    g = AuthGuard(clock=clock)
    for _ in range(3):
        g.acquire("AK1")
        g.release("AK1", "auth_failure", "bad")
    with pytest.raises(ProviderError):
        g.acquire("AK1")
    g.acquire("AK2")  # another key is unaffected
    g.release("AK2", "ok")
    clock.t += 301
    g.acquire("AK1")  # the probe...
    start = time.monotonic()
    g.slot_wait = 0.2
    with pytest.raises(ProviderError) as err:
        g.acquire("AK1")  # ...goes alone
    assert err.value.kind is ErrorClass.TRANSIENT and time.monotonic() - start >= 0.2
    g.release("AK1", "ok")
    for _ in range(3):
        g.acquire("AK1")  # a success reopened it fully


def test_throttled_account_paces_under_the_limit_apig_0308_names(sb: SwrSandbox) -> None:
    """N ShowTrigger calls from 8 threads, through the production limiter, against SWR limited to Q a
    second: the first APIG.0308 names the limit, the account waits 2 s and then stays under it."""
    n, q = 20, 5
    sb.faults.configure(rate_limit=q, rate_window=1.0)
    p = SwrProvider(
        policy=LOOPBACK, limiter=AccountLimiter(), timeout=(2.0, 5.0)
    )  # the defaults: no user caps
    t = target(sb)

    def observe(_: int) -> None:
        while True:
            try:
                p.observe(t, "web")
                return
            except ProviderError as e:
                assert e.kind is ErrorClass.THROTTLED, e  # the limiter holds the retry as long as asked

    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(observe, range(n)))
    took = time.monotonic() - start
    windows = sb.faults.throttled_windows("alice")
    print(f"\nswr: {n} calls at {q}/s in {took:.2f} s (N/Q {n / q:.1f} s), APIG.0308 by window {windows}")
    assert took <= 1.5 * n / q + 1.0
    assert all(c <= 1 for c in windows.values()) and sum(windows.values()) <= 1
