"""HTTP emulator of the Huawei Cloud SWR v2 image-trigger API (shared/reference/providers-swr.md).

It answers the five trigger operations as the reference says: create 201 with no body, list (a JSON
array, `trigger_history: null`), show, PATCH of `enable` only (201), delete 204; 404 for a missing
organization, repository or trigger; 409 for a duplicate name; the trigger-name rules; `enable` kept
as the string "true"/"false"; '/' in a repository name arriving as '$'.

Like the API gateway in front of SWR, it verifies the SDK-HMAC-SHA256 signature of every request
(X-Sdk-Date within 15 minutes, X-Security-Token for temporary keys, X-Project-Id when sent) and answers
APIG.0301 on a bad one, counting consecutive failures per access key and locking the key for 5
minutes after 5 of them. The three error-body shapes of the reference are all used: APIG errors
(401, 429 APIG.0308), the old SWR array (400, 404, 409, 5xx) and the new SWR object (403). The
shapes and the APIG codes come from the reference; the SVCSTG.SWR codes are illustrative.

Faults (latency, 5xx, throttling, lost create answers, forced statuses) can be set at any time.
Standard library only (plus the pure signer next door): this module ships inside the product package.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..signing import huawei

__all__ = ["Faults", "RequestRecord", "SwrAccount", "SwrSandbox", "SwrTemporaryCredentials", "serve"]

from ._faults import FaultKnobs
from ._http import SandboxHandler, ServedSandbox

log = logging.getLogger(__name__)

LOCK_AFTER = 5  # consecutive authentication failures that lock an access key...
LOCK_SECONDS = 300.0  # ...for this long (reference section 6.3)
DATE_TOLERANCE = 900.0  # X-Sdk-Date must be within 15 minutes of the server's clock (section 8.3)

# Trigger names: a letter first; letters, digits, '_' and '-'; no doubled or trailing separator; 1-64.
TRIGGER_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*([-_][A-Za-z0-9]+)*")
TRIGGER_NAME_MAX = 64
ORG_RE = re.compile(r"[a-z][a-z0-9]*(([.\-]|_{1,2})[a-z0-9]+)*")
REPO_RE = re.compile(r"[a-z0-9]([a-z0-9._/-]*[a-z0-9])?")

_PREFIX = "/v2/manage/namespaces/"
_REDACTED = "[REDACTED]"
_SECRET_HEADERS = frozenset({"authorization", "x-security-token"})

# Illustrative SVCSTG.SWR codes (the reference documents the shapes, not these numbers).
CODE_BAD_REQUEST = "SVCSTG.SWR.4001008"
CODE_ORG_NOT_FOUND = "SVCSTG.SWR.4040002"
CODE_REPO_NOT_FOUND = "SVCSTG.SWR.4040003"
CODE_TRIGGER_NOT_FOUND = "SVCSTG.SWR.4040017"
CODE_TRIGGER_EXISTS = "SVCSTG.SWR.4090017"
CODE_FORBIDDEN = "SVCSTG.SWR.4030170"  # the reference's new-format example
CODE_INTERNAL = "SVCSTG.SWR.5000001"


def _now_iso(ts: float) -> str:
    """SWR's timestamp format: "2020-04-16T01:35:08.639589Z"."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _random_key(n: int, alphabet: str = string.ascii_uppercase + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


# --------------------------------------------------------------------------------------------------
# Public records


@dataclass(frozen=True)
class SwrAccount:
    """An IAM user's permanent AK/SK. read_only: may list and show, but every write answers 403."""

    name: str
    access_key: str
    secret_key: str
    project_id: str
    read_only: bool = False


@dataclass(frozen=True)
class SwrTemporaryCredentials:
    """A temporary AK/SK with its security token (sent as X-Security-Token)."""

    account: str
    access_key: str
    secret_key: str
    security_token: str
    expires_at: float  # sandbox clock (time.time() plus any advance())


@dataclass(frozen=True)
class RequestRecord:
    """One API request as the gateway saw it. Authorization and X-Security-Token values are redacted."""

    method: str
    path: str  # raw path as sent, e.g. /v2/manage/namespaces/group/repos/team%24web/triggers
    query: dict[str, str]
    status: int  # for a dropped create: the 201 the client never received
    code: str  # error code of the answer ("" on success)
    access_key: str | None  # from the Authorization header, authenticated or not
    authenticated: bool
    headers: dict[str, str]  # lower-case names
    body: Any  # the parsed JSON request body, or None
    dropped: bool = False
    at: float = 0.0


