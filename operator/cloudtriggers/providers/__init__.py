"""Provider clients behind one protocol (base.Provider)."""

from __future__ import annotations

from .base import AccountLimiter, Provider
from .gitlab import GitLabProvider


def build_providers(rate: float = 10.0, burst: int = 20) -> dict[str, Provider]:
    """One instance per provider; each shares one limiter across all Triggers of an account."""
    limiter = AccountLimiter(rate=rate, burst=burst)
    return {"gitlab": GitLabProvider(limiter=limiter)}
