"""HTTP emulator of the GitLab REST v4 endpoints that a pipeline-trigger operator uses.

It answers like GitLab 18.x as described in shared/reference/providers-gitlab.md: status codes and error
bodies, token masking (section 1.4), offset pagination headers (1.6), project lookup by numeric ID or
URL-encoded path (5), roles and scopes (3), and the trigger-pipeline endpoint (2). Faults (latency, 5xx,
429, lost create responses) can be injected at any time for resilience tests.

Standard library only: this module ships inside the product package.
"""

from __future__ import annotations

import contextlib
import email.message
import email.parser
import email.policy
import hashlib
import itertools
import json
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

__all__ = [
    "DEVELOPER",
    "GUEST",
    "MAINTAINER",
    "OWNER",
    "REPORTER",
    "Faults",
    "GitLabSandbox",
    "RequestRecord",
    "SandboxUser",
    "serve",
]

from ._faults import FaultKnobs, RateHit
from ._http import SandboxHandler, ServedSandbox

log = logging.getLogger(__name__)

API_PREFIX = "/api/v4"
GITLAB_VERSION = "18.2.1"

GUEST, REPORTER, DEVELOPER, MAINTAINER, OWNER = 10, 20, 30, 40, 50
_ACCESS_LEVELS = frozenset({GUEST, REPORTER, DEVELOPER, MAINTAINER, OWNER})

UPDATE_FORBIDDEN = "The current user is not authorized to update the pipeline trigger token"
_UNAUTHORIZED = {"message": "401 Unauthorized"}
_FORBIDDEN = {"message": "403 Forbidden"}
_INSUFFICIENT_SCOPE = "The request requires higher privileges than provided by the access token."
_MAX_COUNTED = 10_000  # above this GitLab omits x-total, x-total-pages and rel="last"

# Query parameters that carry secrets: kept out of request records and pagination links.
_SECRET_PARAMS = frozenset({"private_token", "access_token", "job_token", "token"})
_REDACTED = "[REDACTED]"
_INT_RE = re.compile(r"[+-]?\d+")
_VARIABLES_KEY = re.compile(r"variables\[([^\]]*)\]")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(ts: datetime | None) -> str | None:
    """GitLab's timestamp format: ISO 8601, milliseconds, Z."""
    if ts is None:
        return None
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


# --------------------------------------------------------------------------------------------------
# Public records


@dataclass(frozen=True)
class SandboxUser:
    id: int
    username: str
    name: str
    token: str
    admin: bool = False
    scopes: tuple[str, ...] = ("api",)


@dataclass(frozen=True)
class RequestRecord:
    """One API request as the server saw it. Secret query values are redacted."""

    method: str
    path: str  # raw path without the query, e.g. /api/v4/projects/group%2Fweb/triggers
    query: dict[str, str]
    status: int  # for a dropped create this is the 201 the client never received
    user: str | None  # authenticated username, or None
    dropped: bool = False
    at: float = 0.0  # time.time() when the answer was decided


@dataclass
class Faults(FaultKnobs):
    """GitLab's faults: a throttled request gets 429 "Retry later" with Retry-After. The rate limit is
    Rack::Attack's authenticated API throttle, per user (reference section 4.1)."""

    retry_after: int = 1  # Retry-After seconds on a random 429 (the rate limit computes its own)
    # RateLimit-* on answers the rate limit lets through too, as with the feature flag
    # rate_limiting_headers_for_unthrottled_requests (reference section 4.2).
    rate_limit_headers: bool = False

    def fail_next(self, n: int, status: int) -> None:
        """Answer the next ``n`` API requests with ``status`` (before any random fault)."""
        if n < 0 or not 100 <= status <= 599:
            raise ValueError(f"bad fail_next({n}, {status})")
        if n:
            with self._lock:
                self._forced.append([n, status])

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            data = self._knobs()
            data["fail_next"] = [{"n": n, "status": status} for n, status in self._forced]
            return data

    def _draw(self) -> int | None:
        """Status to answer instead of the real one, or None."""
        with self._lock:
            if self._forced:
                entry = self._forced[0]
                entry[0] -= 1
                if entry[0] <= 0:
                    self._forced.popleft()
                return int(entry[1])
            return self._random_fault()


# --------------------------------------------------------------------------------------------------
# Server-side state


@dataclass
class _Project:
    id: int
    path: str  # full path, e.g. group/web
    members: dict[int, int]  # user id -> access level
    branches: tuple[str, ...]
    created_at: datetime
    next_iid: int = 1


