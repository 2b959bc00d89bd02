"""Adaptive per-account pacing (providers/pacing.py), on a fake clock: nothing here sleeps.

Start rates per provider, additive increase while accepted, multiplicative decrease on a throttle,
waiting what the provider asked (Retry-After, RateLimit-Reset, x-acs-retry-after, Huawei's 2 s), the
limits providers name (RateLimit-Limit, APIG.0308) and GitLab's window budget, and the user's caps.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from cloudtriggers import metrics
from cloudtriggers.providers import build_providers
from cloudtriggers.providers.gitlab import pace_profile
from cloudtriggers.providers.pacing import (
    ACCEPTED,
    ACK,
    GITLAB,
    GITLAB_COM,
    LEARNED_MEMORY,
    MARGIN,
    SWR,
    AccountLimiter,
    PaceState,
    Profile,
    Signal,
    ack_signal,
    gitlab_signal,
    parse_retry_after,
    swr_signal,
)

GITLAB_KEY = "gitlab:https://gitlab.example.com:0123456789abcdef"
ACK_KEY = "ack:cs.cn-beijing.aliyuncs.com:0123456789abcdef"
SWR_KEY = "swr:https://swr-api.cn-north-4.myhuaweicloud.com:0123456789abcdef"
WALL = 1_800_000_000.0  # the "Unix time" GitLab's RateLimit-Reset is read against


class FakeTime:
    """The limiter's clock and sleep: sleeping moves the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def make(**kw: object) -> tuple[AccountLimiter, FakeTime]:
    t = FakeTime()
    return AccountLimiter(clock=t, sleep=t.sleep, **kw), t  # type: ignore[arg-type]


def send(lim: AccountLimiter, key: str, signal: Signal = ACCEPTED, profile: Profile | None = None) -> float:
    """One request: admitted (possibly after waiting), answered with `signal`. Returns when it went."""
    lim.acquire(key, profile)
    at = lim.clock()
    lim.observe(key, signal)
    lim.release(key)
    return at


def state(lim: AccountLimiter, key: str) -> PaceState:
    s = lim.state(key)
    assert s is not None
    return s


