"""What every provider shares: the Provider protocol, error classes, HTTP session (pacing: pacing.py).

The reconciler only ever talks to this protocol; it never names a provider.
"""

from __future__ import annotations

import hashlib
import http.cookiejar
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol
from urllib.parse import urlsplit

import requests
import requests.auth
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity, select_proxy

from .. import __version__
from ..redaction import redact
from .endpoints import EndpointPolicy, EndpointRefused, pool_classes
from .pacing import AccountLimiter, parse_retry_after
from .transport import Transport

if TYPE_CHECKING:
    from requests.sessions import _Settings

# Re-exported: providers redact provider messages through base; the limiter lives in pacing.py.
__all__ = ["AccountLimiter", "EndpointPolicy", "parse_retry_after", "redact"]

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
    ENDPOINT = "endpoint"  # the endpoint policy refuses the host: nothing was sent


REASONS = {
    ErrorClass.TRANSIENT: "ProviderError",
    ErrorClass.AMBIGUOUS: "ProviderError",
    ErrorClass.THROTTLED: "Throttled",
    ErrorClass.AUTH: "CredentialsInvalid",
    ErrorClass.FORBIDDEN: "Forbidden",
    ErrorClass.TARGET_NOT_FOUND: "TargetNotFound",
    ErrorClass.PERMANENT: "ProviderError",
    ErrorClass.CONFLICT: "Conflict",
    ErrorClass.ENDPOINT: "EndpointNotAllowed",
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
    """Stable id of one account at one endpoint, without the secret itself. Interned: the breaker and
    the limiter keep it per Trigger and per account, one copy for all the Triggers of an account."""
    ident = "|".join(f"{k}={credentials[k]}" for k in sorted(credentials))
    return sys.intern(f"{provider}:{endpoint}:{hashlib.sha256(ident.encode()).hexdigest()[:16]}")


def summarize(resp: requests.Response) -> str:
    """What may be said of an answer that is not a provider's error: never its text, which could be
    any service's (a tenant pointing an endpoint at an internal service must not read it back)."""
    try:
        phrase = HTTPStatus(resp.status_code).phrase
    except ValueError:
        phrase = ""
    kind = (resp.headers.get("Content-Type") or "no content type").split(";", 1)[0].strip()[:60]
    return f"{phrase + ', ' if phrase else ''}not a provider error answer ({kind}, {len(resp.content)} bytes)"


class _PolicyAdapter(HTTPAdapter):
    """Connections only to addresses the endpoint policy allows (endpoints.py)."""

    def __init__(self, policy: EndpointPolicy) -> None:
        self.policy = policy
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = pool_classes(self.policy)

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = pool_classes(self.policy)
        return manager

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        url = str(request.url)
        if url.startswith("http://") and select_proxy(url, kwargs.get("proxies") or {}):
            self.policy.check_url(url)  # the proxy connects; only the URL can be checked, here
        return super().send(request, *args, **kwargs)


class _OwnCredentialsOnly(requests.auth.AuthBase):
    """A request goes out with the credentials its provider signs it with, and nothing from ~/.netrc:
    requests would otherwise look the URL's host up there on every call (two file checks each) and
    send what it finds as Basic auth, to whatever host a tenant's spec names."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        return r


# The keyword arguments PolicySession.request sends on its direct path; any other goes through requests.
_DIRECT_KWARGS = frozenset({"headers", "timeout", "allow_redirects", "data", "json"})


def _prepare_url(url: str) -> str:
    p = requests.PreparedRequest()
    p.prepare_url(url, None)
    return str(p.url)


class PolicySession(requests.Session):
    """A provider session: the endpoint policy on every connection, and no redirect followed (a
    provider API never redirects; a redirect would take the call, and its credentials, elsewhere).

    No cookie is ever stored or sent: the session is shared by every Trigger and account of a
    provider, and a cookie one account's answer sets must not go out with another's requests."""

    def __init__(self, policy: EndpointPolicy) -> None:
        super().__init__()
        self.policy = policy
        self.auth = _OwnCredentialsOnly()
        self.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        adapter = _PolicyAdapter(policy)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self._environment: dict[tuple[Any, ...], _Settings] = {}
        # False: every request takes requests' own path (Session.request), as a comparison.
        self.direct = True
        # The direct path's sender (transport.py); None: the mounted adapter sends, as a comparison.
        self.transport: Transport | None = Transport(policy)
        # prepare_url (urllib3's parse, IDNA, requote) costs ~10 µs and a provider calls few URLs.
        self._prepared_url = lru_cache(maxsize=256)(_prepare_url)

    def close(self) -> None:
        super().close()
        if self.transport is not None:
            self.transport.close()

    def merge_environment_settings(
        self, url: str | bytes | None, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> _Settings:
        """requests reads the environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE) again for every
        request; a running operator's environment does not change, so once per origin is enough."""
        if proxies:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        key = (urlsplit(str(url))[:2], stream, verify, cert)
        got = self._environment.get(key)
        if got is None:
            got = super().merge_environment_settings(url, proxies, stream, verify, cert)
            self._environment[key] = got
        settings = got.copy()
        settings["proxies"] = dict(got["proxies"])
        return settings

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["allow_redirects"] = False
        m = method if isinstance(method, str) else method.decode()
        where = f"{m} {urlsplit(str(url)).path}"
        try:
            resp = self._send_direct(m, url, args, kwargs)
            if resp is None:
                resp = super().request(method, url, *args, **kwargs)
        except EndpointRefused as e:
            raise ProviderError(
                ErrorClass.ENDPOINT, f"{where}: endpoint not allowed: {e}", code="EndpointNotAllowed"
            ) from None
        if 300 <= resp.status_code < 400:
            raise ProviderError(
                ErrorClass.PERMANENT,
                f"{where}: HTTP {resp.status_code}: a redirect, which is not followed "
                f"(is the url or endpoint right?); {summarize(resp)}",
                code=str(resp.status_code),
                status=resp.status_code,
            )
        return resp

    def _direct_eligible(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> bool:
        """Whether requests' own path would add nothing to the request _prepare_direct builds: no
        session or per-call settings beyond headers, body and timeout, no hooks, no cookies."""
        data = kwargs.get("data")
        headers = kwargs.get("headers")
        return (
            self.direct
            and not args
            and kwargs.keys() <= _DIRECT_KWARGS
            and (data is None or isinstance(data, (str, bytes)))
            and (headers is None or isinstance(headers, Mapping))
            and not self.hooks["response"]
            and not self.params
            and not self.proxies
            and self.verify is True
            and self.cert is None
            and self.trust_env
            and not self.stream
            and isinstance(self.auth, _OwnCredentialsOnly)
            and isinstance(self.headers, CaseInsensitiveDict)
            and len(self.cookies) == 0
        )

    def _send_direct(
        self, method: str, url: str | bytes, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> requests.Response | None:
        """Send as requests' Session.request would, without its bookkeeping; None when not eligible.

        Per call, Session.prepare_request (cookie jars merged and a Cookie header computed, settings
        merged, auth and hooks set up) and Session.send (cookies extracted, redirect bookkeeping) cost
        ~70 µs of client CPU more than this path, ~100-200 µs a request with the response's cookie
        work (measured against the GitLab sandbox: a GET ~550 -> ~420 µs, a POST ~620 -> ~430 µs).
        Here the request is prepared to the same bytes and sent by the transport (transport.py:
        kept-alive http.client connections under the endpoint policy, ~270 µs a GET in all), or by
        the adapter for what the transport does not cover; either raises requests' exceptions as
        Session.send would. No cookie is extracted: the jar's policy would refuse it anyway."""
        if not self._direct_eligible(args, kwargs):
            return None
        p = self._prepare_direct(method, url, kwargs.get("headers"), kwargs.get("data"), kwargs.get("json"))
        if p is None:
            return None
        # The call Session.request makes (with no per-call proxies, stream, verify or cert).
        settings = self.merge_environment_settings(p.url, {}, None, None, None)
        verify = settings["verify"]  # True, or the environment's REQUESTS_CA_BUNDLE; never None here
        if settings["proxies"] or settings["stream"] or verify is None:
            return None
        adapter = self.get_adapter(str(p.url))
        timeout = kwargs.get("timeout")
        start = time.perf_counter()
        # No client certificate here (_direct_eligible), which the transport would not present.
        if (
            self.transport is not None
            and type(adapter) is _PolicyAdapter
            and self.transport.covers(p, timeout)
        ):
            r = self.transport.send(p, timeout, verify)
        else:
            r = adapter.send(
                p,
                stream=False,
                timeout=timeout,
                verify=verify,
                cert=settings["cert"],
                proxies=settings["proxies"],
            )
            r.content  # noqa: B018  # read the body, as Session.send does when not streaming
        r.elapsed = timedelta(seconds=time.perf_counter() - start)
        return r

    def _prepare_direct(
        self,
        method: str,
        url: str | bytes,
        headers: Mapping[str, Any] | None,
        data: str | bytes | None,
        json: Any,
    ) -> requests.PreparedRequest | None:
        """The PreparedRequest self.prepare_request(requests.Request(...)) makes, for a session with
        no params, hooks or cookies and auth _OwnCredentialsOnly (which changes nothing): the same
        method, URL, headers (in order) and body. None for header names that are not str."""
        # Session headers, then the call's, by lower-cased name (a call's value keeps the session
        # header's place and takes the call's spelling; None removes it): merge_setting's result.
        merged: dict[str, tuple[str, Any]] = {}
        for source in (self.headers, headers or {}):
            for name, value in source.items():
                if not isinstance(name, str):
                    return None
                merged[name.lower()] = (name, value)
        p = requests.PreparedRequest()
        p.method = method.upper()
        p.url = self._prepared_url(url.decode("utf-8") if isinstance(url, bytes) else str(url))
        p.headers = CaseInsensitiveDict()
        for name, value in merged.values():
            if value is not None:
                check_header_validity((name, value))  # InvalidHeader, as prepare_headers raises
                p.headers[name] = value
        # The body, Content-Length and Content-Type; requests sends `data or {}`, the same body.
        p.prepare_body(data, None, json)
        return p


def new_session(policy: EndpointPolicy | None = None) -> requests.Session:
    """A session for the endpoints a Trigger names, under `policy` (default: EndpointPolicy(), which
    refuses http, private and loopback addresses). Endpoints only the operator's own configuration
    chooses (ACK RRSA's STS) use plain_session()."""
    s = PolicySession(policy if policy is not None else EndpointPolicy())
    s.headers["User-Agent"] = USER_AGENT
    return s


def plain_session() -> requests.Session:
    s = requests.Session()
    s.headers["User-Agent"] = USER_AGENT
    return s


@dataclass
class _Circuit:
    failures: int = 0  # authentication failures in a row
    version: str = ""  # the credentials Secret's resourceVersion they happened with
    open_until: float = 0.0  # while open: no call with these credentials before this (clock time)
    cooldown: float = 0.0  # the next cool-down, doubling on every failed probe
    prober: str = ""  # the Trigger (uid) holding the half-open probe
    probe_deadline: float = 0.0  # a probe not reported by then is given to another Trigger
    message: str = ""  # the provider's last answer (redacted)
    in_flight: set[str] = field(default_factory=set)  # Trigger uids with a call under way (unproven)
    proven: bool = False  # the credentials authenticated at least once
    users: set[str] = field(default_factory=set)  # Trigger uids whose credentials these are now
    waiting: set[str] = field(default_factory=set)  # Trigger uids told to let others try them first


@dataclass(frozen=True)
class Verdict:
    """Why a call with some credentials must not go out now, and when to look again."""

    message: str
    retry_in: float
    open: bool  # True: the circuit is open (CredentialsInvalid); False: only waiting for a slot


class CredentialsBreaker:
    """A circuit breaker per account, shared by every Trigger using the same credentials.

    After `threshold` authentication failures in a row the circuit opens: no Trigger of that account
    calls the provider, and each says CredentialsInvalid at once. After a cool-down (doubling to
    `max_cooldown`) one Trigger may probe; success closes the circuit, failure reopens it. A new
    credentials Secret version closes it at once. Until the credentials have authenticated once, at
    most `threshold` calls with them are in flight, so many Triggers starting together with a bad key
    cost `threshold` failures, not one each. The Triggers told to wait for those calls are handed to
    `wake` (set by the operator) as soon as one ends, instead of each looking again a second later:
    with good credentials, a burst of new Triggers is then not held up by the first few calls.
    """

    # A Trigger told to wait for the first calls looks again after this long if nobody wakes it.
    first_wait: ClassVar[float] = 1.0

    def __init__(
        self,
        threshold: int = 3,
        cooldown: float = 300.0,
        max_cooldown: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self._lock = threading.Lock()
        self._circuits: dict[str, _Circuit] = {}
        self._key_of: dict[str, str] = {}  # Trigger uid -> the key of the credentials it last used
        self.wake: Callable[[set[str]], None] | None = None  # called outside the lock, from any thread

    def _get(self, key: str, version: str, uid: str) -> _Circuit:
        self._leave(uid, unless=key)
        c = self._circuits.setdefault(key, _Circuit(version=version))
        c.users.add(uid)
        self._key_of[uid] = key
        if c.version != version:
            # The credentials Secret changed: whatever failed before says nothing about it now.
            c.version = version
            c.failures, c.open_until, c.cooldown, c.prober = 0, 0.0, 0.0, ""
        return c

    def admit(self, key: str, uid: str, version: str = "") -> Verdict | None:
        """None: call the provider (then report success() or failure()); else why not, for how long."""
        with self._lock:
            c = self._get(key, version, uid)
            now = self.clock()
            if c.failures >= self.threshold:
                if now < c.open_until:
                    return Verdict(self._why(c), c.open_until - now, True)
                if c.prober and c.prober != uid and now < c.probe_deadline:
                    return Verdict(self._why(c), max(c.probe_deadline - now, 1.0), True)
                c.prober, c.probe_deadline = uid, now + 60.0
            elif not c.proven and uid not in c.in_flight and len(c.in_flight) + c.failures >= self.threshold:
                c.waiting.add(uid)
                return Verdict(
                    "waiting for other Triggers to try these credentials first", self.first_wait, False
                )
            c.waiting.discard(uid)
            c.in_flight.add(uid)
            return None

    def success(self, key: str, uid: str) -> None:
        with self._lock:
            c = self._circuits.get(key)
            if c is not None:
                c.in_flight.discard(uid)
                c.failures, c.open_until, c.prober, c.cooldown, c.proven = 0, 0.0, "", 0.0, True
            woken = self._release_waiting(c)
        self._wake(woken)

    def done(self, key: str, uid: str) -> None:
        """The pass ended without proving anything about the credentials (no call, or another error)."""
        with self._lock:
            c = self._circuits.get(key)
            woken: set[str] = set()
            if c is not None and uid in c.in_flight:
                c.in_flight.discard(uid)
                woken = self._release_waiting(c)  # a call ended unproven: another may try
            if c is not None and c.prober == uid:
                c.prober = ""
        self._wake(woken)

    def failure(self, key: str, uid: str, message: str) -> None:
        with self._lock:
            c = self._circuits.get(key)
            if c is None:
                return
            c.in_flight.discard(uid)
            c.failures += 1
            c.message = message
            c.proven = False
            if c.failures >= self.threshold:
                c.cooldown = min(c.cooldown * 2, self.max_cooldown) if c.cooldown else self.base_cooldown
                c.open_until = self.clock() + c.cooldown
                c.prober = ""
            woken = self._release_waiting(c)  # to be told the verdict, or to try in its place
        self._wake(woken)

    @staticmethod
    def _release_waiting(c: _Circuit | None) -> set[str]:
        """A call with the credentials ended: whoever waited for one may look again now."""
        if c is None or not c.waiting:
            return set()
        woken, c.waiting = c.waiting, set()
        return woken

    def _wake(self, uids: set[str]) -> None:
        if uids and self.wake is not None:
            self.wake(uids)

    def forget(self, uid: str) -> None:
        """The Trigger is gone: a circuit nobody uses any more is dropped."""
        with self._lock:
            self._leave(uid)

    def _leave(self, uid: str, unless: str = "") -> None:
        old = self._key_of.get(uid)
        if old is None or old == unless:
            return
        del self._key_of[uid]
        c = self._circuits.get(old)
        if c is not None:
            c.users.discard(uid)
            c.in_flight.discard(uid)
            c.waiting.discard(uid)
            if not c.users:
                del self._circuits[old]

    def open_count(self) -> dict[str, int]:
        """Open circuits by provider (the key's first part), for /metrics."""
        out: dict[str, int] = {}
        with self._lock:
            for key, c in self._circuits.items():
                if c.failures >= self.threshold:
                    provider = key.split(":", 1)[0]
                    out[provider] = out.get(provider, 0) + 1
        return out

    @staticmethod
    def _why(c: _Circuit) -> str:
        return (
            f"request not sent: the provider rejected these credentials {c.failures} times in a row "
            f"(last: {c.message}); no Trigger uses them until the credentials Secret changes or a "
            "periodic probe succeeds"
        )
