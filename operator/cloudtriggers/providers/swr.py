"""Huawei Cloud SWR image triggers over the SWR v2 API (reference/providers-swr.md).

A trigger is keyed by (organization, repository, name): the name is the id, create answers 201 with
no body, only `enable` can change in place (PATCH, 201), everything else is delete + create under the
same name. Requests are signed with SDK-HMAC-SHA256 (signing/huawei.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import requests

from ..models import SwrSpec, swr_default_name
from ..signing import huawei
from .base import (
    DEFAULT_TIMEOUT,
    USER_AGENT,
    CredentialsError,
    EndpointPolicy,
    ErrorClass,
    Observed,
    ProviderError,
    Target,
    account_key,
    new_session,
    redact,
    summarize,
)
from .pacing import ACCEPTED, SWR, SWR_THROTTLING, AccountLimiter, Signal, swr_signal

log = logging.getLogger(__name__)

# eu-west-101 is the one region outside myhuaweicloud.com (huaweicloudsdkswr.v2.region.swr_region).
_ENDPOINT_EXCEPTIONS = {"eu-west-101": "https://swr-api.eu-west-101.myhuaweicloud.eu"}
# Huawei locks an AK/SK for 5 minutes after 5 authentication failures in a row; stay well under.
AUTH_FAILURE_LIMIT = 3
AUTH_FAILURE_WINDOW = 300.0

_AUTH_CODES = ("APIG.0301", "APIGW.0301")
_THROTTLE_CODES = SWR_THROTTLING


def default_endpoint(region: str) -> str:
    return _ENDPOINT_EXCEPTIONS.get(region, f"https://swr-api.{region}.myhuaweicloud.com")


def spec_endpoint(block: SwrSpec) -> str:
    return (block.endpoint or default_endpoint(block.region)).rstrip("/")


def triggers_path(organization: str, repository: str, name: str | None = None) -> str:
    """The API path; '/' in a repository name is sent as '$' (percent-encoded as %24, like the SDK)."""
    repo = quote(repository.replace("/", "$"), safe="")
    path = f"/v2/manage/namespaces/{quote(organization, safe='')}/repos/{repo}/triggers"
    return path if name is None else f"{path}/{quote(name, safe='')}"


def mask_key(access_key: str) -> str:
    """An access key id for messages: enough to recognise it, not the whole of it."""
    return access_key[:4] + "..." if len(access_key) > 8 else "***"


@dataclass(frozen=True)
class _Where:
    """Where a trigger lives: the endpoint used to reach it and its (region, organization, repository)."""

    endpoint: str
    region: str
    organization: str
    repository: str

    @property
    def host(self) -> str:
        return urlsplit(self.endpoint).netloc.lower()

    def at_provider(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "organization": self.organization,
            "repository": self.repository,
            "endpoint": self.endpoint,
        }


def _where(block: SwrSpec, known: Mapping[str, Any]) -> _Where:
    """The live trigger's location: the one recorded in status.atProvider, else the spec's.

    After an organization or repository change the old trigger still lives in the old place until the
    replacement deletes it. The spec's endpoint is used whenever the region is unchanged (it may be a
    new VPC endpoint or a restarted sandbox); the recorded one only to reach another region.
    """
    if known.get("organization") and known.get("repository"):
        region = str(known.get("region") or block.region)
        if region == block.region:
            endpoint = spec_endpoint(block)
        else:
            endpoint = str(known.get("endpoint") or default_endpoint(region)).rstrip("/")
        return _Where(endpoint, region, str(known["organization"]), str(known["repository"]))
    return _Where(spec_endpoint(block), block.region, block.organization, block.repository)


# -- the lock-out guard ---------------------------------------------------------------------------


@dataclass
class _KeyState:
    failures: int = 0  # consecutive authentication failures since the last answer that proved the key
    last_failure: float = 0.0  # clock() of the latest one
    in_flight: int = 0
    last_error: str = ""


class AuthGuard:
    """Keeps each access key under Huawei's lock-out threshold (5 failures in a row lock it for 5 min).

    Never more than `limit` consecutive authentication failures per key within `window` seconds:
    a request is sent only while failures plus requests in flight stay below `limit` (each one in
    flight may be one more failure). With `limit` failures the guard is closed: requests fail without
    being sent until `window` has passed since the last failure; then a single probe may go out, and if
    it fails too the guard stays closed for another `window`. Any answer proving that the key
    authenticated resets it. Huawei's own count has no documented time limit, so the guard never
    lets a burst follow a burst.
    """

    def __init__(
        self,
        limit: int = AUTH_FAILURE_LIMIT,
        window: float = AUTH_FAILURE_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        slot_wait: float = 60.0,
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.slot_wait = slot_wait  # how long a request waits for an in-flight slot of its key
        self._cond = threading.Condition()
        self._keys: dict[str, _KeyState] = {}

    def failures(self, key: str) -> int:
        with self._cond:
            return self._keys.get(key, _KeyState()).failures

    def acquire(self, key: str) -> None:
        """Reserve a request slot for `key`, or raise ProviderError(AUTH) when the guard is closed."""
        deadline = time.monotonic() + self.slot_wait
        with self._cond:
            while True:
                st = self._keys.setdefault(key, _KeyState())
                if st.failures >= self.limit:
                    reopen = st.last_failure + self.window - self.clock()
                    if reopen >= 0:
                        last = st.last_error or "unknown"
                        raise ProviderError(
                            ErrorClass.AUTH,
                            f"request not sent: {st.failures} authentication failures in a row with access "
                            f"key {mask_key(key)}, and Huawei locks a key for 5 minutes after 5; next "
                            f"attempt in {reopen:.0f} s at the earliest. Last error: {last}",
                            code="LockoutGuard",
                            retry_after=reopen,
                        )
                    if st.in_flight == 0:  # the window has passed: one probe, alone
                        st.in_flight = 1
                        return
                elif st.failures + st.in_flight < self.limit:
                    st.in_flight += 1
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ProviderError(
                        ErrorClass.TRANSIENT,
                        f"too many requests in flight for access key {mask_key(key)} while its "
                        "authentication is uncertain; will retry",
                    )
                self._cond.wait(min(remaining, 1.0))

    def release(self, key: str, outcome: Literal["ok", "auth_failure", "unknown"], message: str = "") -> None:
        """`ok`: the key authenticated (2xx, 4xx but 401/429); `unknown`: no verdict (5xx, 429, timeout)."""
        with self._cond:
            st = self._keys.setdefault(key, _KeyState())
            st.in_flight = max(st.in_flight - 1, 0)
            if outcome == "ok":
                st.failures, st.last_error = 0, ""
            elif outcome == "auth_failure":
                st.failures += 1
                st.last_failure = self.clock()
                st.last_error = message
            self._cond.notify_all()


# -- error bodies ---------------------------------------------------------------------------------


def parse_error(body: Any, text: str) -> tuple[str, str]:
    """(code, message) from any of the three documented error shapes (reference section 6)."""
    if isinstance(body, list):  # old SWR format: [{"errorCode", "errorMessage", "detail"}]
        first = next((e for e in body if isinstance(e, dict)), {})
        code = str(first.get("errorCode") or first.get("error_code") or "")
        msg = str(first.get("errorMessage") or first.get("errorMsg") or first.get("error_msg") or "")
        detail = first.get("detail")
        return code, f"{msg} ({detail})" if msg and detail else msg or str(detail or text)
    if isinstance(body, dict):
        # New SWR format carries both error_code/error_msg and errors[]; APIG errors only the former.
        for ck, mk in (("error_code", "error_msg"), ("errorCode", "errorMsg"), ("code", "message")):
            if body.get(ck) or body.get(mk):
                return str(body.get(ck) or ""), str(body.get(mk) or "")
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            return parse_error(errors, text)
    return "", text.strip()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# -- the provider ---------------------------------------------------------------------------------


class SwrProvider:
    name: ClassVar[str] = "swr"
    in_place: ClassVar[frozenset[str]] = frozenset({"enabled"})
    # The name is the id and must be reused: the old trigger has to go before the new one can exist.
    replace_order: ClassVar[Literal["create_first", "delete_first"]] = "delete_first"
    has_outputs: ClassVar[bool] = False
    find_uses_time: ClassVar[bool] = True  # the name is the id: nothing else can answer to it

    def __init__(
        self,
        limiter: AccountLimiter | None = None,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        policy: EndpointPolicy | None = None,
        guard: AuthGuard | None = None,
    ) -> None:
        self.limiter = limiter or AccountLimiter()
        self.session = session or new_session(policy)  # policy: which endpoints (endpoints.py)
        self.timeout = timeout
        self.guard = guard or AuthGuard()

    # -- plumbing -------------------------------------------------------------------------------

    @staticmethod
    def _keys(target: Target) -> tuple[str, str]:
        ak = target.credentials.get("accessKey", "")
        sk = target.credentials.get("secretKey", "")
        if not ak or not sk:
            missing = [k for k, v in (("accessKey", ak), ("secretKey", sk)) if not v]
            raise CredentialsError(f"the credentials Secret has no key(s): {', '.join(missing)}")
        return ak, sk

    def _request(
        self, target: Target, where: _Where, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> requests.Response:
        ak, sk = self._keys(target)
        token = target.credentials.get("securityToken") or None
        secrets = [sk, token or ""]
        url = where.endpoint + path
        # json.dumps defaults (", " and ": "), the bytes the SDK sends; the signature covers them.
        data = json.dumps(body).encode() if body is not None else b""
        account = account_key(self.name, where.endpoint, {"accessKey": ak})
        self.limiter.acquire(account, SWR)
        try:
            self.guard.acquire(ak)
            outcome: Literal["ok", "auth_failure", "unknown"] = "unknown"
            message = ""
            try:
                # Signed after the waits above: X-Sdk-Date must be within 15 minutes of the server's clock.
                headers = huawei.sign(
                    method,
                    url,
                    {"Content-Type": "application/json", "User-Agent": USER_AGENT},
                    data,
                    ak,
                    sk,
                    project_id=target.credentials.get("projectId") or None,
                    security_token=token,
                )
                try:
                    resp = self.session.request(
                        method,
                        url,
                        data=data or None,
                        headers=headers,
                        timeout=self.timeout,
                        allow_redirects=False,
                    )
                except requests.RequestException as e:
                    # A create whose answer was lost may have happened: the caller must look before retrying.
                    kind = ErrorClass.AMBIGUOUS if method == "POST" else ErrorClass.TRANSIENT
                    raise ProviderError(
                        kind, redact(f"{method} {path}: {type(e).__name__}: {e}", secrets)
                    ) from None
                log.debug("swr: %s %s -> %s", method, path, resp.status_code)
                if resp.status_code < 400:
                    self.limiter.observe(account, ACCEPTED)
                    outcome = "ok"
                    return resp
                err, signal = self._error(resp, method, path, secrets)
                self.limiter.observe(account, signal)
                if err.kind is ErrorClass.AUTH:
                    outcome, message = "auth_failure", str(err)
                elif err.status is not None and err.status < 500 and err.kind is not ErrorClass.THROTTLED:
                    outcome = "ok"  # SWR itself answered (400/403/404/409): the key authenticated
                raise err
            finally:
                self.guard.release(ak, outcome, message)
        finally:
            self.limiter.release(account)

    def _error(
        self, resp: requests.Response, method: str, path: str, secrets: list[str]
    ) -> tuple[ProviderError, Signal]:
        """The error, and what it says about the account's pace."""
        status = resp.status_code
        try:
            body: Any = resp.json()
        except ValueError:
            body = None
        # Not one of SWR's error shapes: summarised, never copied (the endpoint may be any service).
        code, msg = parse_error(body, summarize(resp))
        request_id = resp.headers.get("X-Request-Id") or (
            body.get("request_id") if isinstance(body, dict) else ""
        )
        text = f"{method} {path}: HTTP {status}: {msg}"
        if request_id:
            text += f" (request id {request_id})"
        text = redact(text[:500], secrets)
        code = code or str(status)
        signal = swr_signal(status, code, msg, resp.headers)
        if signal.throttled:
            # The limiter holds the account for Retry-After, else 2 s (pacing.SWR); the reconciler waits
            # what the gateway said, or backs off.
            wait = signal.retry_after
            err = ProviderError(ErrorClass.THROTTLED, text, code=code, status=status, retry_after=wait)
        elif status == 401 or code in _AUTH_CODES:
            err = ProviderError(ErrorClass.AUTH, text, code=code, status=status)
        elif status == 403:
            err = ProviderError(ErrorClass.FORBIDDEN, text, code=code, status=status)
        elif status >= 500:
            kind = ErrorClass.AMBIGUOUS if method == "POST" else ErrorClass.TRANSIENT
            err = ProviderError(kind, text, code=code, status=status)
        elif status == 404:
            err = ProviderError(ErrorClass.TARGET_NOT_FOUND, text, code=code, status=status)
        elif status == 409:
            err = ProviderError(ErrorClass.CONFLICT, text, code=code, status=status)
        else:
            err = ProviderError(ErrorClass.PERMANENT, text, code=code, status=status)
        return err, signal

    def _show(self, target: Target, where: _Where, name: str) -> Observed | None:
        try:
            resp = self._request(
                target, where, "GET", triggers_path(where.organization, where.repository, name)
            )
        except ProviderError as e:
            if e.status == 404:
                return None  # the trigger, or its repository or organization, does not exist
            raise
        return self._observed(where, resp.json(), name)

    @staticmethod
    def _observed(where: _Where, data: Mapping[str, Any], name: str) -> Observed:
        fields = {
            "name": str(data.get("name") or name),
            "region": where.region,
            "organization": where.organization,
            "repository": where.repository,
            "enabled": str(data.get("enable", "")).lower() == "true",  # "true"/"false" on the wire
            "triggerType": data.get("trigger_type") or "",
            "condition": data.get("condition") or "",
            "appType": data.get("app_type") or "",
            "application": data.get("application") or "",
            "clusterNamespace": data.get("cluster_ns") or "",
            "container": data.get("container") or "",
            "triggerMode": data.get("trigger_mode") or "cce",
            # cci triggers come back with "" here; None so a spec without them never differs.
            "clusterId": data.get("cluster_id") or None,
            "clusterName": data.get("cluster_name") or None,
        }
        at_provider: dict[str, Any] = {
            **where.at_provider(),
            "createdAt": data.get("created_at"),
            "creatorName": data.get("creator_name"),
        }
        history = [h for h in data.get("trigger_history") or [] if isinstance(h, dict)]
        if history:
            last = max(history, key=lambda h: str(h.get("created_at") or ""))
            at_provider.update(
                lastTag=last.get("tag"), lastResult=last.get("result"), lastTriggeredAt=last.get("created_at")
            )
        return Observed(
            external_id=str(data.get("name") or name),
            fields=fields,
            at_provider={k: v for k, v in at_provider.items() if v not in (None, "")},
        )

    @staticmethod
    def _object_name(target: Target) -> str:
        return target.object_name or target.block.name or swr_default_name(target.namespace, target.name)

    # -- the Provider protocol ----------------------------------------------------------------------

    def ambient_credentials(self, block: Any) -> Mapping[str, str] | None:
        return None  # SWR keys always come from a Secret

    def claim_key(self, block: Any, known: Mapping[str, Any], external_id: str) -> str:
        w = _where(block, known)
        return f"swr|{w.host}|{w.organization}|{w.repository}|{external_id}"

    def desired(self, target: Target) -> dict[str, Any]:
        b: SwrSpec = target.block
        out: dict[str, Any] = {
            "region": b.region,
            "organization": b.organization,
            "repository": b.repository,
            "enabled": b.enabled,
            "triggerType": b.trigger_type,
            "condition": b.condition,
            "appType": b.app_type,
            "application": b.application,
            "clusterNamespace": b.cluster_namespace,
            "container": b.container,
            "triggerMode": b.trigger_mode,
        }
        if b.name:
            # An explicit name that changes is a rename, which SWR can only do as delete + create. A
            # derived name cannot change (metadata.name is immutable), and leaving it out keeps an
            # adoption by spec.externalId of a differently named trigger from replacing it.
            out["name"] = target.object_name or b.name
        # Only what the spec sets, and never for cci (SWR blanks them): no perpetual replacement.
        if b.trigger_mode == "cce" and b.cluster_id:
            out["clusterId"] = b.cluster_id
        if b.trigger_mode == "cce" and b.cluster_name:
            out["clusterName"] = b.cluster_name
        return out

    def observe(self, target: Target, external_id: str) -> Observed | None:
        return self._show(target, _where(target.block, target.known), external_id)

    def find(self, target: Target, since: datetime) -> list[Observed]:
        # The name is deterministic, so a create that may have happened is found by name where it was sent.
        where = _where(target.block, {})
        found = self._show(target, where, self._object_name(target))
        if found is None:
            return []
        created = _parse_time(found.at_provider.get("createdAt"))
        if created is not None and created.tzinfo is not None and created < since:
            return []  # older than the create intent: not ours to adopt silently
        return [found]

    def create(self, target: Target) -> Observed:
        b: SwrSpec = target.block
        where = _where(b, {})  # always where the spec says; the old one (if any) is deleted first
        name = self._object_name(target)
        cce = b.trigger_mode == "cce"
        body = {
            "action": "update",
            "app_type": b.app_type,
            "application": b.application,
            "cluster_id": (b.cluster_id or "") if cce else "",
            "cluster_name": (b.cluster_name or "") if cce else "",
            "cluster_ns": b.cluster_namespace,
            "condition": b.condition,
            "container": b.container,
            "enable": "true" if b.enabled else "false",
            "name": name,
            "trigger_mode": b.trigger_mode,
            "trigger_type": b.trigger_type,
        }
        try:
            self._request(target, where, "POST", triggers_path(where.organization, where.repository), body)
        except ProviderError as e:
            if e.kind is ErrorClass.CONFLICT:
                e.message = (
                    f"trigger {name} already exists in {where.organization}/{where.repository} ({e.message})"
                )
            elif e.status == 404:
                e.message = (
                    f"organization {where.organization!r} or repository {where.repository!r} not found in "
                    f"{where.region} ({e.message})"
                )
            raise
        # 201 carries no body: read the trigger back.
        try:
            created = self._show(target, where, name)
        except ProviderError as e:
            raise ProviderError(
                ErrorClass.AMBIGUOUS, f"created trigger {name} but could not read it back: {e.message}"
            ) from None
        if created is None:
            raise ProviderError(ErrorClass.AMBIGUOUS, f"created trigger {name} but it is not readable yet")
        return created

    def update(self, target: Target, observed: Observed, changed: list[str]) -> Observed:
        where = _where(target.block, target.known)
        enabled = bool(target.block.enabled)
        try:
            self._request(
                target,
                where,
                "PATCH",
                triggers_path(where.organization, where.repository, observed.external_id),
                {"enable": "true" if enabled else "false"},
            )
        except ProviderError as e:
            if e.status == 404:
                # Deleted since it was observed: the next pass sees it gone and recreates it.
                raise ProviderError(
                    ErrorClass.TRANSIENT,
                    f"trigger {observed.external_id} disappeared: {e.message}",
                    status=404,
                ) from None
            raise
        # PATCH answers 201 with no body; `enable` is the only thing it changes.
        return Observed(
            external_id=observed.external_id,
            fields={**observed.fields, "enabled": enabled},
            at_provider=dict(observed.at_provider),
        )

    def delete(self, target: Target, external_id: str) -> None:
        where = _where(target.block, target.known)
        try:
            self._request(
                target, where, "DELETE", triggers_path(where.organization, where.repository, external_id)
            )
        except ProviderError as e:
            if e.status == 404:
                return  # the trigger (or its repository) is gone: deleted
            raise
