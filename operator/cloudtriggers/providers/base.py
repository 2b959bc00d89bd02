"""What every provider shares: the Provider protocol, error classes, HTTP session and rate limits.

The reconciler only ever talks to this protocol; it never names a provider.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal, Protocol

import requests

from .. import __version__
from ..metrics import LIMITER_WAIT
from ..redaction import redact

__all__ = ["redact"]  # re-exported: providers redact provider messages through base

USER_AGENT = f"cloudtriggers/{__version__} (+https://cloudtriggers.io)"
# (connect, read) seconds; every provider call has both.
DEFAULT_TIMEOUT = (5.0, 30.0)


class ErrorClass(StrEnum):
    TRANSIENT = "transient"  # 5xx, timeouts, connection errors: backoff with jitter
    THROTTLED = "throttled"  # 429, Throttling.*, APIG.0308: wait what the provider says
    AUTH = "auth"  # 401, bad signature, unknown key: CredentialsInvalid
    FORBIDDEN = "forbidden"  # authenticated but not allowed
    TARGET_NOT_FOUND = "target_not_found"  # the project/cluster/repository the trigger lives in
    PERMANENT = "permanent"  # 400 and other answers that retrying will not change
    AMBIGUOUS = "ambiguous"  # the request may have been acted on but no answer came back
    CONFLICT = "conflict"  # the object already exists (SWR 409): the next pass observes and decides


REASONS = {
    ErrorClass.TRANSIENT: "ProviderError",
    ErrorClass.AMBIGUOUS: "ProviderError",
    ErrorClass.THROTTLED: "Throttled",
    ErrorClass.AUTH: "CredentialsInvalid",
    ErrorClass.FORBIDDEN: "Forbidden",
    ErrorClass.TARGET_NOT_FOUND: "TargetNotFound",
    ErrorClass.PERMANENT: "ProviderError",
    ErrorClass.CONFLICT: "Conflict",
}


class ProviderError(Exception):
    """A provider call failed. `message` is already redacted of secrets."""

    def __init__(
        self,
        kind: ErrorClass,
        message: str,
        *,
        code: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        self.status = status
        self.retry_after = retry_after

    @property
    def reason(self) -> str:
        return REASONS[self.kind]

    def __str__(self) -> str:
        code = f"{self.code}: " if self.code else ""
        return f"{code}{self.message}"


class CredentialsError(Exception):
    """Credentials are missing or lack a required key; `reason` is CredentialsMissing."""


@dataclass(frozen=True)
class Target:
    """One Trigger as a provider sees it: the spec block with defaults resolved, and credentials."""

    namespace: str
    name: str
    uid: str
    block: Any  # the provider's spec model (GitLabSpec, AckSpec, SwrSpec)
    credentials: Mapping[str, str]
    # What an earlier reconcile learned and stored in status.atProvider (e.g. GitLab's numeric project id).
    known: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""  # resolved default description (GitLab)
    object_name: str = ""  # resolved provider-side name (SWR)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def secrets(self) -> list[str]:
        return [v for v in self.credentials.values() if v]


@dataclass
class Observed:
    """A provider trigger as read back."""

    external_id: str
    fields: dict[str, Any]  # the spec-comparable fields, in spec terms
    at_provider: dict[str, Any]  # user-facing facts for status.atProvider (no secrets)
    token: str | None = None  # the full token when the provider shows it to us
    token_masked: bool = False  # the provider showed only a masked token
    outputs: dict[str, str] | None = None  # secret outputs (token, url) when known


class Provider(Protocol):
    """A provider of deployment triggers. Implementations are small and stateless per call."""

    name: ClassVar[str]
    # Spec fields the provider can change in place; any other difference is a replacement.
    in_place: ClassVar[frozenset[str]]
    # How a replacement runs: create the new one first (then move the Secret and delete the old),
    # or delete first (when the id is a name that must be reused).
    replace_order: ClassVar[Literal["create_first", "delete_first"]]
    has_outputs: ClassVar[bool]
    # False when find() cannot tell when a trigger was made (ACK): the reconciler then records the
    # ids that existed before a create and never adopts those after a crash.
    find_uses_time: ClassVar[bool]

    def ambient_credentials(self, block: Any) -> Mapping[str, str] | None:
        """Credentials for a Trigger that names no Secret (workload identity, operator defaults)."""

    def claim_key(self, block: Any, known: Mapping[str, Any], external_id: str) -> str:
        """Identity of the provider object (provider, host, container, id): Conflict detection."""

    def observe(self, target: Target, external_id: str) -> Observed | None:
        """Read the trigger; None when it does not exist."""

    def find(self, target: Target, since: datetime) -> list[Observed]:
        """Triggers that a create for this Target may have made since `since` (crash recovery)."""

    def create(self, target: Target) -> Observed:
        """Create; the result carries the secret outputs when the provider has any."""

    def desired(self, target: Target) -> dict[str, Any]:
        """The spec-comparable fields the Target asks for (same keys as Observed.fields)."""

    def update(self, target: Target, observed: Observed, changed: list[str]) -> Observed:
        """Change the in-place fields `changed`."""

    def delete(self, target: Target, external_id: str) -> None:
        """Delete; a not-found answer counts as deleted."""


def diff(desired: Mapping[str, Any], observed: Observed) -> list[str]:
    return sorted(k for k, v in desired.items() if observed.fields.get(k) != v)


def account_key(provider: str, endpoint: str, credentials: Mapping[str, str]) -> str:
    """Stable id of one account at one endpoint, without the secret itself."""
    ident = "|".join(f"{k}={credentials[k]}" for k in sorted(credentials))
    return f"{provider}:{endpoint}:{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


class AccountLimiter:
    """Per-account request pacing shared by all Triggers using the same credentials.

    A token bucket (rate, burst) plus a 'not before' time that a throttled answer pushes forward,
    so one 429 slows every Trigger of that account, not just the one that got it.
    """

    def __init__(self, rate: float = 10.0, burst: int = 20) -> None:
        self.rate = rate
        self.burst = burst
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float, float]] = {}  # key -> (tokens, last, not_before)
        self.waited_seconds = 0.0

    def acquire(self, key: str) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                tokens, last, not_before = self._state.get(key, (float(self.burst), now, 0.0))
                tokens = min(float(self.burst), tokens + (now - last) * self.rate)
                wait = max(not_before - now, 0.0)
                if wait == 0.0 and tokens >= 1.0:
                    self._state[key] = (tokens - 1.0, now, not_before)
                    return
                if wait == 0.0:
                    wait = (1.0 - tokens) / self.rate
                self._state[key] = (tokens, now, not_before)
                self.waited_seconds += wait
            LIMITER_WAIT.labels(key.split(":", 1)[0]).inc(wait)
            time.sleep(wait)

    def throttle(self, key: str, seconds: float) -> None:
        with self._lock:
            now = time.monotonic()
            tokens, last, not_before = self._state.get(key, (float(self.burst), now, 0.0))
            self._state[key] = (tokens, last, max(not_before, now + seconds))


def new_session() -> requests.Session:
    s = requests.Session()
    s.headers["User-Agent"] = USER_AGENT
    return s


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