@dataclass
class _Trigger:
    id: int
    project_id: int
    token: str
    description: str
    owner_id: int
    created_at: datetime
    updated_at: datetime
    last_used: datetime | None = None


@dataclass
class _Pipeline:
    id: int
    iid: int
    project_id: int
    trigger_id: int
    user_id: int
    ref: str
    sha: str
    variables: dict[str, str]
    created_at: datetime


@dataclass
class _Reply:
    status: int
    body: Any = None  # JSON value, str (text/plain) or None (empty)
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering


class _ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _route_not_found() -> _ApiError:
    return _ApiError(404, {"error": "404 Not Found"})  # Grape's answer when no route matches


def _not_found(what: str | None = None) -> _ApiError:
    return _ApiError(404, {"message": f"404 {what} Not Found" if what else "404 Not Found"})


def _bad_param(message: str) -> _ApiError:
    return _ApiError(400, {"error": message})  # Grape validation errors use "error", not "message"


@dataclass
class _Ctx:
    method: str
    raw_path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    user: SandboxUser | None
    base_url: str
    _params: dict[str, Any] | None = None

    @property
    def params(self) -> dict[str, Any]:
        """Query and body parameters merged, as Grape does (body wins)."""
        if self._params is None:
            merged = _nest(self.query)
            merged.update(_parse_body(self.headers.get("content-type", ""), self.body))
            self._params = merged
        return self._params