def busiest_second(times: list[float]) -> int:
    """The most requests in any one-second interval [t, t + 1) starting at a request."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] < t + 1.0 - 1e-9:
            j += 1
        best = max(best, j - i)
    return best


def rack_attack_429(limit_per_minute: int, reset_in: int, retry_after: int | None = None) -> dict[str, str]:
    reset = int(WALL) + reset_in
    headers = {
        "RateLimit-Name": "throttle_authenticated_api",
        "RateLimit-Limit": str(limit_per_minute),
        "RateLimit-Observed": str(limit_per_minute + 1),
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": str(reset),
        "RateLimit-ResetTime": format_datetime(datetime.fromtimestamp(reset, UTC), usegmt=True),
    }
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return headers


# -- where pacing starts -----------------------------------------------------------------------------


def test_start_rates_are_what_each_provider_documents() -> None:
    lim, _ = make()
    assert pace_profile("https://gitlab.com") is GITLAB_COM
    assert pace_profile("https://gitlab.example.com/") is GITLAB
    for key, profile in ((GITLAB_KEY, None), ("gitlab:https://gitlab.com:x", GITLAB_COM), (ACK_KEY, None)):
        send(lim, key, profile=profile)
    send(lim, SWR_KEY, profile=SWR)
    # GitLab.com: 90 % of 2,000 a minute, below its documented limit; self-managed starts the same.
    assert state(lim, "gitlab:https://gitlab.com:x").rate == pytest.approx(30.0)
    assert state(lim, "gitlab:https://gitlab.com:x").ceiling == pytest.approx(2000 / 60)
    assert state(lim, GITLAB_KEY).rate == pytest.approx(30.0) and state(lim, GITLAB_KEY).ceiling is None
    assert state(lim, ACK_KEY).rate == ACK.rate == 10.0 and state(lim, SWR_KEY).rate == SWR.rate == 10.0
    assert lim.paces() == {"ack": 10.0, "gitlab": pytest.approx(30.0), "swr": 10.0}


def test_a_burst_goes_at_once_then_requests_are_spaced_by_the_rate() -> None:
    lim, _ = make()
    flat = Profile("flat", rate=10.0, burst=5, step=0.0)
    times = [send(lim, ACK_KEY, profile=flat) for _ in range(8)]
    start = times[0]
    assert times[:5] == [start] * 5
    assert [round(x - start, 3) for x in times[5:]] == [0.1, 0.2, 0.3]


def test_user_rate_and_burst_are_caps_on_start_and_growth() -> None:
    lim, _ = make(rate=4.0, burst=2)
    times = [send(lim, GITLAB_KEY) for _ in range(200)]
    assert times[:2] == [times[0]] * 2 and times[2] - times[0] == pytest.approx(0.25)
    assert state(lim, GITLAB_KEY).rate == 4.0 and state(lim, GITLAB_KEY).burst == 2
    lim, _ = make(rate=1000.0, burst=1000)  # caps above the provider's start change nothing
    send(lim, ACK_KEY)
    assert (state(lim, ACK_KEY).rate, state(lim, ACK_KEY).burst) == (10.0, 5)


# -- speeding up -------------------------------------------------------------------------------------


def test_additive_increase_while_the_provider_accepts_and_the_pace_holds_requests_back() -> None:
    lim, t = make()
    start = t.now
    sent = 0
    while t.now - start < 10.0:
        send(lim, ACK_KEY)
        sent += 1
    # About `step` requests/s more per second at full pace: 10 -> ~60/s after 10 s.
    assert 50.0 < state(lim, ACK_KEY).rate < 65.0
    assert 300 < sent < 400  # ~ the integral of 10 + 5 t over 10 s, plus the burst


def test_self_managed_gitlab_doubles_its_pace_until_the_first_throttle_then_grows_additively() -> None:
    """No limit is documented for a self-managed instance: a slow start, as TCP's."""
    lim, t = make()
    start = t.now
    while t.now - start < 1.0:
        send(lim, GITLAB_KEY)
    # 30/s doubled every 100 ms at full pace: x 2^10 in a second, ~4,400 requests sent in it. (At
    # these paces a token's wait is below the clock's resolution: the limiter must still move.)
    before = state(lim, GITLAB_KEY).rate
    assert 15_000.0 < before < 60_000.0
    send(lim, GITLAB_KEY, Signal(throttled=True))
    throttled = state(lim, GITLAB_KEY)
    assert throttled.ceiling is not None and 3_000.0 < throttled.ceiling < 6_000.0  # what was sent
    assert throttled.rate == pytest.approx(0.5 * throttled.ceiling)  # halved from it
    after = throttled.rate
    while t.now - start < 3.0:
        send(lim, GITLAB_KEY)
    assert after < state(lim, GITLAB_KEY).rate <= after + 2 * GITLAB.step + 1.0  # additive now
    # GitLab.com documents its limit: no slow start there.
    lim, t = make()
    while t.now < 1001.0:
        send(lim, "gitlab:https://gitlab.com:x", profile=GITLAB_COM)
    assert state(lim, "gitlab:https://gitlab.com:x").rate <= 2000 / 60


def test_no_increase_while_demand_is_below_the_pace() -> None:
    lim, t = make()
    for _ in range(30):
        send(lim, ACK_KEY)
        t.sleep(0.5)  # 2 requests/s wanted, 10/s allowed: the pace is not what limits
    assert state(lim, ACK_KEY).rate == 10.0


# -- slowing down ------------------------------------------------------------------------------------


