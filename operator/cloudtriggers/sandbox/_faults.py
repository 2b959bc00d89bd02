"""Fault knobs the provider sandboxes share; each adds its own fields and forced answers."""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class FaultKnobs:
    """Fault injection knobs. Plain attribute writes are safe at any time; draws happen under a lock."""

    latency: float = 0.0  # seconds added to every API request
    error_rate: float = 0.0  # fraction answered 500/502/503
    throttle_rate: float = 0.0  # fraction answered as throttled (how, each sandbox says)
    drop_after_create: int = 0  # next N successful creates: done server-side, connection closed unanswered
    slow_rate: float = 0.0  # fraction of requests acted on, then answered only after slow_seconds
    slow_seconds: float = 0.0  # past the client's read timeout, this is a timeout after the fact
    seed: int = 0  # seed of the random draws; assigning it restarts the sequence
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
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

    def _knobs(self) -> dict[str, Any]:
        """The knobs' values; call with the lock held."""
        return {name: getattr(self, name) for name in self.knob_names()}

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