def _nest(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Form pairs to params; ``variables[K]=v`` becomes ``{"variables": {"K": "v"}}`` like Rack."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        m = _VARIABLES_KEY.fullmatch(key)
        if m:
            variables = out.setdefault("variables", {})
            if isinstance(variables, dict):
                variables[m.group(1)] = value
        else:
            out[key] = value
    return out


def _parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "application/json":
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise _ApiError(400, {"message": "400 Bad request - Invalid JSON"}) from exc
        if not isinstance(data, dict):
            raise _ApiError(400, {"message": "400 Bad request - Invalid JSON"})
        return data
    if mime == "multipart/form-data":  # curl --form
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        pairs: list[tuple[str, str]] = []
        parts = msg.get_payload()
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, email.message.Message):
                continue
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                pairs.append((name, payload.decode("utf-8", "replace")))
        return _nest(pairs)
    return _nest(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _int_param(name: str, raw: Any) -> int:
    if isinstance(raw, bool) or not (
        isinstance(raw, int) or (isinstance(raw, str) and _INT_RE.fullmatch(raw))
    ):
        raise _bad_param(f"{name} is invalid")
    return int(raw)


THROTTLE_NAME = "throttle_authenticated_api"


def _rate_headers(hit: RateHit, now: float, *, throttled: bool) -> dict[str, str]:
    """Rack::Attack's headers as GitLab computes them (Gitlab::RackAttack::RequestThrottleData):
    RateLimit-Limit normalised to a minute and rounded up, the rest of the window's own numbers; a
    429 adds RateLimit-ResetTime and Retry-After (whole seconds to the window's end)."""
    reset = math.ceil(hit.window_end)
    headers = {
        "RateLimit-Name": THROTTLE_NAME,
        "RateLimit-Limit": str(math.ceil(hit.limit * 60 / hit.window)),
        "RateLimit-Observed": str(hit.count),
        "RateLimit-Remaining": str(max(hit.limit - hit.count, 0)),
        "RateLimit-Reset": str(reset),
    }
    if throttled:
        headers["RateLimit-ResetTime"] = format_datetime(datetime.fromtimestamp(reset, UTC), usegmt=True)
        headers["Retry-After"] = str(max(reset - math.floor(now), 1))
    return headers


def _fault_reply(status: int, retry_after: int) -> _Reply:
    if status == 429:
        # Rack::Attack throttle answer (reference section 4.1). A random throttle enforces no limit, so
        # it names GitLab.com's authenticated API limit (2,000 a minute, section 4.3), not a low one.
        now = int(time.time())
        reset = now + max(retry_after, 0)
        return _Reply(
            429,
            "Retry later",
            {
                "Retry-After": str(retry_after),
                "RateLimit-Name": THROTTLE_NAME,
                "RateLimit-Limit": "2000",
                "RateLimit-Observed": "2001",
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(reset),
                "RateLimit-ResetTime": format_datetime(datetime.fromtimestamp(reset, UTC), usegmt=True),
            },
        )
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return _Reply(status, {"message": f"{status} {phrase}"})


# --------------------------------------------------------------------------------------------------
# The sandbox


class GitLabSandbox(ServedSandbox):
    """A GitLab API emulator on a background thread. Use as a context manager or start()/stop()."""

    label = "GitLab sandbox"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._init_server(host, port)
        self._lock = threading.RLock()  # guards all server-side state; held for the whole of a request
        self._records_lock = threading.Lock()
        self._users: dict[int, SandboxUser] = {}
        self._tokens: dict[str, int] = {}
        self._projects: dict[int, _Project] = {}
        self._triggers: dict[int, _Trigger] = {}
        self._pipelines: dict[int, _Pipeline] = {}
        # Distinct ranges so a test that mixes up a project ID and a trigger ID fails loudly.
        self._user_ids = itertools.count(1)
        self._project_ids = itertools.count(1001)
        self._trigger_ids = itertools.count(1)
        self._pipeline_ids = itertools.count(5001)
        self.requests: list[RequestRecord] = []
        self.faults = Faults()
        # Called after each API request is served and recorded, before the answer is sent (method,
        # path, status): fault tests use it to kill the operator right after the provider acted.
        self.after_request: Callable[[str, str, int], None] | None = None

    # ---- lifecycle

    def _external_url(self) -> str:
        return self.url if self._server is not None else f"http://{self._host}:{self._port}"

    # ---- fixtures and out-of-band changes

    def add_user(
        self,
        username: str,
        *,
        token: str | None = None,
        admin: bool = False,
        scopes: Iterable[str] = ("api",),
    ) -> SandboxUser:
        """Create a user with one personal access token (scopes: api, read_api, read_user)."""
        with self._lock:
            if any(u.username.lower() == username.lower() for u in self._users.values()):
                raise ValueError(f"user {username!r} already exists")
            token = token or "glpat-" + secrets.token_urlsafe(15)[:20]
            if token in self._tokens:
                raise ValueError("token already in use")
            user = SandboxUser(
                id=next(self._user_ids),
                username=username,
                name=username.replace("-", " ").replace("_", " ").title(),
                token=token,
                admin=admin,
                scopes=tuple(scopes),
            )
            self._users[user.id] = user
            self._tokens[token] = user.id
            return user

    def add_project(
        self, path: str, members: dict[str, int] | None = None, *, branches: Iterable[str] = ("main",)
    ) -> int:
        """Create a private project; ``members`` maps username to access level (30, 40, 50...)."""
        path = path.strip("/")
        if "/" not in path:
            raise ValueError("a project path is namespace/name, e.g. group/web")
        with self._lock:
            if self._project_by_path(path) is not None:
                raise ValueError(f"project {path!r} already exists")
            project = _Project(
                id=next(self._project_ids),
                path=path,
                members={},
                branches=tuple(branches) or ("main",),
                created_at=_now(),
            )
            for username, level in (members or {}).items():
                self._set_member(project, username, level)
            self._projects[project.id] = project
            return project.id

    def set_member(self, project: int | str, username: str, level: int | None) -> None:
        """Add, change or (with None) remove a membership."""
        with self._lock:
            self._set_member(self._resolve_project(project), username, level)

    def triggers(self, project: int | str) -> list[dict[str, Any]]:
        """Server-side truth with full tokens, ordered by ID."""
        with self._lock:
            p = self._resolve_project(project)
            return [self._trigger_json(t, reveal=True) for t in self._project_triggers(p)]

    def pipelines(self, project: int | str) -> list[dict[str, Any]]:
        """Pipelines created through trigger/pipeline, with their trigger_id and variables."""
        with self._lock:
            p = self._resolve_project(project)
            return [
                {**self._pipeline_json(pl), "trigger_id": pl.trigger_id, "variables": dict(pl.variables)}
                for pl in sorted(self._pipelines.values(), key=lambda x: x.id)
                if pl.project_id == p.id
            ]

    def delete_trigger(self, project: int | str, trigger_id: int) -> None:
        with self._lock:
            self._triggers.pop(self._server_trigger(project, trigger_id).id)

    def set_description(self, project: int | str, trigger_id: int, description: str) -> None:
        with self._lock:
            trig = self._server_trigger(project, trigger_id)
            trig.description = description
            trig.updated_at = _now()

    def create_trigger_as(self, username: str, project: int | str, description: str) -> dict[str, Any]:
        """Create a trigger owned by ``username`` without going through HTTP; full token returned."""
        with self._lock:
            user = self._user_by_name(username)
            trig = self._new_trigger(self._resolve_project(project), user, description)
            return self._trigger_json(trig, reveal=True)

    # ---- inspection and faults

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

    def reset_faults(self) -> None:
        self.faults.reset()

    def fail_next(self, n: int, status: int) -> None:
        self.faults.fail_next(n, status)

    # ---- internals: lookups

    def _user_by_name(self, username: str) -> SandboxUser:
        for user in self._users.values():
            if user.username == username:
                return user
        raise KeyError(f"no sandbox user {username!r}")

    def _set_member(self, project: _Project, username: str, level: int | None) -> None:
        user = self._user_by_name(username)
        if level is None:
            project.members.pop(user.id, None)
        elif level in _ACCESS_LEVELS:
            project.members[user.id] = level
        else:
            raise ValueError(f"access level must be one of {sorted(_ACCESS_LEVELS)}")

    def _project_by_path(self, path: str) -> _Project | None:
        # GitLab full paths are case-insensitive.
        return next((p for p in self._projects.values() if p.path.lower() == path.lower()), None)

    def _resolve_project(self, project: int | str) -> _Project:
        found: _Project | None
        if isinstance(project, int) or project.isdigit():
            found = self._projects.get(int(project))
        else:
            found = self._project_by_path(unquote(project))
        if found is None:
            raise KeyError(f"no sandbox project {project!r}")
        return found

    def _project_triggers(self, project: _Project) -> list[_Trigger]:
        return sorted((t for t in self._triggers.values() if t.project_id == project.id), key=lambda t: t.id)

    def _server_trigger(self, project: int | str, trigger_id: int) -> _Trigger:
        p = self._resolve_project(project)
        trig = self._triggers.get(trigger_id)
        if trig is None or trig.project_id != p.id:
            raise KeyError(f"no trigger {trigger_id} in project {p.path}")
        return trig

    def _new_trigger(self, project: _Project, owner: SandboxUser, description: str) -> _Trigger:
        now = _now()
        trig = _Trigger(
            id=next(self._trigger_ids),
            project_id=project.id,
            token="glptt-" + secrets.token_hex(20),
            description=description,
            owner_id=owner.id,
            created_at=now,
            updated_at=now,
        )
        self._triggers[trig.id] = trig
        return trig

    # ---- internals: entities

    def _user_basic(self, user: SandboxUser) -> dict[str, Any]:
        base = self._external_url()
        digest = hashlib.sha256(user.username.encode()).hexdigest()
        return {
            "id": user.id,
            "username": user.username,
            "name": user.name,
            "state": "active",
            "locked": False,
            "avatar_url": f"https://www.gravatar.com/avatar/{digest}?s=80&d=identicon",
            "web_url": f"{base}/{user.username}",
        }

    def _trigger_json(self, trig: _Trigger, *, reveal: bool) -> dict[str, Any]:
        owner = self._users.get(trig.owner_id)
        return {
            "id": trig.id,
            # short_token: the prefix is stripped, so the masked value is 4 hex characters (section 1.4).
            "token": trig.token if reveal else trig.token.removeprefix("glptt-")[:4],
            "description": trig.description,
            "created_at": _iso(trig.created_at),
            "updated_at": _iso(trig.updated_at),
            "last_used": _iso(trig.last_used),
            "expires_at": None,  # trigger_token_expiration flag is off by default
            "owner": self._user_basic(owner) if owner else None,
        }

    def _project_json(self, project: _Project, user: SandboxUser) -> dict[str, Any]:
        base = self._external_url()
        namespace, _, name = project.path.rpartition("/")
        level = project.members.get(user.id)
        return {
            "id": project.id,
            "description": None,
            "name": name,
            "name_with_namespace": " / ".join(project.path.split("/")),
            "path": name,
            "path_with_namespace": project.path,
            "created_at": _iso(project.created_at),
            "default_branch": project.branches[0],
            "visibility": "private",
            "web_url": f"{base}/{project.path}",
            "http_url_to_repo": f"{base}/{project.path}.git",
            "namespace": {
                "id": int(hashlib.sha256(namespace.encode()).hexdigest()[:6], 16),
                "name": namespace.rpartition("/")[2],
                "path": namespace.rpartition("/")[2],
                "kind": "group",
                "full_path": namespace,
                "web_url": f"{base}/groups/{namespace}",
            },
            "archived": False,
            "jobs_enabled": True,
            "permissions": {
                "project_access": {"access_level": level, "notification_level": 3} if level else None,
                "group_access": None,
            },
        }

    def _pipeline_json(self, pl: _Pipeline) -> dict[str, Any]:
        project = self._projects[pl.project_id]
        owner = self._users.get(pl.user_id)
        details = f"/{project.path}/-/pipelines/{pl.id}"
        return {
            "id": pl.id,
            "iid": pl.iid,
            "project_id": pl.project_id,
            "sha": pl.sha,
            "ref": pl.ref,
            "status": "created",
            "source": "trigger",
            "created_at": _iso(pl.created_at),
            "updated_at": _iso(pl.created_at),
            "web_url": self._external_url() + details,
            "before_sha": "0" * 40,
            "tag": False,
            "yaml_errors": None,
            "user": self._user_basic(owner) if owner else None,
            "started_at": None,
            "finished_at": None,
            "committed_at": None,
            "duration": None,
            "queued_duration": None,
            "coverage": None,
            "name": None,
            "detailed_status": {
                "icon": "status_created",
                "text": "Created",
                "label": "created",
                "group": "created",
                "tooltip": "created",
                "has_details": True,
                "details_path": details,
                "illustration": None,
                "favicon": "/assets/ci_favicons/favicon_status_created.png",
            },
        }

    # ---- internals: request handling

    def _identify(self, headers: dict[str, str], query: dict[str, str]) -> SandboxUser | None:
        token = headers.get("private-token")
        if token is None:
            scheme, _, value = headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                token = value.strip()
        if token is None:
            token = query.get("private_token") or query.get("access_token")
        if not token:
            return None
        with self._lock:
            uid = self._tokens.get(token)
            return self._users.get(uid) if uid is not None else None

    def _record(self, method: str, path: str, query: dict[str, str], reply: _Reply, user: str | None) -> None:
        redacted = {k: (_REDACTED if k in _SECRET_PARAMS else v) for k, v in query.items()}
        record = RequestRecord(method, path, redacted, reply.status, user, reply.drop, time.time())
        with self._records_lock:
            self.requests.append(record)

    def _handle_api(
        self,
        method: str,
        raw_path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes,
        base_url: str,
    ) -> _Reply:
        flat_query = dict(query)
        user = self._identify(headers, flat_query)
        delay = self.faults.latency
        if delay > 0:
            time.sleep(delay)  # outside the state lock so slow requests still overlap
        now = time.time()
        # Rack::Attack runs before the application: the rate limit first, then any injected fault.
        hit = self.faults._rate_hit(user.username, now) if user is not None else None
        forced = self.faults._draw() if hit is None or hit.allowed else None
        if hit is not None and not hit.allowed:
            reply = _Reply(429, "Retry later", _rate_headers(hit, now, throttled=True))
        elif forced is not None:
            reply = _fault_reply(forced, self.faults.retry_after)
        else:
            ctx = _Ctx(method, raw_path, query, headers, body, user, base_url)
            try:
                with self._lock:
                    reply = self._route(ctx)
            except _ApiError as err:
                reply = _Reply(err.status, err.body)
            except Exception:
                log.exception("gitlab sandbox: unhandled error on %s %s", method, raw_path)
                reply = _Reply(500, {"message": "500 Internal Server Error"})
        if hit is not None and hit.allowed and reply.status != 429 and self.faults.rate_limit_headers:
            reply.headers.update(_rate_headers(hit, now, throttled=False))
        self._record(method, raw_path, flat_query, reply, user.username if user else None)
        hook = self.after_request
        if hook is not None:
            hook(method, raw_path, reply.status)
        slow = self.faults._take_slow() if reply.status < 400 else 0.0  # only what was acted on
        if slow > 0:
            time.sleep(slow)  # acted on already: the client may give up before the answer
        return reply

    def _handle_control(self, method: str, path: str, body: bytes) -> _Reply:
        """Health and fault control: never faulted, never recorded, no auth (bind to localhost)."""
        if path == "/-/health":
            return _Reply(200, "GitLab OK")
        if path != "/-/sandbox/faults":
            return _Reply(404, "Not Found")
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
            return _Reply(405, {"message": "405 Method Not Allowed"})
        return _Reply(200, self.faults.as_dict())

    def _route(self, ctx: _Ctx) -> _Reply:
        segs = ctx.raw_path[len(API_PREFIX) + 1 :].split("/")
        if "" in segs:
            raise _route_not_found()
        routes: dict[str, Callable[[], _Reply]]
        match segs:
            case ["user"]:
                routes = {"GET": lambda: self._get_user(ctx)}
            case ["version"]:
                routes = {"GET": lambda: self._get_version(ctx)}
            case ["projects", pid]:
                routes = {"GET": lambda: self._get_project(ctx, pid)}
            case ["projects", pid, "triggers"]:
                routes = {
                    "GET": lambda: self._list_triggers(ctx, pid),
                    "POST": lambda: self._create(ctx, pid),
                }
            case ["projects", pid, "triggers", tid]:
                routes = {
                    "GET": lambda: self._get_trigger(ctx, pid, tid),
                    "PUT": lambda: self._update(ctx, pid, tid),
                    "DELETE": lambda: self._delete(ctx, pid, tid),
                }
            case ["projects", pid, "trigger", "pipeline"]:
                routes = {"POST": lambda: self._run_pipeline(ctx, pid, None)}
            case ["projects", pid, "ref", *ref, "trigger", "pipeline"] if ref:  # legacy form
                routes = {"POST": lambda: self._run_pipeline(ctx, pid, unquote("/".join(ref)))}
            case _:
                raise _route_not_found()
        handler = routes.get(ctx.method)
        if handler is None:
            raise _ApiError(405, {"error": "405 Not Allowed"})
        return handler()

    def _authenticate(self, ctx: _Ctx, *, write: bool) -> SandboxUser:
        user = ctx.user
        if user is None:
            raise _ApiError(401, _UNAUTHORIZED)
        allowed = {"api"} if write else {"api", "read_api"}
        if not allowed & set(user.scopes):
            needed = "api" if write else "api read_api"
            raise _ApiError(
                403,
                {"error": "insufficient_scope", "error_description": _INSUFFICIENT_SCOPE, "scope": needed},
            )
        return user

    def _user_project(self, raw_id: str, user: SandboxUser) -> _Project:
        """find_project!: numeric ID or full path; missing and unreadable are the same 404."""
        ident = unquote(raw_id)
        project: _Project | None = None
        if ident.isascii() and ident.isdigit():
            project = self._projects.get(int(ident))
        elif "/" in ident:
            project = self._project_by_path(ident)
        if project is None or not (user.admin or user.id in project.members):
            raise _not_found("Project")
        return project

    def _require_manage(self, user: SandboxUser, project: _Project) -> None:
        """authorize! :admin_build / :manage_trigger: Maintainer or above, or an instance admin."""
        if not (user.admin or project.members.get(user.id, 0) >= MAINTAINER):
            raise _ApiError(403, _FORBIDDEN)

    def _find_trigger(self, project: _Project, trigger_id: int) -> _Trigger:
        trig = self._triggers.get(trigger_id)
        if trig is None or trig.project_id != project.id:
            raise _not_found("Trigger")
        return trig

    def _can_admin_trigger(self, user: SandboxUser, project: _Project, trig: _Trigger) -> bool:
        # Current TriggerPolicy: manage_trigger is a precondition, then owner or admin.
        manage = user.admin or project.members.get(user.id, 0) >= MAINTAINER
        return manage and (user.admin or trig.owner_id == user.id)

    def _present(self, trig: _Trigger, project: _Project, user: SandboxUser) -> dict[str, Any]:
        return self._trigger_json(trig, reveal=self._can_admin_trigger(user, project, trig))

    # ---- endpoints

    def _get_user(self, ctx: _Ctx) -> _Reply:
        user = ctx.user
        if user is None:
            raise _ApiError(401, _UNAUTHORIZED)
        if not {"api", "read_api", "read_user"} & set(user.scopes):
            raise _ApiError(
                403,
                {
                    "error": "insufficient_scope",
                    "error_description": _INSUFFICIENT_SCOPE,
                    "scope": "api read_api read_user",
                },
            )
        body = {
            **self._user_basic(user),
            "created_at": "2024-01-01T00:00:00.000Z",
            "bio": "",
            "public_email": None,
            "bot": False,
            "email": f"{user.username}@example.com",
            "two_factor_enabled": False,
        }
        if user.admin:
            body["is_admin"] = True
        return _Reply(200, body)

    def _get_version(self, ctx: _Ctx) -> _Reply:
        self._authenticate(ctx, write=False)
        return _Reply(
            200,
            {
                "version": GITLAB_VERSION,
                "revision": "sandbox",
                "kas": {"enabled": False, "externalUrl": None, "externalK8sProxyUrl": None, "version": None},
                "enterprise": False,
            },
        )

    def _get_project(self, ctx: _Ctx, pid: str) -> _Reply:
        user = self._authenticate(ctx, write=False)
        return _Reply(200, self._project_json(self._user_project(pid, user), user))

    def _list_triggers(self, ctx: _Ctx, pid: str) -> _Reply:
        params = dict(ctx.query)
        page = _int_param("page", params.get("page", "1"))
        per_page = _int_param("per_page", params.get("per_page", "20"))
        if per_page == 0:
            raise _bad_param("per_page has a value not allowed")
        page = max(page, 1)
        per_page = min(per_page if per_page > 0 else 20, 100)

        user = self._authenticate(ctx, write=False)
        project = self._user_project(pid, user)
        self._require_manage(user, project)

        items = self._project_triggers(project)
        total = len(items)
        total_pages = max(1, math.ceil(total / per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        next_page = page + 1 if page < total_pages else None
        prev_page = page - 1 if 1 < page <= total_pages else None

        keep = [(k, v) for k, v in ctx.query if k not in _SECRET_PARAMS and k not in ("page", "per_page")]

        def link(n: int, rel: str) -> str:
            query = urlencode([*keep, ("page", str(n)), ("per_page", str(per_page))])
            return f'<{ctx.base_url}{ctx.raw_path}?{query}>; rel="{rel}"'

        counted = total <= _MAX_COUNTED
        links = [link(prev_page, "prev")] if prev_page else []
        links += [link(next_page, "next")] if next_page else []
        links.append(link(1, "first"))
        if counted:
            links.append(link(total_pages, "last"))
        headers = {
            "Link": ", ".join(links),
            "x-next-page": str(next_page or ""),
            "x-page": str(page),
            "x-per-page": str(per_page),
            "x-prev-page": str(prev_page or ""),
        }
        if counted:
            headers["x-total"] = str(total)
            headers["x-total-pages"] = str(total_pages)
        return _Reply(200, [self._present(t, project, user) for t in chunk], headers)

    def _create(self, ctx: _Ctx, pid: str) -> _Reply:
        description = ctx.params.get("description")
        if description is None:
            raise _bad_param("description is missing")
        if isinstance(description, dict | list):
            raise _bad_param("description is invalid")
        if isinstance(description, bool):  # Grape coerces JSON true to "true"
            description = str(description).lower()
        user = self._authenticate(ctx, write=True)
        project = self._user_project(pid, user)
        self._require_manage(user, project)
        # expires_at is accepted and ignored: the trigger_token_expiration flag is off by default.
        trig = self._new_trigger(project, user, str(description))
        return _Reply(201, self._present(trig, project, user), drop=self.faults._take_drop())

    def _get_trigger(self, ctx: _Ctx, pid: str, tid: str) -> _Reply:
        trigger_id = _int_param("trigger_id", tid)
        user = self._authenticate(ctx, write=False)
        project = self._user_project(pid, user)
        self._require_manage(user, project)
        return _Reply(200, self._present(self._find_trigger(project, trigger_id), project, user))

    def _update(self, ctx: _Ctx, pid: str, tid: str) -> _Reply:
        trigger_id = _int_param("trigger_id", tid)
        description = ctx.params.get("description")
        if isinstance(description, dict | list):
            raise _bad_param("description is invalid")
        user = self._authenticate(ctx, write=True)
        # No authorize! at the API layer: UpdateService decides, with its own 403 message.
        project = self._user_project(pid, user)
        trig = self._find_trigger(project, trigger_id)
        if not self._can_admin_trigger(user, project, trig):
            raise _ApiError(403, {"message": UPDATE_FORBIDDEN})
        if description is not None and str(description) != trig.description:
            trig.description = str(description)
            trig.updated_at = _now()
        return _Reply(200, self._present(trig, project, user))

    def _delete(self, ctx: _Ctx, pid: str, tid: str) -> _Reply:
        trigger_id = _int_param("trigger_id", tid)
        user = self._authenticate(ctx, write=True)
        project = self._user_project(pid, user)
        self._require_manage(user, project)
        trig = self._find_trigger(project, trigger_id)
        since = ctx.headers.get("if-unmodified-since")
        if since:
            try:
                limit: datetime | None = parsedate_to_datetime(since)
            except (TypeError, ValueError):
                limit = None  # GitLab ignores an unparsable date
            if limit is not None and limit.tzinfo is not None and trig.updated_at > limit:
                raise _ApiError(412, {"message": "412 Precondition Failed"})
        del self._triggers[trig.id]
        return _Reply(204)

    def _run_pipeline(self, ctx: _Ctx, pid: str, path_ref: str | None) -> _Reply:
        params = ctx.params
        ref = path_ref if path_ref is not None else params.get("ref")
        token = params.get("token")
        errors = []
        if ref is None:
            errors.append("ref is missing")
        elif not isinstance(ref, str) or not ref.strip():
            errors.append("ref is empty")
        if token is None:
            errors.append("token is missing")
        variables = params.get("variables")
        if variables is not None and not isinstance(variables, dict):
            errors.append("variables is invalid")
        if errors:
            raise _bad_param(", ".join(errors))
        assert isinstance(ref, str)
        if ctx.headers.get("x-gitlab-event") == "Pipeline Hook":  # webhook loop guard
            raise _ApiError(403, _FORBIDDEN)
        variables = variables or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in variables.items()):
            raise _ApiError(400, {"message": "variables needs to be a map of key-valued strings"})

        # No user auth here: the trigger token is the credential. Unknown project, unknown token and a
        # token of another project all give the same bare 404 so nothing leaks.
        ident = unquote(pid)
        project: _Project | None = None
        if ident.isascii() and ident.isdigit():
            project = self._projects.get(int(ident))
        elif "/" in ident:
            project = self._project_by_path(ident)
        trig = next((t for t in self._triggers.values() if t.token == str(token)), None)
        if project is None or trig is None or trig.project_id != project.id:
            raise _not_found()

        owner = self._users.get(trig.owner_id)
        if owner is None or not (owner.admin or project.members.get(owner.id, 0) >= DEVELOPER):
            raise _ApiError(400, {"message": {"base": ["Insufficient permissions to create a new pipeline"]}})
        if ref not in project.branches:
            raise _ApiError(400, {"message": {"base": ["Reference not found"]}})

        now = _now()
        pipeline = _Pipeline(
            id=next(self._pipeline_ids),
            iid=project.next_iid,
            project_id=project.id,
            trigger_id=trig.id,
            user_id=owner.id,
            ref=ref,
            sha=hashlib.sha1(f"{project.path}@{ref}".encode()).hexdigest(),  # stable head per branch
            variables=dict(variables),
            created_at=now,
        )
        project.next_iid += 1
        self._pipelines[pipeline.id] = pipeline
        trig.last_used = now  # last_used = created_at of the newest pipeline of this trigger
        return _Reply(201, self._pipeline_json(pipeline))


# --------------------------------------------------------------------------------------------------
# HTTP plumbing


class _Handler(SandboxHandler):
    def version_string(self) -> str:
        return "nginx"  # what GitLab's bundled proxy announces; hides the Python version

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        path = split.path
        body = self._read_body()
        sandbox = self.server.sandbox
        if not path.startswith(API_PREFIX + "/"):
            self._send(sandbox._handle_control(method, path, body))
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        # Links must point back at the address the client used, or python-gitlab warns and rewrites.
        base_url = f"http://{headers['host']}" if "host" in headers else sandbox.url
        query = parse_qsl(split.query, keep_blank_values=True)
        reply = sandbox._handle_api(method, path, query, headers, body, base_url)
        log.debug("gitlab sandbox: %s %s -> %s", method, path, reply.status)
        if reply.drop:
            self.close_connection = True  # the socket is closed without a status line: a lost response
            return
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        if reply.body is None:
            data, ctype = b"", None
        elif isinstance(reply.body, str):
            data, ctype = reply.body.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = json.dumps(reply.body).encode(), "application/json"
        self.send_response(reply.status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status != 204:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and reply.status != 204:
            self.wfile.write(data)


GitLabSandbox.handler_class = _Handler

# --------------------------------------------------------------------------------------------------


def serve(host: str = "127.0.0.1", port: int = 8929) -> None:
    """Run a sandbox in the foreground with one Maintainer and one project, until interrupted."""
    sandbox = GitLabSandbox(host, port)
    user = sandbox.add_user("cloudtriggers-bot")
    project_id = sandbox.add_project("demo/web", members={user.username: MAINTAINER})
    with sandbox:
        print(f"GitLab sandbox on {sandbox.url} (API {sandbox.url}{API_PREFIX})", flush=True)
        print(f"  user    {user.username} (Maintainer), token {user.token}", flush=True)
        print(f"  project demo/web (id {project_id})", flush=True)
        print(f"  faults  GET/PUT {sandbox.url}/-/sandbox/faults", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    serve()