def test_a_throttle_naming_no_limit_halves_the_pace_waits_and_the_pace_stays_below_it() -> None:
    lim, t = make()
    while t.now < 1002.0:
        send(lim, ACK_KEY)
    before = state(lim, ACK_KEY).rate
    lim.acquire(ACK_KEY)
    throttled_at = t.now
    lim.observe(ACK_KEY, ack_signal(400, "Throttling.User", {"x-acs-retry-after": "700"}))
    lim.release(ACK_KEY)
    s = state(lim, ACK_KEY)
    assert s.wait == pytest.approx(0.7) and s.throttled == 1
    assert s.ceiling is not None and s.ceiling <= before
    assert s.rate == pytest.approx(0.5 * s.ceiling)  # multiplicative decrease of what was being sent
    assert s.burst == max(1, math.floor(0.05 * s.ceiling))
    resumed = send(lim, ACK_KEY)
    assert resumed == pytest.approx(throttled_at + 0.7)  # the whole account waited what ACK asked
    # Accepted for a minute at full demand: it grows back, but never to what drew the throttle.
    times = []
    while t.now < resumed + 60.0:
        times.append(send(lim, ACK_KEY))
    assert state(lim, ACK_KEY).rate == pytest.approx(MARGIN * s.ceiling)
    assert busiest_second(times) <= s.ceiling


def test_throttled_answers_during_the_pause_are_one_event() -> None:
    lim, t = make()
    for _ in range(3):
        lim.acquire(ACK_KEY)  # three requests in flight when the first throttled answer comes back
    throttle = ack_signal(400, "Throttling.User", {"x-acs-retry-after": "1000"})
    lim.observe(ACK_KEY, throttle)
    first = state(lim, ACK_KEY)
    t.sleep(0.05)
    lim.observe(ACK_KEY, throttle)
    lim.observe(ACK_KEY, ack_signal(400, "Throttling.User", {"x-acs-retry-after": "3000"}))
    for _ in range(3):
        lim.release(ACK_KEY)
    later = state(lim, ACK_KEY)
    assert (later.rate, later.ceiling) == (first.rate, first.ceiling)  # not halved three times
    assert later.wait == pytest.approx(3.0)  # but the longest wait asked for holds
    assert later.throttled == 3


def test_an_unnamed_throttle_never_pushes_the_pace_below_one_per_second() -> None:
    lim, t = make()
    for _ in range(10):
        send(lim, ACK_KEY)
        t.sleep(5.0)  # 0.2 requests/s really sent
        send(lim, ACK_KEY, ack_signal(429, "", {}))
    assert state(lim, ACK_KEY).rate == 1.0


def test_a_learned_ceiling_is_forgotten_after_a_quiet_while() -> None:
    lim, t = make()
    send(lim, ACK_KEY, ack_signal(400, "Throttling.User", {}))
    assert state(lim, ACK_KEY).ceiling is not None
    t.sleep(LEARNED_MEMORY + 1.0)
    send(lim, ACK_KEY)
    assert state(lim, ACK_KEY).ceiling is None and state(lim, ACK_KEY).burst == ACK.burst


# -- GitLab: RateLimit-* and Retry-After -------------------------------------------------------------


def test_gitlab_signal_reads_rack_attack_headers() -> None:
    sig = gitlab_signal(429, rack_attack_429(1200, reset_in=1, retry_after=1), wall=WALL)
    assert sig == Signal(throttled=True, retry_after=1.0, limit=20.0, remaining=0, reset_in=1.0)
    # No Retry-After (GitLab.com has sent such 429s): wait until RateLimit-Reset, as python-gitlab does.
    assert gitlab_signal(429, rack_attack_429(120, reset_in=5), wall=WALL).retry_after == 5.0
    assert gitlab_signal(429, {}, wall=WALL) == Signal(throttled=True)
    assert gitlab_signal(200, {}, wall=WALL) is ACCEPTED  # the common case allocates nothing
    unthrottled = {
        "RateLimit-Limit": "6000",
        "RateLimit-Remaining": "7",
        "RateLimit-Reset": str(int(WALL) + 9),
    }
    assert gitlab_signal(200, unthrottled, wall=WALL) == Signal(limit=100.0, remaining=7, reset_in=9.0)


