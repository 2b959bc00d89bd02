"""GitLab pipeline trigger tokens over the REST API v4 (reference/providers-gitlab.md)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import requests

from ..models import GitLabSpec
from .base import (
    DEFAULT_TIMEOUT,
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
from .pacing import GITLAB, GITLAB_COM, AccountLimiter, Profile, Signal, gitlab_signal

PER_PAGE = 100
PROJECT_CACHE_SECONDS = 300.0  # the API's maximum; fewer round trips when listing for crash recovery


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@functools.lru_cache(maxsize=256)
def pace_profile(url: str) -> Profile:
    """GitLab.com documents its limits; a self-managed instance has none unless its admin turns them on."""
    host = (urlsplit(url).hostname or "").lower()
    return GITLAB_COM if host in ("gitlab.com", "www.gitlab.com") else GITLAB


def is_masked(token: str | None) -> bool:
    # Non-owners see the first 4 characters only (§1.4); full tokens are 30+ characters.
    return token is not None and len(token) <= 4


class GitLabProvider:
    name: ClassVar[str] = "gitlab"
    in_place: ClassVar[frozenset[str]] = frozenset({"description"})
    replace_order: ClassVar[Literal["create_first", "delete_first"]] = "create_first"
    has_outputs: ClassVar[bool] = True
    find_uses_time: ClassVar[bool] = True  # created_at, owner and description narrow it

    def __init__(
        self,
        limiter: AccountLimiter | None = None,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        policy: EndpointPolicy | None = None,
    ) -> None:
        self.limiter = limiter or AccountLimiter()
        self.session = session or new_session(policy)  # policy: which endpoints (endpoints.py)
        self.timeout = timeout
        self._project_ids: dict[tuple[str, str, str], tuple[int, float]] = {}
        self._cache_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------------

    @staticmethod
    def _token(target: Target) -> str:
        token = target.credentials.get("token", "")
        if not token:
            raise CredentialsError("the credentials Secret has no key 'token'")
        return token

    @staticmethod
    def _base(block: GitLabSpec) -> str:
        return block.url.rstrip("/") + "/api/v4"

    def _request(self, target: Target, method: str, path: str, **kw: Any) -> requests.Response:
        block: GitLabSpec = target.block
        token = self._token(target)
        account = account_key(self.name, block.url, {"token": token})
        self.limiter.acquire(account, pace_profile(block.url))
        try:
            resp = self.session.request(
                method,
                self._base(block) + path,
                headers={"PRIVATE-TOKEN": token, "Accept": "application/json"},
                timeout=self.timeout,
                allow_redirects=False,
                **kw,
            )
            signal = gitlab_signal(resp.status_code, resp.headers)
            self.limiter.observe(account, signal)
        except requests.RequestException as e:
            # A create whose answer was lost may still have happened: the caller must look before retrying.
            kind = ErrorClass.AMBIGUOUS if method == "POST" else ErrorClass.TRANSIENT
            raise ProviderError(kind, redact(f"{method} {path}: {type(e).__name__}: {e}", [token])) from None
        finally:
            self.limiter.release(account)
        if resp.status_code < 400:
            return resp
        raise self._error(resp, method, path, signal, [token])

    def _error(
        self, resp: requests.Response, method: str, path: str, signal: Signal, secrets: list[str]
    ) -> ProviderError:
        status = resp.status_code
        try:
            body = resp.json()
        except ValueError:
            body = None
        # GitLab's errors are JSON with `message` or `error` (§5); anything else is summarised, never
        # copied: the url may point at any service (docs/security.md).
        found = (
            body.get("message") or body.get("error_description") or body.get("error")
            if isinstance(body, dict)
            else None
        )
        msg = (found if isinstance(found, str) else str(found)) if found else summarize(resp)
        msg = redact(f"{method} {path}: {status} {msg}"[:500], secrets)
        code = str(status)
        if status == 401:
            return ProviderError(ErrorClass.AUTH, msg, code=code, status=status)
        if status == 403:
            return ProviderError(ErrorClass.FORBIDDEN, msg, code=code, status=status)
        if status == 429:
            # The limiter already holds the whole account for Retry-After (else until RateLimit-Reset).
            wait = signal.retry_after
            return ProviderError(ErrorClass.THROTTLED, msg, code=code, status=status, retry_after=wait)
        if status >= 500:
            kind = ErrorClass.AMBIGUOUS if method == "POST" else ErrorClass.TRANSIENT
            return ProviderError(kind, msg, code=code, status=status)
        if status == 404:
            return ProviderError(ErrorClass.TARGET_NOT_FOUND, msg, code=code, status=status)
        return ProviderError(ErrorClass.PERMANENT, msg, code=code, status=status)

    # -- project resolution -----------------------------------------------------------------------

    def _spec_project_id(self, target: Target) -> int:
        """Numeric id of spec.project, resolved once and then taken from status.atProvider."""
        block: GitLabSpec = target.block
        if block.project.isdigit():
            return int(block.project)
        if target.known.get("project") == block.project and target.known.get("projectId"):
            return int(target.known["projectId"])
        # Many Triggers name the same project: one lookup per instance, token and path serves them all
        # for a while (a moved project is noticed when the cache entry expires).
        key = (block.url, account_key(self.name, block.url, {"token": self._token(target)}), block.project)
        with self._cache_lock:
            hit = self._project_ids.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        try:
            resp = self._request(target, "GET", "/projects/" + quote(block.project, safe=""))
        except ProviderError as e:
            if e.status == 404:
                e.message = (
                    f"project {block.project!r} not found or not visible to these credentials ({e.message})"
                )
            raise
        pid = int(resp.json()["id"])
        with self._cache_lock:
            self._project_ids[key] = (pid, time.monotonic() + PROJECT_CACHE_SECONDS)
        return pid

    def _live_project(self, target: Target) -> tuple[int, str | None]:
        """Where the existing trigger lives: the project recorded when it was created or adopted."""
        if target.known.get("projectId"):
            return int(target.known["projectId"]), target.known.get("project")
        return self._spec_project_id(target), target.block.project

    def _observed(self, target: Target, pid: int, data: Mapping[str, Any], project: str | None) -> Observed:
        """`project` is the spec.project value `pid` was resolved from (kept to skip the lookup next time)."""
        block: GitLabSpec = target.block
        token = data.get("token")
        owner = data.get("owner") or {}
        masked = is_masked(token)
        at_provider = {
            "project": project,
            "projectId": pid,
            "owner": owner.get("username"),
            "createdAt": data.get("created_at"),
            "lastUsed": data.get("last_used"),
            "expiresAt": data.get("expires_at"),
        }
        outputs = None
        if token and not masked:
            outputs = {"token": token, "url": f"{self._base(block)}/projects/{pid}/trigger/pipeline"}
        return Observed(
            external_id=str(data["id"]),
            fields={"description": data.get("description"), "projectId": pid},
            at_provider={k: v for k, v in at_provider.items() if v is not None},
            token=None if masked else token,
            token_masked=masked,
            outputs=outputs,
        )

    # -- the Provider protocol ----------------------------------------------------------------------

    def ambient_credentials(self, block: Any) -> Mapping[str, str] | None:
        return None  # GitLab tokens always come from a Secret

    def claim_key(self, block: Any, known: Mapping[str, Any], external_id: str) -> str:
        host = urlsplit(block.url).netloc.lower()
        project = known.get("projectId") or block.project
        return f"gitlab|{host}|{project}|{external_id}"

    def desired(self, target: Target) -> dict[str, Any]:
        return {"description": target.description, "projectId": self._spec_project_id(target)}

    def observe(self, target: Target, external_id: str) -> Observed | None:
        pid, project = self._live_project(target)
        try:
            resp = self._request(target, "GET", f"/projects/{pid}/triggers/{quote(external_id, safe='')}")
        except ProviderError as e:
            if e.status == 404 and "Trigger" in e.message:
                return None
            if e.status == 404:
                e.message = f"project {pid} not found or not visible to these credentials ({e.message})"
            raise
        return self._observed(target, pid, resp.json(), project)

    def find(self, target: Target, since: datetime) -> list[Observed]:
        pid = self._spec_project_id(target)
        me = self._request(target, "GET", "/user").json()["id"]
        found: list[Observed] = []
        page: str | None = "1"
        while page:
            resp = self._request(
                target, "GET", f"/projects/{pid}/triggers", params={"per_page": PER_PAGE, "page": page}
            )
            for item in resp.json():
                created = _parse_time(item.get("created_at"))
                if (
                    item.get("description") == target.description
                    and (item.get("owner") or {}).get("id") == me
                    and created is not None
                    and created >= since
                ):
                    found.append(self._observed(target, pid, item, target.block.project))
            page = resp.headers.get("x-next-page") or None
        return sorted(found, key=lambda o: int(o.external_id))

    def create(self, target: Target) -> Observed:
        pid = self._spec_project_id(target)
        resp = self._request(
            target, "POST", f"/projects/{pid}/triggers", json={"description": target.description}
        )
        return self._observed(target, pid, resp.json(), target.block.project)

    def update(self, target: Target, observed: Observed, changed: list[str]) -> Observed:
        pid, project = self._live_project(target)
        try:
            resp = self._request(
                target,
                "PUT",
                f"/projects/{pid}/triggers/{quote(observed.external_id, safe='')}",
                json={"description": target.description},
            )
        except ProviderError as e:
            if e.status == 403:
                e.message += " (only the trigger's owner can change its description: use the owner's token)"
            raise
        return self._observed(target, pid, resp.json(), project)

    def delete(self, target: Target, external_id: str) -> None:
        pid, _ = self._live_project(target)
        try:
            self._request(target, "DELETE", f"/projects/{pid}/triggers/{quote(external_id, safe='')}")
        except ProviderError as e:
            if e.status == 404:
                return  # the trigger (or its whole project) is gone: deleted
            raise
