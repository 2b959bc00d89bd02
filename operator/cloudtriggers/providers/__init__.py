"""Provider clients behind one protocol (base.Provider)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Literal

import requests

from ..metrics import ACCOUNT_REQUESTS, PACES, PROVIDER_REQUESTS, PROVIDER_SECONDS, operation_of
from .ack import AckProvider
from .base import EndpointPolicy, Provider, ProviderError
from .gitlab import GitLabProvider
from .pacing import AccountLimiter, account_label, current_account
from .swr import SwrProvider


def instrument(session: requests.Session, provider: str) -> None:
    """Count and time every request of `session` for /metrics, failures without an answer included."""
    send = session.request

    def request(method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        m, u = str(method if isinstance(method, str) else method.decode()), str(url)
        op = operation_of(m, u, kwargs.get("headers") or {})
        key = current_account()
        account = account_label(key) if key else "none"
        start = time.monotonic()
        try:
            resp = send(method, url, *args, **kwargs)
        except requests.RequestException:
            PROVIDER_REQUESTS.labels(provider, op, "error").inc()
            ACCOUNT_REQUESTS.labels(provider, account, "error").inc()
            PROVIDER_SECONDS.labels(provider, op).observe(time.monotonic() - start)
            raise
        except ProviderError as e:  # refused by the endpoint policy (nothing sent), or a redirect
            code = str(e.status) if e.status else "refused"
            PROVIDER_REQUESTS.labels(provider, op, code).inc()
            ACCOUNT_REQUESTS.labels(provider, account, f"{code[0]}xx" if e.status else code).inc()
            raise
        PROVIDER_REQUESTS.labels(provider, op, str(resp.status_code)).inc()
        ACCOUNT_REQUESTS.labels(provider, account, f"{resp.status_code // 100}xx").inc()
        PROVIDER_SECONDS.labels(provider, op).observe(time.monotonic() - start)
        return resp

    session.request = request  # type: ignore[method-assign]


def build_providers(
    rate: float | None = None,
    burst: int | None = None,
    ack_network: Literal["public", "vpc"] | None = None,
    ack_trusted_endpoints: Iterable[str] | None = None,
    concurrency: int = 8,
    policy: EndpointPolicy | None = None,
) -> dict[str, Provider]:
    """One instance per provider; each shares one limiter across all Triggers of an account.

    `rate` and `burst` cap the adaptive pace (None: only the provider's own limits apply); `policy`:
    the endpoints they may call (None: EndpointPolicy(), public https only)."""
    limiter = AccountLimiter(rate=rate, burst=burst, concurrency=concurrency)
    PACES.source = limiter.paces
    providers: dict[str, Provider] = {
        "gitlab": GitLabProvider(limiter=limiter, policy=policy),
        "ack": AckProvider(
            limiter=limiter, network=ack_network, trusted_endpoints=ack_trusted_endpoints, policy=policy
        ),
        "swr": SwrProvider(limiter=limiter, policy=policy),
    }
    for name, provider in providers.items():
        rrsa = getattr(provider, "rrsa", None)  # ACK's STS exchange has a session of its own
        for session in {
            id(s): s for s in (getattr(provider, "session", None), getattr(rrsa, "session", None))
        }.values():
            if isinstance(session, requests.Session):
                instrument(session, name)
    return providers