@dataclass
class Faults(FaultKnobs):
    """SWR's faults: a throttled request gets 429 APIG.0308. Faults apply after authentication, as at
    the real gateway; latency applies to every request."""

    retry_after: int = 0  # Retry-After seconds on a 429; 0: no header (the gateway documents none)
    # The rate limit counts per user, like the gateway's "policy user" (reference section 7), and its
    # APIG.0308 names that limit and window.

    def fail_next(self, n: int, status: int, body: Any = None) -> None:
        """Answer the next `n` authenticated API requests with `status` (and `body`, default by status)."""
        if n < 0 or not 100 <= status <= 599:
            raise ValueError(f"bad fail_next({n}, {status})")
        if n:
            with self._lock:
                self._forced.append([n, status, body])

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            data = self._knobs()
            data["fail_next"] = [{"n": n, "status": s} for n, s, _ in self._forced]
            return data

    def _draw(self) -> tuple[int, Any] | None:
        with self._lock:
            if self._forced:
                entry = self._forced[0]
                entry[0] -= 1
                if entry[0] <= 0:
                    self._forced.popleft()
                return int(entry[1]), entry[2]
            status = self._random_fault()
            return None if status is None else (status, None)


# --------------------------------------------------------------------------------------------------
# Server-side state


@dataclass
class _Cred:
    account: SwrAccount
    secret_key: str
    token: str | None = None
    expires_at: float | None = None


@dataclass
class _KeyAuth:
    failures: int = 0  # consecutive
    locked_until: float = 0.0


@dataclass
class _Reply:
    status: int
    body: Any = None  # JSON value or None (empty body)
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    code: str = ""


class _ApiError(Exception):
    def __init__(self, status: int, body: Any, code: str) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.code = code
        self.headers: dict[str, str] = {}


def _apig_error(status: int, code: str, message: str) -> _ApiError:
    # Shape 3: the gateway's own answer; the request never reached SWR.
    return _ApiError(
        status, {"error_code": code, "error_msg": message, "request_id": secrets.token_hex(16)}, code
    )


def _old_error(status: int, code: str, message: str, detail: str = "") -> _ApiError:
    # Shape 1: the old SWR format, a JSON array.
    return _ApiError(status, [{"errorCode": code, "errorMessage": message, "detail": detail}], code)


def _new_error(status: int, code: str, message: str) -> _ApiError:
    # Shape 2: the new SWR format, with both spellings.
    return _ApiError(
        status,
        {
            "errors": [
                {
                    "errorCode": code,
                    "errorMessage": message,
                    "detail": "",
                    "encoded_authorization_message": "",
                }
            ],
            "error_code": code,
            "error_msg": message,
            "details": [{"error_code": code, "error_msg": message}],
            "encoded_authorization_message": "",
        },
        code,
    )


def _auth_failure(reason: str) -> _ApiError:
    return _apig_error(401, "APIG.0301", f"Incorrect IAM authentication information: {reason}")


_TIME_UNITS = ((86400.0, "day"), (3600.0, "hour"), (60.0, "minute"), (1.0, "second"))


def _throttled(limit: int = 20, window: float = 1.0) -> _ApiError:
    # The gateway names its policy: XX requests per time unit (reference section 7).
    seconds, unit = next(((s, u) for s, u in _TIME_UNITS if window >= s and window % s == 0), (1.0, "second"))
    return _apig_error(
        429,
        "APIG.0308",
        "The throttling threshold has been reached: policy user over ratelimit,"
        f"limit:{limit},time:{int(window // seconds)} {unit}",
    )


def _bad_request(message: str) -> _ApiError:
    return _old_error(400, CODE_BAD_REQUEST, "Invalid parameter", message)


def _api_not_found() -> _ApiError:
    return _apig_error(
        404, "APIG.0101", "The API does not exist or has not been published in the environment"
    )


