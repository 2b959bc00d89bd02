"""Per-account pacing of provider requests: start from what the provider documents, then follow it.

One AccountLimiter serves every Trigger that uses the same credentials at the same endpoint (the
account key of base.account_key), because providers count requests per account, not per Trigger.
Per account it keeps:

- an in-flight cap (`--provider-concurrency`);
- a token bucket whose rate starts at the provider's documented value (PROFILES), grows additively
  while the provider accepts and the bucket is what holds requests back, and shrinks multiplicatively
  on a throttled answer;
- a 'not before' time that a throttled answer pushes forward by what the provider asked, so every
  Trigger of the account waits, not only the one that was told;
- a ceiling: the limit the provider named (GitLab RateLimit-Limit, SWR APIG.0308 "limit:XX,time:..."),
  or else the pace a throttle showed to be too much. The pace stays below it (MARGIN), with a burst
  small enough that no one-second window goes over, so one throttle is not followed by another;
- the window budget GitLab announces (RateLimit-Remaining until RateLimit-Reset): once it is spent,
  requests wait for the reset instead of collecting 429s.

The user's `--rate` and `--burst` are caps on top of all this. Providers report each answer through
`observe(key, signal)`; the *_signal functions below turn each provider's headers and codes into a
Signal. Time comes from an injectable clock and sleep, so the behaviour is testable without waiting.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from ..metrics import LIMITER_WAIT, PROVIDER_THROTTLED

MARGIN = 0.9  # pace at most this share of a known limit
BURST_SHARE = 0.05  # once a limit is known, the burst is this share of one second's worth (at least 1)
DECREASE = 0.5  # multiplicative decrease of the pace that drew a throttle naming no limit
MIN_RATE = 1.0  # requests/s an unnamed throttle can push the pace down to (a named limit may go lower)
LEARNED_MEMORY = 300.0  # seconds a ceiling learnt from a bare throttle holds without another throttle
NAMED_MEMORY = 3600.0  # seconds a limit the provider named holds (GitLab's default limit period)
MAX_PAUSE = 3600.0  # a longer wait asked for is not believed (GitLab's default period is the longest)
ACK_MAX_RETRY_AFTER = 120.0  # the ACK SDK caps x-acs-retry-after at MAX_DELAY_TIME = 120000 ms
_MIN_WAIT = 1e-6  # the shortest wait for a token (a shorter one may not move a clock at all)
_EPSILON = 1e-9  # waits shorter than this are rounding, not waits (a clock may not even move that little)


@dataclass(frozen=True, slots=True)
class Profile:
    """Where pacing starts for one kind of provider account, and how it moves."""

    name: str
    rate: float  # requests per second to start at
    burst: int  # requests that may go at once while no limit is known
    step: float  # additive increase: requests/s gained per second spent at full pace, unthrottled
    limit: float | None = None  # documented limit (requests/s) the pace stays below; None: none known
    pause: float = 1.0  # seconds to wait after a throttle that names no delay
    # Slow start: until the account's first throttle, the pace doubles every this many seconds at
    # full pace instead of growing by `step`; None: additive from the start.
    double_every: float | None = None


# GitLab.com: 2,000 authenticated API requests a minute per user (providers-gitlab.md §4.3): start at
# MARGIN of it; a burst of 20 stays inside the per-minute window (0.9 * 2000 + 20 < 2000).
GITLAB_COM = Profile("gitlab.com", rate=MARGIN * 2000 / 60, burst=10, step=3.0, limit=2000 / 60)
# Self-managed GitLab has no user limits unless an admin turns them on (§4.1), so there is no ceiling
# to start from: start like GitLab.com and, until a first throttle, double the pace every 100 ms at
# full pace (a slow start, as TCP's): 200 creates take 0.56 s instead of 30/s's 6.7 s (or 1.1 s
# doubling every 250 ms). Requests stay spaced by the pace and in flight by --provider-concurrency,
# so a limit is crossed with few requests out, one 429 (whose RateLimit-* headers name the limit,
# default 7,200 an hour) and the pace drops below it.
GITLAB = Profile("gitlab", rate=MARGIN * 2000 / 60, burst=10, step=30.0, double_every=0.1)
# ACK: quotas are per API and per account (UID, all its AccessKeys together), shown only in Quota
# Center, and none is published for the trigger APIs (providers-ack.md §5.2): start at the former fixed
# default, grow slowly (other clients of the account share the quota), learn from Throttling.User.
ACK = Profile("ack", rate=10.0, burst=5, step=5.0)
# SWR: no published limit either (providers-swr.md §7), but APIG.0308 names the gateway's policy
# ("limit:XX,time:1 second"); Huawei advises waiting 2-5 s when the answer names no delay.
SWR = Profile("swr", rate=10.0, burst=5, step=5.0, pause=2.0)
PROFILES: Mapping[str, Profile] = {"gitlab": GITLAB, "ack": ACK, "swr": SWR}
DEFAULT = Profile("default", rate=10.0, burst=5, step=1.0)


@dataclass(frozen=True, slots=True)
class Signal:
    """What one provider answer says about the account's pace."""

    throttled: bool = False
    retry_after: float | None = None  # seconds the provider asked to wait
    limit: float | None = None  # requests per second the provider allows this account
    remaining: int | None = None  # requests left in the current limit window
    reset_in: float | None = None  # seconds until that window's quota is reset


