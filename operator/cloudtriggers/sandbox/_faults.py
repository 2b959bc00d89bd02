"""Fault knobs the provider sandboxes share; each adds its own fields and forced answers."""

from __future__ import annotations

import math
import random
import threading
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class RateHit:
    """One request counted against its account's rate limit."""

    allowed: bool
    count: int  # requests of the account in this window, this one and throttled ones included
    limit: int  # requests allowed per window
    window: float  # the window's length, seconds
    window_end: float  # Unix time the window (and its quota) ends


@dataclass
class FaultKnobs:
    """Fault injection knobs. Plain attribute writes are safe at any time; draws happen under a lock.

    Besides random faults, a per-account rate limit: `rate_limit` requests per `rate_window` seconds
    in fixed windows aligned to the epoch (as Rack::Attack and API gateways count), every request of
    the account counted, throttled ones too. Each sandbox answers the excess as its provider does and
    counts those answers per account and window (`throttled`, `throttled_windows`).
    """

    latency: float = 0.0  # seconds added to every API request
    error_rate: float = 0.0  # fraction answered 500/502/503
    throttle_rate: float = 0.0  # fraction answered as throttled (how, each sandbox says)
    drop_after_create: int = 0  # next N successful creates: done server-side, connection closed unanswered
    slow_rate: float = 0.0  # fraction of requests acted on, then answered only after slow_seconds
    slow_seconds: float = 0.0  # past the client's read timeout, this is a timeout after the fact
    seed: int = 0  # seed of the random draws; assigning it restarts the sequence
    rate_limit: int = 0  # requests per account per rate_window; 0: no limit
    rate_window: float = 1.0  # seconds
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    # account -> (window index, requests in it); account -> {window index: throttled answers}
    _windows: dict[str, tuple[int, int]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _throttles: dict[str, dict[int, int]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _forced: deque[list[Any]] = field(default_factory=deque, init=False, repr=False, compare=False)
    _rng: random.Random = field(default_factory=random.Random, init=False, repr=False, compare=False)
    _rng_seed: int | None = field(default=None, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "seed":
            object.__setattr__(self, "_rng_seed", None)  # reseed lazily on the next draw

    @classmethod
    def knob_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if not f.name.startswith("_"))

    def configure(self, **changes: Any) -> None:
        """Set several knobs atomically with respect to draws."""
        unknown = set(changes) - set(self.knob_names())
        if unknown:
            raise TypeError(f"unknown fault settings: {sorted(unknown)}")
        # Coerce to the field's type so JSON from the control endpoint cannot break a request thread.
        coerced = {name: type(getattr(type(self), name))(value) for name, value in changes.items()}
        with self._lock:
            for name, value in coerced.items():
                setattr(self, name, value)

    def reset(self) -> None:
        with self._lock:
            for f in fields(self):
                if not f.name.startswith("_"):
                    setattr(self, f.name, f.default)
            self._forced.clear()
            self._windows.clear()
            self._throttles.clear()

    def throttled(self, account: str | None = None) -> int:
        """Answers throttled by the rate limit: of `account`, or of all accounts."""
        with self._lock:
            if account is not None:
                return sum(self._throttles.get(account, {}).values())
            return sum(sum(w.values()) for w in self._throttles.values())

    def throttled_windows(self, account: str) -> dict[int, int]:
        """Throttled answers of `account` by window (index = window start / rate_window)."""
        with self._lock:
            return dict(self._throttles.get(account, {}))

    def _knobs(self) -> dict[str, Any]:
        """The knobs' values and the throttled answers per account; call with the lock held."""
        data: dict[str, Any] = {name: getattr(self, name) for name in self.knob_names()}
        data["throttled"] = {a: sum(w.values()) for a, w in self._throttles.items()}
        return data

    def _rate_hit(self, account: str, now: float) -> RateHit | None:
        """Count one request of `account` at Unix time `now`; None when no rate limit is set."""
        with self._lock:
            limit, window = self.rate_limit, self.rate_window
            if limit <= 0 or window <= 0:
                return None
            index = math.floor(now / window)
            seen, count = self._windows.get(account, (index, 0))
            count = count + 1 if seen == index else 1
            self._windows[account] = (index, count)
            allowed = count <= limit
            if not allowed:
                per_window = self._throttles.setdefault(account, {})
                per_window[index] = per_window.get(index, 0) + 1
            return RateHit(allowed, count, limit, window, (index + 1) * window)

    def _random_fault(self) -> int | None:
        """429 (throttled), 500/502/503, or None, by the configured rates; call with the lock held."""
        if self._rng_seed != self.seed:
            self._rng.seed(self.seed)
            object.__setattr__(self, "_rng_seed", self.seed)
        if self.throttle_rate > 0 and self._rng.random() < self.throttle_rate:
            return 429
        if self.error_rate > 0 and self._rng.random() < self.error_rate:
            return int(self._rng.choice((500, 502, 503)))
        return None

    def _take_slow(self) -> float:
        """Seconds to hold this answer back (0: none)."""
        with self._lock:
            if self.slow_rate > 0 and self._rng.random() < self.slow_rate:
                return self.slow_seconds
            return 0.0

    def _take_drop(self) -> bool:
        with self._lock:
            if self.drop_after_create > 0:
                self.drop_after_create -= 1
                return True
            return False