def test_gitlab_429_with_its_limit_puts_the_pace_under_it_for_good() -> None:
    lim, t = make()
    times = [send(lim, GITLAB_KEY) for _ in range(20)]  # 20 allowed a second; the 21st is refused
    lim.acquire(GITLAB_KEY)
    lim.observe(GITLAB_KEY, gitlab_signal(429, rack_attack_429(1200, reset_in=1, retry_after=1), wall=WALL))
    lim.release(GITLAB_KEY)
    s = state(lim, GITLAB_KEY)
    assert (s.wait, s.ceiling, s.burst) == (1.0, 20.0, 1) and s.rate == pytest.approx(18.0)
    times = [send(lim, GITLAB_KEY) for _ in range(300)]
    assert times[0] == pytest.approx(t.now - (len(times) - 1) / 18.0, abs=0.1)
    assert busiest_second(times) <= 19  # 18/s plus a burst of 1: no window of the provider goes over
    assert state(lim, GITLAB_KEY).rate == pytest.approx(18.0)  # accepted, and still not above


def test_gitlab_hourly_limit_paces_to_its_sustained_rate() -> None:
    # Self-managed defaults when enabled: 7,200 an hour, RateLimit-Limit normalised to 120 a minute.
    lim, _ = make()
    send(
        lim, GITLAB_KEY, gitlab_signal(429, rack_attack_429(120, reset_in=1800, retry_after=1800), wall=WALL)
    )
    s = state(lim, GITLAB_KEY)
    assert s.wait == 1800.0 and s.rate == pytest.approx(1.8)
    times = [send(lim, GITLAB_KEY) for _ in range(100)]
    assert times[0] == pytest.approx(1000.0 + 1800.0) and (times[-1] - times[0]) / 99 == pytest.approx(
        1 / 1.8
    )


def test_gitlab_limit_on_unthrottled_answers_slows_down_before_any_429() -> None:
    lim, _ = make()
    headers = {
        "RateLimit-Limit": "120",
        "RateLimit-Remaining": "7000",
        "RateLimit-Reset": str(int(WALL) + 3000),
    }
    send(lim, GITLAB_KEY, gitlab_signal(200, headers, wall=WALL))
    assert state(lim, GITLAB_KEY).rate == pytest.approx(1.8) and state(lim, GITLAB_KEY).throttled == 0


def test_gitlab_window_budget_is_spent_then_the_account_waits_for_the_reset() -> None:
    lim, _ = make()
    lim.acquire(GITLAB_KEY)
    lim.acquire(GITLAB_KEY)  # another request of the account is in flight: it may not be counted yet
    headers = {"RateLimit-Limit": "6000", "RateLimit-Remaining": "4", "RateLimit-Reset": str(int(WALL) + 10)}
    lim.observe(GITLAB_KEY, gitlab_signal(200, headers, wall=WALL))
    lim.release(GITLAB_KEY)
    lim.release(GITLAB_KEY)
    assert state(lim, GITLAB_KEY).budget == 3
    times = [send(lim, GITLAB_KEY) for _ in range(4)]
    assert times[:3] == [1000.0] * 3 and times[3] == pytest.approx(1010.0)  # the 4th waits for the reset
    assert state(lim, GITLAB_KEY).throttled == 0


# -- ACK: x-acs-retry-after ----------------------------------------------------------------------------


def test_ack_signal_reads_x_acs_retry_after_in_milliseconds() -> None:
    assert ack_signal(400, "Throttling.User", {"x-acs-retry-after": "1500"}) == Signal(True, 1.5)
    assert ack_signal(400, "Throttling.User", {"x-acs-retry-after": "600000"}).retry_after == 120.0
    assert ack_signal(400, "Throttling.User", {"x-acs-retry-after": "soon"}) == Signal(True)
    assert ack_signal(429, "", {}) == Signal(True) and ack_signal(400, "Rejected.Throttling", {}).throttled
    assert ack_signal(503, "ServiceUnavailable", {"x-acs-retry-after": "200"}) == Signal(True, 0.2)
    assert ack_signal(400, "InvalidParameter", {}) is ACCEPTED and ack_signal(200, "", {}) is ACCEPTED