ACCEPTED = Signal()  # an answer that says nothing but "accepted": shared, no allocation per call


# -- what each provider says ------------------------------------------------------------------------


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds, from delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        n = float(value)
    except ValueError:
        return None
    return n if math.isfinite(n) else None


def gitlab_signal(status: int, headers: Mapping[str, str], wall: float | None = None) -> Signal:
    """GitLab's Rack::Attack headers (providers-gitlab.md §4): on every 429, and on other answers where
    the instance sends them. RateLimit-Limit is normalised to a minute; RateLimit-Reset is Unix time."""
    limit_raw = headers.get("RateLimit-Limit")
    if status != 429 and limit_raw is None:
        return ACCEPTED
    now = time.time() if wall is None else wall
    per_minute = _number(limit_raw)
    remaining = _number(headers.get("RateLimit-Remaining"))
    reset = _number(headers.get("RateLimit-Reset"))
    reset_in = max(reset - now, 0.0) if reset is not None else None
    retry = parse_retry_after(headers.get("Retry-After"))
    if status == 429 and retry is None:
        retry = reset_in  # what python-gitlab falls back to as well
    return Signal(
        throttled=status == 429,
        retry_after=retry,
        limit=per_minute / 60.0 if per_minute is not None and per_minute > 0 else None,
        remaining=int(remaining) if remaining is not None else None,
        reset_in=reset_in,
    )


# ACK's throttling codes (providers-ack.md §5.1); CS itself answers Throttling.User.
ACK_THROTTLING = re.compile(r"^(Throttling(\..*)?|Rejected\.Throttling)$")


def ack_retry_after(headers: Mapping[str, str]) -> float | None:
    """x-acs-retry-after: milliseconds, as the SDK reads it (get_throttling_time_left), capped like it."""
    raw = headers.get("x-acs-retry-after")
    if not raw:
        return None
    try:
        ms = int(raw)
    except ValueError:
        return None
    return min(ms / 1000.0, ACK_MAX_RETRY_AFTER) if ms > 0 else None


def ack_signal(status: int, code: str, headers: Mapping[str, str]) -> Signal:
    wait = ack_retry_after(headers)
    if status < 400 or not (ACK_THROTTLING.match(code) or status == 429 or wait is not None):
        return ACCEPTED
    return Signal(throttled=True, retry_after=wait)


