"""The GitLab client on the wire: what it sends, and how answers map to error classes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests

from cloudtriggers import __version__
from cloudtriggers.models import GitLabSpec
from cloudtriggers.providers.base import AccountLimiter, ErrorClass, ProviderError, Target
from cloudtriggers.providers.gitlab import GitLabProvider
from cloudtriggers.sandbox import LOOPBACK
from cloudtriggers.sandbox.gitlab import DEVELOPER, MAINTAINER, GitLabSandbox


@pytest.fixture
def sb() -> Iterator[GitLabSandbox]:
    with GitLabSandbox() as sb:
        sb.add_user("alice", token="glpat-alice-000000000000")
        sb.add_user("dave", token="glpat-dave-0000000000000")
        sb.add_project("group/web", {"alice": MAINTAINER, "dave": DEVELOPER})
        yield sb


def target(sb: GitLabSandbox, token: str = "glpat-alice-000000000000", **known: object) -> Target:
    return Target(
        namespace="apps",
        name="web",
        uid="u1",
        block=GitLabSpec(url=sb.url, project="group/web"),
        credentials={"token": token},
        known=known,
        description="apps/web",
    )


def provider(timeout: tuple[float, float] = (2.0, 5.0)) -> GitLabProvider:
    return GitLabProvider(policy=LOOPBACK, limiter=AccountLimiter(rate=1000, burst=1000), timeout=timeout)


def test_user_agent_and_token_header(sb: GitLabSandbox) -> None:
    seen: list[requests.PreparedRequest] = []
    p = provider()
    p.session.hooks["response"].append(lambda r, *a, **k: seen.append(r.request))
    p.create(target(sb))
    assert seen and all(r.headers["User-Agent"].startswith(f"cloudtriggers/{__version__}") for r in seen)
    assert all(r.headers["PRIVATE-TOKEN"] == "glpat-alice-000000000000" for r in seen)


def test_project_id_resolved_once_then_taken_from_status(sb: GitLabSandbox) -> None:
    p = provider()
    created = p.create(target(sb))
    assert created.at_provider["projectId"] == 1001 and created.at_provider["project"] == "group/web"
    sb.clear_requests()
    p.observe(target(sb, **created.at_provider), created.external_id)
    assert [c.path for c in sb.calls()] == [f"/api/v4/projects/1001/triggers/{created.external_id}"]


def test_create_returns_full_token_and_outputs(sb: GitLabSandbox) -> None:
    created = provider().create(target(sb))
    assert created.token and created.token.startswith("glptt-") and not created.token_masked
    assert created.outputs == {
        "token": created.token,
        "url": f"{sb.url}/api/v4/projects/1001/trigger/pipeline",
    }


def test_masked_token_of_another_owner_gives_no_outputs(sb: GitLabSandbox) -> None:
    theirs = sb.create_trigger_as("alice", "group/web", "x")
    sb.add_user("bob", token="glpat-bob-00000000000000")
    sb.set_member("group/web", "bob", MAINTAINER)
    seen = provider().observe(target(sb, token="glpat-bob-00000000000000"), str(theirs["id"]))
    assert seen is not None and seen.token_masked and seen.token is None and seen.outputs is None


@pytest.mark.parametrize(
    ("token", "kind", "code"),
    [
        ("glpat-nobody-00000000000", ErrorClass.AUTH, "401"),
        ("glpat-dave-0000000000000", ErrorClass.FORBIDDEN, "403"),
    ],
)
def test_auth_errors(sb: GitLabSandbox, token: str, kind: ErrorClass, code: str) -> None:
    with pytest.raises(ProviderError) as err:
        provider().create(target(sb, token=token))
    assert err.value.kind is kind and err.value.code == code
    assert token not in str(err.value)


def test_missing_project_is_target_not_found(sb: GitLabSandbox) -> None:
    t = target(sb)
    t = Target(**{**t.__dict__, "block": GitLabSpec(url=sb.url, project="group/nope")})
    with pytest.raises(ProviderError) as err:
        provider().create(t)
    assert err.value.kind is ErrorClass.TARGET_NOT_FOUND and "group/nope" in err.value.message


def test_missing_trigger_is_none_and_delete_of_missing_is_ok(sb: GitLabSandbox) -> None:
    p = provider()
    assert p.observe(target(sb), "999") is None
    p.delete(target(sb), "999")


def test_429_carries_retry_after_and_slows_the_account(sb: GitLabSandbox) -> None:
    sb.faults.retry_after = 1
    sb.fail_next(1, 429)
    p = provider()
    with pytest.raises(ProviderError) as err:
        p.observe(target(sb), "1")
    assert err.value.kind is ErrorClass.THROTTLED and err.value.retry_after == 1
    start = time.monotonic()
    p.observe(target(sb), "1")  # the next call of this account waits out the throttle
    assert time.monotonic() - start >= 0.8


def test_5xx_is_transient_but_ambiguous_for_create(sb: GitLabSandbox) -> None:
    sb.fail_next(1, 503)
    with pytest.raises(ProviderError) as err:
        provider().observe(target(sb), "1")
    assert err.value.kind is ErrorClass.TRANSIENT
    sb.fail_next(1, 500)
    with pytest.raises(ProviderError) as err:
        provider().create(target(sb, project="group/web", projectId=1001))  # no lookup: the POST gets the 500
    assert err.value.kind is ErrorClass.AMBIGUOUS


def test_timeouts_apply_to_every_call(sb: GitLabSandbox) -> None:
    sb.faults.latency = 1.0
    start = time.monotonic()
    with pytest.raises(ProviderError) as err:
        provider(timeout=(1.0, 0.2)).observe(target(sb), "1")
    assert time.monotonic() - start < 0.9
    assert err.value.kind is ErrorClass.TRANSIENT


def test_find_lists_all_pages_and_matches_owner_description_and_time(sb: GitLabSandbox) -> None:
    p = provider()
    since = datetime.now(UTC) - timedelta(seconds=5)
    for i in range(120):
        sb.create_trigger_as("alice", "group/web", f"other {i}")
    mine = p.create(target(sb))
    sb.create_trigger_as("dave", "group/web", "apps/web")  # same description, another owner
    found = p.find(target(sb), since)
    assert [o.external_id for o in found] == [mine.external_id]
    assert p.find(target(sb), datetime.now(UTC) + timedelta(minutes=5)) == []
    assert len(sb.calls("GET", "/triggers")) >= 2  # paginated (per_page=100)


def test_project_path_lookup_is_shared_across_triggers(sb: GitLabSandbox) -> None:
    p = provider()
    for name in ("a", "b", "c"):
        t = target(sb)
        p.create(Target(**{**t.__dict__, "name": name, "description": f"apps/{name}"}))
    assert len(sb.calls("GET", "/projects/group%2Fweb")) == 1
    assert len(sb.calls("POST", "/triggers")) == 3
    # Another token is another account: it looks the project up itself.
    sb.add_user("bob", token="glpat-bob-00000000000000")
    sb.set_member("group/web", "bob", MAINTAINER)
    p.create(target(sb, token="glpat-bob-00000000000000"))
    assert len(sb.calls("GET", "/projects/group%2Fweb")) == 2


def test_requests_in_flight_per_account_are_capped(sb: GitLabSandbox) -> None:
    """12 Triggers of one account at once, concurrency 3: the sandbox never sees more than 3 of
    their requests at a time, and refused requests give their slot back."""
    from threading import Lock

    sb.faults.latency = 0.1
    lock, now, peak = Lock(), [0], [0]

    def enter(*_: object) -> None:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])

    def leave(*_: object) -> None:
        with lock:
            now[0] -= 1

    p = GitLabProvider(
        policy=LOOPBACK, limiter=AccountLimiter(rate=1000, burst=1000, concurrency=3), timeout=(2.0, 5.0)
    )
    p.session.hooks["response"].append(lambda r, *a, **k: leave())
    send = p.session.request

    def counted(*a: object, **k: object) -> requests.Response:
        enter()
        try:
            return send(*a, **k)  # type: ignore[arg-type]
        except requests.RequestException:
            leave()
            raise

    p.session.request = counted  # type: ignore[method-assign]
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda _: p.create(target(sb)), range(12)))
    assert peak[0] == 3
    assert p.limiter.in_flight(p.limiter.accounts()[0]) == 0

    # A refused request (bad token) returns its slot: the account can still send 3 at once afterwards.
    for _ in range(5):
        with pytest.raises(ProviderError):
            p.create(target(sb, token="glpat-nobody-00000000000"))
    assert all(p.limiter.in_flight(k) == 0 for k in p.limiter.accounts())
    peak[0] = 0
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: p.create(target(sb)), range(6)))
    assert peak[0] == 3


@pytest.mark.parametrize(
    ("headers", "n", "most"),
    [(False, 90, 1), (True, 60, 0)],
    ids=["429-headers-only", "headers-on-every-answer"],
)
def test_throttled_account_runs_at_the_providers_rate_with_one_429(
    sb: GitLabSandbox, headers: bool, n: int, most: int
) -> None:
    """N creates from 8 threads, through the production limiter, against GitLab limited to Q a second:
    one 429 teaches the pace (RateLimit-Limit); with RateLimit-* on every answer, not even that."""
    q = 20
    sb.faults.configure(rate_limit=q, rate_window=1, rate_limit_headers=headers)
    p = GitLabProvider(
        policy=LOOPBACK, limiter=AccountLimiter(), timeout=(2.0, 5.0)
    )  # the defaults: no user caps
    t = target(sb, project="group/web", projectId=1001)

    def create(_: int) -> None:
        while True:
            try:
                p.create(t)
                return
            except ProviderError as e:
                assert e.kind is ErrorClass.THROTTLED, e  # the limiter holds the retry as long as asked

    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(n)))
    took = time.monotonic() - start
    windows = sb.faults.throttled_windows("alice")
    print(f"\ngitlab: {n} creates at {q}/s in {took:.2f} s (N/Q {n / q:.1f} s), 429s by window {windows}")
    assert len(sb.triggers(1001)) == n
    assert took <= 1.5 * n / q + 1.0
    assert all(c <= 1 for c in windows.values()) and sum(windows.values()) <= most