_TRIGGER_FIELDS = (
    "action",
    "app_type",
    "application",
    "cluster_id",
    "cluster_name",
    "cluster_ns",
    "condition",
    "container",
    "enable",
    "name",
    "trigger_mode",
    "trigger_type",
)
# TriggerHistories copies these from the trigger (plus created_at, creator_name, detail, result, tag).
_HISTORY_FIELDS = (
    "action",
    "app_type",
    "application",
    "cluster_id",
    "cluster_name",
    "cluster_ns",
    "condition",
    "container",
)
_REQUIRED = ("action", "app_type", "application", "cluster_ns", "condition", "enable", "name", "trigger_type")


@dataclass
class _Trigger:
    data: dict[str, str]  # the wire fields, every value a string (enable "true"/"false")
    created_at: str
    creator_name: str
    history: list[dict[str, str]] = field(default_factory=list)

    def json(self, *, history_null: bool = False) -> dict[str, Any]:
        return {
            **self.data,
            "created_at": self.created_at,
            "creator_name": self.creator_name,
            "trigger_history": None if history_null else [dict(h) for h in self.history],
        }


# --------------------------------------------------------------------------------------------------
# The sandbox


class SwrSandbox(ServedSandbox):
    """An SWR API emulator on a background thread. Use as a context manager or start()/stop()."""

    label = "SWR sandbox"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._init_server(host, port)
        self._lock = threading.RLock()  # guards all server-side state
        self._records_lock = threading.Lock()
        self._creds: dict[str, _Cred] = {}
        self._accounts: dict[str, SwrAccount] = {}
        self._auth: dict[str, _KeyAuth] = {}
        # organization -> repository -> trigger name -> trigger
        self._orgs: dict[str, dict[str, dict[str, _Trigger]]] = {}
        self._offset = 0.0
        self.requests: list[RequestRecord] = []
        self.faults = Faults()
        # Called after each API request is served and recorded, before the answer is sent (method,
        # path, status): fault tests use it to kill the operator right after the provider acted.
        self.after_request: Callable[[str, str, int], None] | None = None

    # ---- lifecycle

    # ---- the clock (lock-outs, X-Sdk-Date, temporary credentials)

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the sandbox clock forward (a lock-out expires without waiting 5 minutes)."""
        with self._lock:
            self._offset += seconds

    # ---- setup

    def add_account(
        self,
        name: str,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        project_id: str | None = None,
        read_only: bool = False,
    ) -> SwrAccount:
        """An IAM user with a permanent AK/SK (20 and 40 characters, like Huawei's)."""
        with self._lock:
            if name in self._accounts:
                raise ValueError(f"account {name!r} already exists")
            account = SwrAccount(
                name=name,
                access_key=access_key or _random_key(20),
                secret_key=secret_key or _random_key(40, string.ascii_letters + string.digits),
                project_id=project_id or secrets.token_hex(16),
                read_only=read_only,
            )
            if account.access_key in self._creds:
                raise ValueError("access key already in use")
            self._accounts[name] = account
            self._creds[account.access_key] = _Cred(account, account.secret_key)
            return account

    def add_temporary_credentials(
        self, account: str, *, expires_in: float = 3600.0
    ) -> SwrTemporaryCredentials:
        """A temporary AK/SK plus security token for `account`, valid for `expires_in` seconds."""
        with self._lock:
            acct = self._accounts[account]
            temp = SwrTemporaryCredentials(
                account=account,
                access_key=_random_key(20),
                secret_key=_random_key(40, string.ascii_letters + string.digits),
                security_token="gQpjbi1ub3J0aC00" + secrets.token_urlsafe(96),
                expires_at=self.now() + expires_in,
            )
            self._creds[temp.access_key] = _Cred(acct, temp.secret_key, temp.security_token, temp.expires_at)
            return temp

    def add_organization(self, organization: str) -> None:
        if not ORG_RE.fullmatch(organization) or len(organization) > 64:
            raise ValueError(f"invalid organization name {organization!r}")
        with self._lock:
            self._orgs.setdefault(organization, {})

    def add_repository(self, organization: str, repository: str) -> None:
        """Add an image repository (and its organization if new); the name may contain '/'."""
        if not REPO_RE.fullmatch(repository) or len(repository) > 128:
            raise ValueError(f"invalid repository name {repository!r}")
        with self._lock:
            self.add_organization(organization)
            self._orgs[organization].setdefault(repository, {})

    # ---- server-side inspection and out-of-band changes

    def triggers(self, organization: str, repository: str) -> list[dict[str, Any]]:
        """Server-side truth, ordered by name, in wire form (with trigger_history as a list)."""
        with self._lock:
            repo = self._repo_or_key_error(organization, repository)
            return [repo[n].json() for n in sorted(repo)]

    def trigger(self, organization: str, repository: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            t = self._repo_or_key_error(organization, repository).get(name)
            return t.json() if t else None

    def create_trigger(
        self, organization: str, repository: str, name: str, *, creator: str = "console", **wire: str
    ) -> dict[str, Any]:
        """Create a trigger without HTTP (as the console would). `wire`: fields by their API names."""
        defaults = {
            "action": "update",
            "app_type": "deployments",
            "application": "web",
            "cluster_id": "",
            "cluster_name": "",
            "cluster_ns": "default",
            "condition": ".*",
            "container": "",
            "enable": "true",
            "trigger_mode": "cce",
            "trigger_type": "all",
        }
        unknown = set(wire) - set(_TRIGGER_FIELDS)
        if unknown:
            raise TypeError(f"unknown trigger fields: {sorted(unknown)}")
        with self._lock:
            repo = self._repo_or_key_error(organization, repository)
            if name in repo:
                raise ValueError(f"trigger {name!r} already exists")
            data = {**defaults, **{k: str(v) for k, v in wire.items()}, "name": name}
            repo[name] = _Trigger(data, _now_iso(self.now()), creator)
            return repo[name].json()

    def edit_trigger(self, organization: str, repository: str, name: str, **wire: str) -> None:
        """Change fields of a trigger out of band (what the console or another tool might do)."""
        unknown = set(wire) - set(_TRIGGER_FIELDS) - {"creator_name"}
        if unknown or "name" in wire:
            raise TypeError(f"cannot edit: {sorted(unknown | ({'name'} & set(wire)))}")
        with self._lock:
            t = self._repo_or_key_error(organization, repository)[name]
            for k, v in wire.items():
                if k == "creator_name":
                    t.creator_name = str(v)
                else:
                    t.data[k] = str(v)

    def delete_trigger(self, organization: str, repository: str, name: str) -> None:
        with self._lock:
            del self._repo_or_key_error(organization, repository)[name]

    def push(self, organization: str, repository: str, tag: str) -> list[str]:
        """An image push: every enabled trigger whose condition matches records a history entry."""
        fired: list[str] = []
        with self._lock:
            for name, t in sorted(self._repo_or_key_error(organization, repository).items()):
                if t.data.get("enable") != "true" or not _matches(t.data, tag):
                    continue
                entry = {k: t.data.get(k, "") for k in _HISTORY_FIELDS}
                entry.update(
                    created_at=_now_iso(self.now()),
                    creator_name=t.creator_name,
                    detail="",
                    result="success",
                    tag=tag,
                )
                t.history.append(entry)
                fired.append(name)
        return fired

    def auth_failures(self, access_key: str) -> int:
        """Consecutive authentication failures the gateway has counted for this key."""
        with self._lock:
            return self._auth.get(access_key, _KeyAuth()).failures

    def locked(self, access_key: str) -> bool:
        with self._lock:
            return self._auth.get(access_key, _KeyAuth()).locked_until > self.now()

    def unlock(self, access_key: str) -> None:
        with self._lock:
            self._auth.pop(access_key, None)

    def calls(self, method: str | None = None, path_contains: str | None = None) -> list[RequestRecord]:
        with self._records_lock:
            snapshot = list(self.requests)
        return [
            r
            for r in snapshot
            if (method is None or r.method == method.upper())
            and (path_contains is None or path_contains in r.path)
        ]

    def clear_requests(self) -> None:
        with self._records_lock:
            self.requests.clear()

    def fail_next(self, n: int, status: int, body: Any = None) -> None:
        self.faults.fail_next(n, status, body)

    def reset_faults(self) -> None:
        self.faults.reset()

    # ---- internals

    def _repo_or_key_error(self, organization: str, repository: str) -> dict[str, _Trigger]:
        try:
            return self._orgs[organization][repository]
        except KeyError:
            raise KeyError(f"no sandbox repository {organization}/{repository}") from None

    def _record(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
        reply: _Reply,
        access_key: str | None,
        authenticated: bool,
    ) -> None:
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        record = RequestRecord(
            method=method,
            path=path,
            query=dict(query),
            status=reply.status,
            code=reply.code,
            access_key=access_key,
            authenticated=authenticated,
            headers={k: (_REDACTED if k in _SECRET_HEADERS else v) for k, v in headers.items()},
            body=parsed,
            dropped=reply.drop,
            at=time.time(),
        )
        with self._records_lock:
            self.requests.append(record)

    def _authenticate(
        self, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str], body: bytes
    ) -> tuple[str | None, _Cred]:
        """The caller's credentials, or _ApiError(401 APIG.0301). Counts failures and locks keys."""
        parsed = huawei.parse_authorization(headers.get("authorization", ""))
        if parsed is None:
            raise _auth_failure("Authorization header missing or not SDK-HMAC-SHA256")
        ak = parsed.access_key
        with self._lock:
            now = self.now()
            state = self._auth.setdefault(ak, _KeyAuth())
            if state.locked_until > now:
                # A locked key is refused whatever the signature says, and the lock is not extended.
                raise _auth_failure(
                    f"the access key is locked for {LOCK_SECONDS / 60:g} minutes after {LOCK_AFTER} "
                    "consecutive authentication failures"
                )
            cred = self._creds.get(ak)
            reason = self._check(cred, parsed, method, path, query, headers, body, now)
            if reason:
                state.failures += 1
                if state.failures >= LOCK_AFTER:
                    state.failures = 0
                    state.locked_until = now + LOCK_SECONDS
                raise _auth_failure(reason)
            state.failures = 0
            assert cred is not None
            return ak, cred

    @staticmethod
    def _check(
        cred: _Cred | None,
        parsed: huawei.ParsedAuthorization,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
        now: float,
    ) -> str:
        """Why the request fails authentication ("" when it passes)."""
        if cred is None:
            return "the access key does not exist"
        if "x-sdk-date" not in parsed.signed_headers:
            return "X-Sdk-Date is not signed"
        try:
            date = huawei.parse_sdk_date(headers.get("x-sdk-date", ""))
        except ValueError:
            return "X-Sdk-Date is missing or malformed"
        if abs(date.timestamp() - now) > DATE_TOLERANCE:
            return "the request has expired (X-Sdk-Date is more than 15 minutes off)"
        if cred.token is not None:
            if headers.get("x-security-token") != cred.token:
                return "the security token is missing or does not match the access key"
            if cred.expires_at is not None and cred.expires_at <= now:
                return "the temporary credentials have expired"
        project = headers.get("x-project-id")
        if project is not None and project != cred.account.project_id:
            return "X-Project-Id does not match the credentials"
        if not huawei.verify(method, path, query, headers, body, cred.secret_key, parsed):
            return "verify aksk signature fail"
        return ""

    def _handle_api(
        self, method: str, path: str, query: list[tuple[str, str]], headers: dict[str, str], body: bytes
    ) -> _Reply:
        delay = self.faults.latency
        if delay > 0:
            time.sleep(delay)  # outside the state lock so slow requests still overlap
        access_key: str | None = None
        authenticated = False
        try:
            parsed = huawei.parse_authorization(headers.get("authorization", ""))
            access_key = parsed.access_key if parsed else None
            _, cred = self._authenticate(method, path, query, headers, body)
            authenticated = True
            # The gateway's flow control per user, after authentication (it needs to know the user).
            hit = self.faults._rate_hit(cred.account.name, self.now())
            if hit is not None and not hit.allowed:
                raise self._throttle(_throttled(hit.limit, hit.window))
            forced = self.faults._draw()
            if forced is not None:
                reply = self._fault_reply(*forced)
            else:
                with self._lock:
                    reply = self._route(method, path, body, cred)
        except _ApiError as err:
            reply = _Reply(err.status, err.body, dict(err.headers), code=err.code)
        except Exception:
            log.exception("swr sandbox: unhandled error on %s %s", method, path)
            internal = _old_error(500, CODE_INTERNAL, "Internal server error")
            reply = _Reply(500, internal.body, code=internal.code)
        reply.headers.setdefault("X-Request-Id", secrets.token_hex(16))
        self._record(method, path, query, headers, body, reply, access_key, authenticated)
        hook = self.after_request
        if hook is not None:
            hook(method, path, reply.status)
        slow = self.faults._take_slow() if reply.status < 400 else 0.0  # only what was acted on
        if slow > 0:
            time.sleep(slow)  # acted on already: the client may give up before the answer
        return reply

    def _throttle(self, err: _ApiError) -> _ApiError:
        if self.faults.retry_after > 0:
            err.headers["Retry-After"] = str(self.faults.retry_after)
        return err

    def _fault_reply(self, status: int, body: Any) -> _Reply:
        if body is not None:
            code = ""
            if isinstance(body, dict):
                code = str(body.get("error_code") or "")
            elif isinstance(body, list) and body and isinstance(body[0], dict):
                code = str(body[0].get("errorCode") or "")
            return _Reply(status, body, code=code)
        if status == 429:
            err = self._throttle(_throttled())
            return _Reply(429, err.body, err.headers, code=err.code)
        if status == 401:
            err = _auth_failure("verify aksk signature fail")
        elif status == 403:
            err = _new_error(403, CODE_FORBIDDEN, "Insufficient permissions")
        else:
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = "Error"
            err = _old_error(status, CODE_INTERNAL if status >= 500 else CODE_BAD_REQUEST, phrase)
        return _Reply(status, err.body, code=err.code)

    def _route(self, method: str, path: str, body: bytes, cred: _Cred) -> _Reply:
        if not path.startswith(_PREFIX):
            raise _api_not_found()
        segs = path[len(_PREFIX) :].split("/")
        # namespaces/{org}/repos/{repo}/triggers[/{name}]
        if len(segs) not in (4, 5) or segs[1] != "repos" or segs[3] != "triggers" or "" in segs:
            raise _api_not_found()
        org = unquote(segs[0])
        raw_repo = unquote(segs[2])
        if "/" in raw_repo:
            raise _api_not_found()  # an unreplaced '/' (sent as %2F) is another path to the gateway
        repo = raw_repo.replace("$", "/")
        name = unquote(segs[4]) if len(segs) == 5 else None
        allowed = ("GET", "POST") if name is None else ("GET", "PATCH", "DELETE")
        if method not in allowed:
            raise _api_not_found()
        if method != "GET" and cred.account.read_only:
            raise _new_error(403, CODE_FORBIDDEN, "Insufficient permissions")
        triggers = self._repo(org, repo)
        if name is None:
            if method == "GET":
                return _Reply(200, [triggers[n].json(history_null=True) for n in sorted(triggers)])
            return self._create(triggers, body, cred)
        trig = triggers.get(name)
        if trig is None:
            raise _old_error(
                404, CODE_TRIGGER_NOT_FOUND, "Trigger not found", f"trigger {name} does not exist"
            )
        if method == "GET":
            return _Reply(200, trig.json())
        if method == "PATCH":
            data = _json_object(body)
            enable = data.get("enable")
            if enable not in ("true", "false"):
                raise _bad_request('enable must be the string "true" or "false"')
            trig.data["enable"] = str(enable)
            return _Reply(201)
        del triggers[name]
        return _Reply(204)

    def _repo(self, org: str, repo: str) -> dict[str, _Trigger]:
        repos = self._orgs.get(org)
        if repos is None:
            raise _old_error(
                404, CODE_ORG_NOT_FOUND, "Namespace not found", f"namespace {org} does not exist"
            )
        triggers = repos.get(repo)
        if triggers is None:
            raise _old_error(
                404, CODE_REPO_NOT_FOUND, "Repository not found", f"repository {repo} does not exist"
            )
        return triggers

    def _create(self, triggers: dict[str, _Trigger], body: bytes, cred: _Cred) -> _Reply:
        data = _json_object(body)
        for key in _TRIGGER_FIELDS:
            if key in data and not isinstance(data[key], str):
                raise _bad_request(f"{key} must be a string")  # including enable: "true", not true
        missing = [k for k in _REQUIRED if not data.get(k)]
        if missing:
            raise _bad_request(f"missing required parameter(s): {', '.join(missing)}")
        name = data["name"]
        if len(name) > TRIGGER_NAME_MAX or not TRIGGER_NAME_RE.fullmatch(name):
            raise _bad_request(
                "invalid trigger name: it must start with a letter, contain only letters, digits, '_' and "
                "'-', have no consecutive or trailing '_'/'-', and be 1-64 characters"
            )
        checks = {
            "action": ("update",),
            "app_type": ("deployments", "statefulsets"),
            "trigger_type": ("all", "tag", "regular"),
            "trigger_mode": ("cce", "cci"),
            "enable": ("true", "false"),
        }
        for key, allowed in checks.items():
            if data.get(key) and data[key] not in allowed:
                raise _bad_request(f"{key} must be one of {', '.join(allowed)}")
        if name in triggers:
            raise _old_error(
                409, CODE_TRIGGER_EXISTS, "Trigger already exists", f"trigger {name} already exists"
            )
        stored = {k: str(data.get(k) or "") for k in _TRIGGER_FIELDS}
        stored["trigger_mode"] = stored["trigger_mode"] or "cce"
        if stored["trigger_mode"] == "cci":
            stored["cluster_id"] = stored["cluster_name"] = ""  # CCI has no cluster
        triggers[name] = _Trigger(stored, _now_iso(self.now()), cred.account.name)
        return _Reply(201, drop=self.faults._take_drop())

    def _handle_control(self, method: str, path: str, body: bytes) -> _Reply:
        """Health and fault control: never faulted, never recorded, no auth (bind to localhost)."""
        if path == "/-/health":
            return _Reply(200, {"status": "ok"})
        if path != "/-/sandbox/faults":
            return _Reply(404, {"message": "not found"})
        if method in ("PUT", "POST"):
            try:
                data = json.loads(body or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("expected a JSON object")
                if data.pop("reset", False):
                    self.faults.reset()
                forced = data.pop("fail_next", None)
                data.pop("throttled", None)  # a count the GET reports, not a knob
                self.faults.configure(**data)
                if forced is not None:
                    self.faults.fail_next(int(forced["n"]), int(forced["status"]))
            except (ValueError, TypeError, KeyError) as exc:
                return _Reply(400, {"message": str(exc)})
        elif method != "GET":
            return _Reply(405, {"message": "method not allowed"})
        return _Reply(200, self.faults.as_dict())


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"")
    except ValueError:
        raise _bad_request("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise _bad_request("the request body must be a JSON object")
    return data


def _matches(data: dict[str, str], tag: str) -> bool:
    kind, condition = data.get("trigger_type"), data.get("condition", "")
    if kind == "all":
        return True
    if kind == "tag":
        return tag in condition.split(";")
    try:
        return re.fullmatch(condition, tag) is not None
    except re.error:
        return False


# --------------------------------------------------------------------------------------------------
# HTTP plumbing


class _Handler(SandboxHandler):
    def version_string(self) -> str:
        return "api-gateway"

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        body = self._read_body()
        sandbox = self.server.sandbox
        if split.path.startswith("/-/"):
            self._send(sandbox._handle_control(method, split.path, body))
            return
        # http.server decodes header bytes as latin-1; the SDK sends UTF-8 (and signs the UTF-8 text).
        headers = {
            k.lower(): v.encode("latin-1", "replace").decode("utf-8", "replace")
            for k, v in self.headers.items()
        }
        query = parse_qsl(split.query, keep_blank_values=True)
        reply = sandbox._handle_api(method, split.path, query, headers, body)
        log.debug("swr sandbox: %s %s -> %s", method, split.path, reply.status)
        if reply.drop:
            self.close_connection = True  # closed without a status line: a lost response
            return
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        data = b"" if reply.body is None else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            if reply.body is not None:
                self.send_header("Content-Type", "application/json;charset=utf-8")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.status != 204:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data and reply.status != 204:
                self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (a timeout test): nothing to answer


SwrSandbox.handler_class = _Handler

# --------------------------------------------------------------------------------------------------


def serve(host: str = "127.0.0.1", port: int = 8930) -> None:
    """Run a sandbox in the foreground with one account and two repositories, until interrupted."""
    sandbox = SwrSandbox(host, port)
    account = sandbox.add_account("cloudtriggers-bot")
    sandbox.add_repository("demo", "web")
    sandbox.add_repository("demo", "team/api")
    with sandbox:
        print(f"SWR sandbox on {sandbox.url} (use it as spec.swr.endpoint)", flush=True)
        print(f"  account      {account.name}", flush=True)
        print(f"  accessKey    {account.access_key}", flush=True)
        print(f"  secretKey    {account.secret_key}", flush=True)
        print(f"  projectId    {account.project_id}", flush=True)
        print("  repositories demo/web, demo/team/api", flush=True)
        print(f"  faults       GET/PUT {sandbox.url}/-/sandbox/faults", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    serve()