SWR_THROTTLING = ("APIG.0308", "APIGW.0308")
# "...policy user over ratelimit,limit:20,time:1 second" (providers-swr.md §7); APIG policies count
# per second, minute, hour or day.
_APIG_LIMIT = re.compile(r"limit:\s*(\d+)\s*,\s*time:\s*(\d+)\s*(second|minute|hour|day)s?", re.IGNORECASE)
_UNIT_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def swr_signal(status: int, code: str, message: str, headers: Mapping[str, str]) -> Signal:
    if status != 429 and code not in SWR_THROTTLING:
        return ACCEPTED
    limit: float | None = None
    m = _APIG_LIMIT.search(message)
    if m and int(m[1]) > 0 and int(m[2]) > 0:
        limit = int(m[1]) / (int(m[2]) * _UNIT_SECONDS[m[3].lower()])
    return Signal(throttled=True, retry_after=parse_retry_after(headers.get("Retry-After")), limit=limit)


# -- the limiter ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaceState:
    """One account's pacing as of now (for tests, logs and /metrics)."""

    rate: float
    burst: int
    ceiling: float | None
    wait: float  # seconds until the account may send again (throttle or spent budget), 0 if it may
    budget: int | None  # requests left in the provider's current window, when it said
    throttled: int  # throttled answers seen


class _Account:
    __slots__ = (
        "bound_until",
        "budget",
        "budget_until",
        "burst",
        "ceiling",
        "ceiling_until",
        "in_flight",
        "last",
        "not_before",
        "profile",
        "rate",
        "second",
        "sent",
        "sent_before",
        "slots",
        "throttled",
        "tokens",
    )

    def __init__(self, profile: Profile, rate: float, burst: int, concurrency: int, now: float) -> None:
        self.profile = profile
        self.slots = threading.BoundedSemaphore(concurrency)
        self.in_flight = 0
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = now
        self.not_before = 0.0
        self.ceiling = profile.limit
        self.ceiling_until = math.inf
        self.budget: int | None = None
        self.budget_until = 0.0
        self.bound_until = 0.0  # until then the bucket counts as what holds requests back
        self.second = math.floor(now)  # requests sent in this clock second and the one before
        self.sent = 0
        self.sent_before = 0
        self.throttled = 0


_CURRENT = threading.local()


def current_account() -> str:
    """The account key of the request this thread is making (between acquire and release), or ""."""
    return str(getattr(_CURRENT, "key", ""))


def account_label(key: str) -> str:
    """A metric label for an account: the endpoint's host and 8 hex of the key's credentials hash
    (never the credentials), e.g. gitlab.com/3f2a9c01."""
    _, _, rest = key.partition(":")
    endpoint, _, digest = rest.rpartition(":")
    host = urlsplit(endpoint).netloc or endpoint
    return f"{host}/{digest[:8]}" if digest else host


