"""Operator settings (environment variables CLOUDTRIGGERS_*, overridden by `cloudtriggers run` flags)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass
class Settings:
    resync_period: float = 600.0  # seconds; spec.resyncPeriod overrides per Trigger
    resync_jitter: float = 0.1  # +-10 % so that N Triggers spread over the period
    credentials_poll: float = 15.0  # re-read a missing/invalid credentials Secret this often
    delete_timeout: float = 120.0  # then a Trigger in a terminating namespace is orphaned
    transient_backoff: tuple[float, float] = (1.0, 300.0)  # first, max
    slow_backoff: tuple[float, float] = (12.0, 1800.0)  # at most 5 attempts a minute, to 30 min
    rate: float = 10.0  # provider requests per second per account
    burst: int = 20
    workers: int = 16  # threads for provider and Kubernetes calls
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces

    @classmethod
    def from_env(cls) -> Settings:
        s = cls()
        s.resync_period = _env_float("CLOUDTRIGGERS_RESYNC_PERIOD", s.resync_period)
        s.delete_timeout = _env_float("CLOUDTRIGGERS_DELETE_TIMEOUT", s.delete_timeout)
        s.rate = _env_float("CLOUDTRIGGERS_RATE", s.rate)
        ns = os.environ.get("CLOUDTRIGGERS_NAMESPACES", "")
        s.namespaces = [n for n in ns.split(",") if n]
        return s