def test_ack_throttle_naming_no_delay_waits_one_second() -> None:
    lim, _ = make()
    send(lim, ACK_KEY, ack_signal(400, "Throttling.User", {}))
    assert state(lim, ACK_KEY).wait == ACK.pause == 1.0


# -- SWR: APIG.0308 ----------------------------------------------------------------------------------


MSG = "The throttling threshold has been reached: policy user over ratelimit,limit:{},time:{}"


def test_swr_signal_reads_the_limit_apig_0308_names() -> None:
    assert swr_signal(429, "APIG.0308", MSG.format(20, "1 second"), {}) == Signal(True, None, 20.0)
    assert swr_signal(429, "APIG.0308", MSG.format(600, "1 minute"), {}).limit == 10.0
    assert swr_signal(429, "APIG.0308", MSG.format("XX", "1 second"), {}) == Signal(True)
    assert swr_signal(429, "APIG.0308", "", {"Retry-After": "3"}) == Signal(True, 3.0)
    assert swr_signal(400, "SVCSTG.SWR.4001008", "bad", {}) is ACCEPTED


def test_swr_throttle_waits_two_seconds_and_paces_under_the_named_limit() -> None:
    lim, _ = make()
    for _ in range(6):
        send(lim, SWR_KEY)
    send(lim, SWR_KEY, swr_signal(429, "APIG.0308", MSG.format(5, "1 second"), {}))
    s = state(lim, SWR_KEY)
    assert (s.wait, s.ceiling, s.burst) == (2.0, 5.0, 1) and s.rate == pytest.approx(4.5)  # Huawei: 2-5 s
    times = [send(lim, SWR_KEY) for _ in range(100)]
    assert busiest_second(times) <= 5


# -- the rest ----------------------------------------------------------------------------------------


def test_retry_after_as_an_http_date() -> None:
    later = format_datetime(datetime.fromtimestamp(time.time() + 30, UTC), usegmt=True)
    wait = parse_retry_after(later)
    assert wait is not None and 28.0 < wait <= 30.0
    assert parse_retry_after("7") == 7.0 and parse_retry_after("never") is None


def test_threads_share_one_account_within_its_concurrency() -> None:
    lim = AccountLimiter(concurrency=3)
    fast = Profile("fast", rate=1e6, burst=1000, step=0.0)
    lock, now, peak = threading.Lock(), [0], [0]

    def work() -> None:
        for _ in range(200):
            lim.acquire(GITLAB_KEY, fast)
            with lock:
                now[0] += 1
                peak[0] = max(peak[0], now[0])
            with lock:
                now[0] -= 1
            lim.observe(GITLAB_KEY, ACCEPTED)
            lim.release(GITLAB_KEY)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert peak[0] <= 3 and lim.in_flight(GITLAB_KEY) == 0


def test_throttles_and_paces_reach_metrics() -> None:
    def throttled() -> float:
        value = metrics.REGISTRY.get_sample_value(
            "cloudtriggers_provider_throttled_total", {"provider": "ack"}
        )
        return value or 0.0

    before = throttled()
    lim, _ = make()
    send(lim, ACK_KEY, ack_signal(400, "Throttling.User", {}))
    assert throttled() == before + 1
    providers = build_providers()
    limiter = providers["ack"].limiter  # type: ignore[attr-defined]
    limiter.acquire(ACK_KEY)
    limiter.release(ACK_KEY)
    pace = metrics.REGISTRY.get_sample_value(
        "cloudtriggers_provider_pace_requests_per_second", {"provider": "ack"}
    )
    assert pace == 10.0