class AccountLimiter:
    """Adaptive per-account pacing shared by all Triggers using the same credentials (module doc).

    `rate` and `burst` are the user's caps (None: none); `concurrency` is the in-flight cap per account.
    `acquire` takes a slot and a token (waiting as long as the pace says), `observe` reports the answer,
    `release` returns the slot once the answer (or the failure) is in.
    """

    def __init__(
        self,
        rate: float | None = None,
        burst: int | None = None,
        concurrency: int = 8,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.concurrency = concurrency
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}
        self.waited_seconds = 0.0

    # -- the request path ------------------------------------------------------------------------

    def acquire(self, key: str, profile: Profile | None = None) -> None:
        _CURRENT.key = key  # the account of this thread's request, for its metrics (current_account)
        acct = self._account(key, profile)
        if not acct.slots.acquire(blocking=False):
            start = self.clock()
            acct.slots.acquire()
            self._count_wait(key, self.clock() - start)
        try:
            while True:
                with self._lock:
                    wait = self._admit(acct, self.clock())
                if wait <= 0.0:
                    return
                self._count_wait(key, wait)
                self.sleep(wait)
        except BaseException:
            acct.slots.release()
            raise

    def release(self, key: str) -> None:
        _CURRENT.key = ""
        acct = self._accounts[key]
        with self._lock:
            acct.in_flight = max(acct.in_flight - 1, 0)
        acct.slots.release()

    def observe(self, key: str, signal: Signal) -> None:
        """Report one answer of the account (call it before `release`: the budget counts in-flight
        requests)."""
        acct = self._accounts.get(key)
        if acct is None:
            return
        if signal.throttled:
            PROVIDER_THROTTLED.labels(key.split(":", 1)[0]).inc()
        with self._lock:
            now = self.clock()
            if signal.throttled:
                self._on_throttle(acct, signal, now)
            else:
                if signal.limit is not None:
                    self._named_limit(acct, signal.limit, now)
                if now < acct.bound_until and acct.rate < self._max_rate(acct):
                    double = acct.profile.double_every
                    if double and not acct.throttled and acct.ceiling is None:
                        # Slow start: rate answers a second at full pace, each x 2^(1/(rate*T)).
                        grown = acct.rate * 2.0 ** (1.0 / (acct.rate * double))
                    else:
                        # Additive: each accepted answer adds step/rate, so step per second at full pace.
                        grown = acct.rate + acct.profile.step / acct.rate
                    acct.rate = min(grown, self._max_rate(acct))
            if signal.remaining is not None and signal.reset_in is not None and signal.reset_in > 0:
                self._window_budget(acct, signal.remaining, now + signal.reset_in)

    # -- inspection --------------------------------------------------------------------------------

    def in_flight(self, key: str) -> int:
        acct = self._accounts.get(key)
        return 0 if acct is None else acct.in_flight

    def accounts(self) -> list[str]:
        with self._lock:
            return list(self._accounts)

    def state(self, key: str) -> PaceState | None:
        with self._lock:
            acct = self._accounts.get(key)
            if acct is None:
                return None
            now = self.clock()
            wait = max(acct.not_before - now, 0.0)
            budget = acct.budget if acct.budget is not None and now < acct.budget_until else None
            if budget is not None and budget <= 0:
                wait = max(wait, acct.budget_until - now)
            return PaceState(acct.rate, acct.burst, acct.ceiling, wait, budget, acct.throttled)

    def paces(self) -> dict[str, float]:
        """The slowest current pace per provider (the key's first part), for /metrics."""
        out: dict[str, float] = {}
        with self._lock:
            for key, acct in self._accounts.items():
                provider = key.split(":", 1)[0]
                out[provider] = min(out.get(provider, math.inf), acct.rate)
        return out

    # -- internals (with the lock held unless said otherwise) ---------------------------------------

    def _account(self, key: str, profile: Profile | None) -> _Account:
        acct = self._accounts.get(key)
        if acct is not None:
            return acct
        with self._lock:
            acct = self._accounts.get(key)
            if acct is None:
                p = profile or PROFILES.get(key.split(":", 1)[0], DEFAULT)
                rate = min(p.rate, self.rate) if self.rate is not None else p.rate
                burst = min(p.burst, self.burst) if self.burst is not None else p.burst
                acct = _Account(p, rate, max(burst, 1), self.concurrency, self.clock())
                self._accounts[key] = acct
            return acct

    def _admit(self, acct: _Account, now: float) -> float:
        """0 when a request may go now (and counts it), else how long to wait before asking again."""
        if now >= acct.ceiling_until:
            self._forget_ceiling(acct)
        acct.tokens = min(float(acct.burst), acct.tokens + (now - acct.last) * acct.rate)
        acct.last = now
        wait = acct.not_before - now
        if acct.budget is not None:
            if now >= acct.budget_until:
                acct.budget = None
            elif acct.budget <= 0:
                wait = max(wait, acct.budget_until - now)
        if wait > _EPSILON:
            return wait
        if acct.tokens < 1.0 - _EPSILON:
            acct.bound_until = now + 1.0
            # At thousands a second a deficit's wait can be below the clock's resolution, which
            # would then never move: wait at least a microsecond.
            return max((1.0 - acct.tokens) / acct.rate, _MIN_WAIT)
        acct.tokens -= 1.0
        if acct.budget is not None:
            acct.budget -= 1
        acct.in_flight += 1
        self._roll(acct, now)
        acct.sent += 1
        return 0.0

    @staticmethod
    def _roll(acct: _Account, now: float) -> None:
        second = math.floor(now)
        if second != acct.second:
            acct.sent_before = acct.sent if second == acct.second + 1 else 0
            acct.sent = 0
            acct.second = second

    def _sent_rate(self, acct: _Account, now: float) -> float:
        """Requests sent over the last second (the current second plus the rest of the one before)."""
        self._roll(acct, now)
        return acct.sent + acct.sent_before * (1.0 - (now - acct.second))

    def _max_rate(self, acct: _Account) -> float:
        top = MARGIN * acct.ceiling if acct.ceiling is not None else math.inf
        return min(top, self.rate) if self.rate is not None else top

    def _set_burst(self, acct: _Account) -> None:
        burst = acct.profile.burst
        if acct.ceiling is not None and acct.ceiling != acct.profile.limit:
            # A window of one second then holds at most MARGIN + BURST_SHARE of the limit.
            burst = min(burst, max(1, math.floor(BURST_SHARE * acct.ceiling)))
        if self.burst is not None:
            burst = min(burst, self.burst)
        acct.burst = max(burst, 1)
        acct.tokens = min(acct.tokens, float(acct.burst))

    def _named_limit(self, acct: _Account, limit: float, now: float) -> None:
        if acct.ceiling != limit:
            acct.ceiling = limit
            self._set_burst(acct)
        acct.ceiling_until = now + NAMED_MEMORY
        acct.rate = min(acct.rate, self._max_rate(acct))

    def _forget_ceiling(self, acct: _Account) -> None:
        acct.ceiling = acct.profile.limit
        acct.ceiling_until = math.inf
        self._set_burst(acct)

    def _on_throttle(self, acct: _Account, signal: Signal, now: float) -> None:
        acct.throttled += 1
        pause = signal.retry_after
        if pause is None:
            pause = signal.reset_in if signal.reset_in else acct.profile.pause
        # Nothing is admitted while a pause runs, so a throttled answer arriving during one is for a
        # request sent before the last decrease: the same event, not a reason to slow down again.
        repeat = now < acct.not_before
        acct.not_before = max(acct.not_before, now + min(pause, MAX_PAUSE))
        if repeat:
            if signal.limit is not None:
                self._named_limit(acct, signal.limit, now)
            return
        if signal.limit is not None:
            before = acct.rate
            self._named_limit(acct, signal.limit, now)  # over the named limit: just under it now
            cap = MARGIN * signal.limit
            if before <= cap:
                # Refused while pacing under it: something else spends the same quota (another client
                # of the account), so back off further.
                acct.rate = max(DECREASE * before, min(cap, MIN_RATE))
        else:
            # The pace that drew the throttle: what was really sent, at most what the bucket allowed.
            sent = min(acct.rate, self._sent_rate(acct, now))
            acct.ceiling = min(acct.ceiling, sent) if acct.ceiling is not None else sent
            acct.ceiling = max(acct.ceiling, MIN_RATE)
            acct.ceiling_until = now + LEARNED_MEMORY
            self._set_burst(acct)
            acct.rate = max(DECREASE * sent, MIN_RATE)
        if self.rate is not None:
            acct.rate = min(acct.rate, self.rate)
        acct.bound_until = 0.0

    def _window_budget(self, acct: _Account, remaining: int, until: float) -> None:
        # Requests still in flight may not be counted in `remaining` yet: keep room for them.
        left = remaining - max(acct.in_flight - 1, 0)
        if acct.budget is None or until > acct.budget_until + 0.5:  # a new window
            acct.budget, acct.budget_until = left, until
        else:
            acct.budget = min(acct.budget, left)

    def _count_wait(self, key: str, seconds: float) -> None:
        with self._lock:
            self.waited_seconds += seconds
        LIMITER_WAIT.labels(key.split(":", 1)[0]).inc(seconds)
