"""HTTP emulator of the Alibaba Cloud ACK trigger API (CS 2015-12-15) and of STS AssumeRoleWithOIDC.

It answers as shared/reference/providers-ack.md describes: CreateTrigger (no token in the answer),
DescribeTrigger (a JSON array filtered by application, with the token), DeleteTrigger; every request's
V3 signature (ACS3-HMAC-SHA256) is verified and a bad one is rejected with SignatureDoesNotMatch; STS
credentials need their signed x-acs-security-token. Gateway errors use the PascalCase body
{RequestId, HostId, Code, Message, Recommend}, CS errors the lower camel case {code, message, requestId}.
Trigger tokens are JWT-shaped (RS256 header, {"clusterId", "id"} payload, no exp). Faults (latency, 5xx,
Throttling.User with x-acs-retry-after in milliseconds, lost create answers) can be injected at any time.

The same server answers the unsigned STS AssumeRoleWithOIDC RPC call (GET or form POST on "/") for the
RRSA tests. Standard library only: this module ships inside the product package.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..signing import aliyun

__all__ = [
    "ACTIONS",
    "API_VERSION",
    "OIDC_AUDIENCE",
    "AckAccount",
    "AckSandbox",
    "Faults",
    "RequestRecord",
    "StsCredentials",
    "serve",
]

from ._faults import FaultKnobs
from ._http import SandboxHandler, ServedSandbox

log = logging.getLogger(__name__)

API_VERSION = "2015-12-15"
STS_VERSION = "2015-04-01"
ACTIONS = frozenset({"CreateTrigger", "DescribeTrigger", "DeleteTrigger"})
OIDC_AUDIENCE = "sts.aliyuncs.com"
OIDC_ISSUER = "https://oidc-ack-sandbox.invalid/cluster"
MAX_CLOCK_SKEW = timedelta(minutes=15)  # x-acs-date window, and how long a nonce is remembered
THROTTLE_MESSAGE = "Request was denied due to user flow control."
# Error codes whose answer comes from the API gateway (PascalCase body) rather than from CS itself.
_GATEWAY_CODES = re.compile(
    r"^(Throttling.*|ServiceUnavailable|IncompleteSignature|SignatureDoesNotMatch|SignatureNonceUsed|"
    r"InvalidAccessKeyId.*|InvalidSecurityToken.*|MissingSecurityToken|InvalidTimeStamp.*|InvalidVersion|"
    r"InvalidAction.*|NoPermission|Forbidden.*)$"
)
_DEFAULT_CODES = {
    400: "InvalidParameter",
    401: "InvalidAccessKeyId.NotFound",
    403: "Forbidden.RAM",
    404: "ErrorClusterNotFound",
    429: "Throttling.User",
    500: "InternalError",
    502: "ServiceUnavailable",
    503: "ServiceUnavailable",
    504: "ServiceUnavailable",
}
_SECRET_PARAMS = frozenset({"OIDCToken", "token"})
_REDACTED = "[REDACTED]"
_PROJECT_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _now() -> datetime:
    return datetime.now(UTC)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(header: dict[str, Any], payload: dict[str, Any]) -> str:
    """JWT-shaped: real JSON header and payload, a random 256-byte 'RS256 signature' nobody verifies."""
    parts = (json.dumps(header, separators=(",", ":")), json.dumps(payload, separators=(",", ":")))
    return ".".join([*(_b64url(p.encode()) for p in parts), _b64url(secrets.token_bytes(256))])


def _jwt_payload(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    raw = parts[1] + "=" * (-len(parts[1]) % 4)
    data = json.loads(base64.urlsafe_b64decode(raw))
    if not isinstance(data, dict):
        raise ValueError("JWT payload is not an object")
    return data


# --------------------------------------------------------------------------------------------------
# Public records


@dataclass(frozen=True)
class AckAccount:
    """An Alibaba Cloud account (UID) with one AccessKey pair, allowed the RAM actions in `actions`."""

    name: str
    uid: str
    access_key_id: str
    access_key_secret: str
    actions: frozenset[str] = ACTIONS


@dataclass(frozen=True)
class StsCredentials:
    """Temporary credentials: sign with the secret, send the token as x-acs-security-token."""

    access_key_id: str
    access_key_secret: str
    security_token: str
    expiration: datetime
    account: str  # name of the account they act for
    role_arn: str = ""


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it. No secret is kept (OIDC and trigger tokens are redacted)."""

    method: str
    path: str  # raw path without the query
    query: dict[str, str]
    action: str  # x-acs-action, or the STS Action parameter
    status: int  # for a dropped create this is the 200 the client never received
    code: str  # the error code, "" on success
    account: str | None  # authenticated account name
    access_key_id: str | None
    sts: bool  # signed with STS credentials (x-acs-security-token)
    signed_headers: tuple[str, ...]
    user_agent: str
    dropped: bool = False
    at: float = 0.0  # time.time() when the answer was decided
    detail: dict[str, str] = field(default_factory=dict)  # STS: RoleArn, RoleSessionName, OIDCTokenSha256


@dataclass
class Faults(FaultKnobs):
    """ACK's faults: a throttled request gets Throttling.User with x-acs-retry-after; forced answers
    carry an error code and may target one action."""

    retry_after_ms: int = 1000  # x-acs-retry-after on a random throttle, in milliseconds
    throttle_status: int = 400  # CS answers Throttling.User with 400 (some products use 429)
    # The rate limit counts per account (UID), all its AccessKeys and STS credentials together
    # (reference section 5.2); its throttle answers x-acs-retry-after = milliseconds to the window's end.

    def fail_next(
        self,
        n: int,
        status: int,
        code: str | None = None,
        *,
        action: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `n` requests (of `action` only, when given) with `status` and error `code`."""
        if n < 0 or not 400 <= status <= 599:
            raise ValueError(f"bad fail_next({n}, {status})")
        if n:
            with self._lock:
                self._forced.append(
                    [n, status, code or _DEFAULT_CODES.get(status, "UnknownError"), action, message]
                )

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            data = self._knobs()
            data["fail_next"] = [
                {"n": n, "status": s, "code": c, "action": a, "message": m} for n, s, c, a, m in self._forced
            ]
            return data

    def _draw(self, action: str = "") -> tuple[int, str, str | None] | None:
        """(status, code, message) to answer instead of the real answer, or None."""
        with self._lock:
            entry = next((e for e in self._forced if e[3] is None or e[3] == action), None)
            if entry is not None:
                entry[0] -= 1
                if entry[0] <= 0:
                    self._forced.remove(entry)
                return int(entry[1]), str(entry[2]), entry[4]
            status = self._random_fault()
            if status == 429:
                return self.throttle_status, "Throttling.User", None
            if status is not None:
                return status, _DEFAULT_CODES[status], None
            return None


# --------------------------------------------------------------------------------------------------
# Server-side state


@dataclass
class _Cluster:
    id: str
    account: str
    region: str
    applications: set[str]  # "<namespace>/<name>"


@dataclass
class _Trigger:
    id: str
    cluster_id: str
    project_id: str
    type: str
    action: str
    token: str
    created_at: datetime


@dataclass
class _Role:
    arn: str
    oidc_provider_arn: str
    account: str
    max_session: int = 3600


@dataclass
class _Principal:
    account: AckAccount
    access_key_id: str
    sts: bool


@dataclass
class _Reply:
    status: int
    body: Any = None  # JSON value or None (empty)
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering
    code: str = ""


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _error_reply(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, *, pascal: bool = False
) -> _Reply:
    request_id = str(uuid.uuid4()).upper()
    body: dict[str, Any]
    if pascal or _GATEWAY_CODES.match(code):
        body = {
            "RequestId": request_id,
            "HostId": "cs.aliyuncs.com",
            "Code": code,
            "Message": message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}&product=CS",
        }
    else:
        body = {"code": code, "message": message, "requestId": request_id}
    return _Reply(status, body, {"x-acs-request-id": request_id, **(headers or {})}, code=code)


def _fault_reply(fault: tuple[int, str, str | None], retry_after_ms: int) -> _Reply:
    status, code, message = fault
    if code.startswith("Throttling"):
        headers = {"x-acs-retry-after": str(retry_after_ms)}
        return _error_reply(status, code, message or THROTTLE_MESSAGE, headers)
    messages = {
        "InternalError": "The request processing has failed due to some unknown error.",
        "ServiceUnavailable": "The request has failed due to a temporary failure of the server.",
    }
    return _error_reply(status, code, message or messages.get(code, f"injected fault {code}"))


# --------------------------------------------------------------------------------------------------
# The sandbox


class AckSandbox(ServedSandbox):
    """An ACK trigger API + STS emulator on a background thread. Context manager or start()/stop()."""

    label = "ACK sandbox"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, numeric_ids: bool = False) -> None:
        self._init_server(host, port)
        # CreateKubernetesTrigger's doc example has a numeric id; with this set, creates answer numbers.
        self.numeric_ids = numeric_ids
        self._lock = threading.RLock()  # guards all server-side state
        self._records_lock = threading.Lock()
        self._accounts: dict[str, AckAccount] = {}
        self._keys: dict[str, str] = {}  # static AccessKey id -> account name
        self._sts: dict[str, StsCredentials] = {}
        self._expired: set[str] = set()
        self._clusters: dict[str, _Cluster] = {}
        self._triggers: dict[str, _Trigger] = {}
        self._roles: dict[str, _Role] = {}
        self._nonces: dict[str, float] = {}
        self._uids = itertools.count(1_234_567_890_123_401)
        self._trigger_ids = itertools.count(759_734_974_860_001)
        self.requests: list[RequestRecord] = []
        self.faults = Faults()
        # Called after each API request is served and recorded, before the answer is sent (method,
        # path, status): fault tests use it to kill the operator right after the provider acted.
        self.after_request: Callable[[str, str, int], None] | None = None
        self.sts_faults = Faults()  # separately, so CS faults never hit credential fetches by accident

    # ---- lifecycle

    # ---- fixtures

    def add_account(
        self,
        name: str,
        *,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        actions: Iterable[str] = ACTIONS,
    ) -> AckAccount:
        """An account with one AccessKey pair; `actions` are the RAM actions its policy allows."""
        with self._lock:
            if name in self._accounts:
                raise ValueError(f"account {name!r} already exists")
            ak = access_key_id or "LTAI5t" + secrets.token_hex(9)[:18]
            if ak in self._keys or ak in self._sts:
                raise ValueError("AccessKey id already in use")
            account = AckAccount(
                name=name,
                uid=str(next(self._uids)),
                access_key_id=ak,
                access_key_secret=access_key_secret or secrets.token_urlsafe(22)[:30],
                actions=frozenset(actions),
            )
            self._accounts[name] = account
            self._keys[ak] = name
            return account

    def issue_sts(self, account: str, duration: float = 3600, role_arn: str = "") -> StsCredentials:
        """Temporary credentials acting for `account`, as AssumeRole would hand out."""
        with self._lock:
            if account not in self._accounts:
                raise KeyError(f"no sandbox account {account!r}")
            creds = StsCredentials(
                access_key_id="STS.NT" + secrets.token_hex(12),
                access_key_secret=secrets.token_urlsafe(32),
                security_token="CAIS" + secrets.token_urlsafe(180),
                expiration=(_now() + timedelta(seconds=duration)).replace(microsecond=0),
                account=account,
                role_arn=role_arn,
            )
            self._sts[creds.access_key_id] = creds
            return creds

    def expire_credentials(self, access_key_id: str) -> None:
        """From now on requests signed with these STS credentials get InvalidSecurityToken.Expired."""
        with self._lock:
            self._expired.add(access_key_id)

    def add_cluster(
        self,
        account: str,
        cluster_id: str | None = None,
        *,
        region: str = "cn-beijing",
        applications: Iterable[str] = ("default/web",),
    ) -> str:
        """A cluster of `account` with applications "<namespace>/<name>" (Deployments or App Center)."""
        with self._lock:
            if account not in self._accounts:
                raise KeyError(f"no sandbox account {account!r}")
            cid = cluster_id or "c" + secrets.token_hex(16)
            if cid in self._clusters:
                raise ValueError(f"cluster {cid!r} already exists")
            self._clusters[cid] = _Cluster(cid, account, region, set(applications))
            return cid

    def delete_cluster(self, cluster_id: str) -> None:
        """The cluster and its triggers vanish (ErrorClusterNotFound from then on)."""
        with self._lock:
            self._cluster(cluster_id)
            del self._clusters[cluster_id]
            self._triggers = {k: t for k, t in self._triggers.items() if t.cluster_id != cluster_id}

    def add_application(self, cluster_id: str, project_id: str) -> None:
        with self._lock:
            self._cluster(cluster_id).applications.add(project_id)

    def add_role(
        self, role_arn: str, oidc_provider_arn: str, account: str, *, max_session: int = 3600
    ) -> None:
        """A RAM role that ServiceAccount tokens of the OIDC provider `oidc_provider_arn` may assume."""
        with self._lock:
            if account not in self._accounts:
                raise KeyError(f"no sandbox account {account!r}")
            self._roles[role_arn] = _Role(role_arn, oidc_provider_arn, account, max_session)

    @staticmethod
    def oidc_token(
        subject: str = "system:serviceaccount:cloudtriggers:cloudtriggers",
        *,
        expires_in: float = 3600,
        audience: str = OIDC_AUDIENCE,
    ) -> str:
        """A projected ServiceAccount token as ack-pod-identity-webhook mounts it (JWT, aud sts)."""
        now = int(time.time())
        payload = {
            "aud": [audience],
            "exp": now + int(expires_in),
            "iat": now,
            "iss": OIDC_ISSUER,
            "nbf": now,
            "sub": subject,
            "jti": secrets.token_hex(8),
        }
        return _jwt({"alg": "RS256", "kid": "sandbox", "typ": "JWT"}, payload)

    # ---- server-side inspection and out-of-band changes

    def triggers(self, cluster_id: str) -> list[dict[str, Any]]:
        """Server-side truth with tokens, in creation order (DescribeTrigger's item shape)."""
        with self._lock:
            self._cluster(cluster_id)
            return [self._trigger_json(t) for t in self._triggers.values() if t.cluster_id == cluster_id]

    def delete_trigger(self, cluster_id: str, trigger_id: str | int) -> None:
        with self._lock:
            trig = self._triggers.get(str(trigger_id))
            if trig is None or trig.cluster_id != cluster_id:
                raise KeyError(f"no trigger {trigger_id} in cluster {cluster_id}")
            del self._triggers[trig.id]

    def create_trigger_as(
        self,
        account: str,
        cluster_id: str,
        project_id: str,
        *,
        type: str = "deployment",
        action: str = "redeploy",
    ) -> dict[str, Any]:
        """Create a trigger as `account` would, without HTTP; returns it with its token."""
        with self._lock:
            cluster = self._cluster(cluster_id)
            if cluster.account != account:
                raise KeyError(f"cluster {cluster_id} does not belong to {account!r}")
            return self._trigger_json(self._new_trigger(cluster, project_id, type, action))

    def calls(
        self, method: str | None = None, path_contains: str | None = None, action: str | None = None
    ) -> list[RequestRecord]:
        with self._records_lock:
            snapshot = list(self.requests)
        return [
            r
            for r in snapshot
            if (method is None or r.method == method.upper())
            and (path_contains is None or path_contains in r.path)
            and (action is None or r.action == action)
        ]

    def clear_requests(self) -> None:
        with self._records_lock:
            self.requests.clear()

    def fail_next(
        self,
        n: int,
        status: int,
        code: str | None = None,
        *,
        action: str | None = None,
        message: str | None = None,
    ) -> None:
        self.faults.fail_next(n, status, code, action=action, message=message)

    def reset_faults(self) -> None:
        self.faults.reset()
        self.sts_faults.reset()

    # ---- internals: state

    def _cluster(self, cluster_id: str) -> _Cluster:
        cluster = self._clusters.get(cluster_id)
        if cluster is None:
            raise KeyError(f"no sandbox cluster {cluster_id!r}")
        return cluster

    def _new_trigger(self, cluster: _Cluster, project_id: str, type_: str, action: str) -> _Trigger:
        tid = str(next(self._trigger_ids))
        trig = _Trigger(
            id=tid,
            cluster_id=cluster.id,
            project_id=project_id,
            type=type_,
            action=action,
            # Observed in public examples: RS256, payload {clusterId, id}, no exp (reference section 2).
            token=_jwt({"alg": "RS256", "typ": "JWT"}, {"clusterId": cluster.id, "id": tid}),
            created_at=_now(),
        )
        self._triggers[tid] = trig
        return trig

    @staticmethod
    def _trigger_json(t: _Trigger) -> dict[str, Any]:
        return {
            "id": t.id,
            "name": t.project_id.split("/", 1)[1],
            "cluster_id": t.cluster_id,
            "project_id": t.project_id,
            "type": t.type,
            "action": t.action,
            "token": t.token,
        }

    # ---- internals: request handling

    def _record(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        action: str,
        reply: _Reply,
        principal: _Principal | None,
        headers: dict[str, list[str]],
        signed: tuple[str, ...] = (),
        detail: dict[str, str] | None = None,
    ) -> None:
        record = RequestRecord(
            method=method,
            path=path,
            query={k: (_REDACTED if k in _SECRET_PARAMS else v) for k, v in query.items()},
            action=action,
            status=reply.status,
            code=reply.code,
            account=principal.account.name if principal else None,
            access_key_id=principal.access_key_id if principal else None,
            sts=principal.sts if principal else False,
            signed_headers=signed,
            user_agent=",".join(headers.get("user-agent", [])),
            dropped=reply.drop,
            at=time.time(),
            detail=detail or {},
        )
        with self._records_lock:
            self.requests.append(record)

    def _handle(
        self,
        method: str,
        raw_path: str,
        pairs: list[tuple[str, str]],
        headers: dict[str, list[str]],
        body: bytes,
    ) -> _Reply:
        if raw_path == "/":
            return self._handle_sts(method, raw_path, pairs, headers, body)
        query = dict(pairs)
        action = ",".join(headers.get("x-acs-action", []))
        faults = self.faults
        if faults.latency > 0:
            time.sleep(faults.latency)  # outside the state lock so slow requests still overlap
        forced = faults._draw(action)
        principal: _Principal | None = None
        signed: tuple[str, ...] = ()
        if forced is not None:
            reply = _fault_reply(forced, faults.retry_after_ms)
        else:
            try:
                with self._lock:
                    principal, signed = self._authenticate(method, raw_path, query, headers, body)
                    self._flow_control(principal)
                    version = ",".join(headers.get("x-acs-version", []))
                    reply = self._route(method, raw_path, query, action, version, body, principal)
            except _ApiError as err:
                reply = _error_reply(err.status, err.code, err.message, err.headers)
            except Exception:
                log.exception("ack sandbox: unhandled error on %s %s", method, raw_path)
                reply = _error_reply(500, "InternalError", "The request processing has failed.")
        reply.headers.setdefault("x-acs-request-id", str(uuid.uuid4()).upper())
        self._record(method, raw_path, query, action, reply, principal, headers, signed)
        hook = self.after_request
        if hook is not None:
            hook(method, raw_path, reply.status)
        slow = self.faults._take_slow() if reply.status < 400 else 0.0  # only what was acted on
        if slow > 0:
            time.sleep(slow)  # acted on already: the client may give up before the answer
        return reply

    def _flow_control(self, principal: _Principal) -> None:
        """The gateway's per-account flow control, after authentication (it needs the account)."""
        now = time.time()
        hit = self.faults._rate_hit(principal.account.name, now)
        if hit is not None and not hit.allowed:
            wait_ms = max(math.ceil((hit.window_end - now) * 1000), 1)
            raise _ApiError(
                self.faults.throttle_status,
                "Throttling.User",
                THROTTLE_MESSAGE,
                {"x-acs-retry-after": str(wait_ms)},
            )

    def _authenticate(
        self,
        method: str,
        raw_path: str,
        query: dict[str, str],
        headers: dict[str, list[str]],
        body: bytes,
    ) -> tuple[_Principal, tuple[str, ...]]:
        """Verify the V3 signature as the gateway does; the order of checks follows its answers."""

        def one(name: str) -> str | None:
            values = headers.get(name)
            return ",".join(sorted(v.strip() for v in values)) if values else None

        auth = one("authorization")
        if not auth:
            raise _ApiError(
                400,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun "
                "standards: the Authorization header is missing.",
            )
        try:
            parsed = aliyun.parse_authorization(auth)
        except ValueError:
            raise _ApiError(
                400,
                "IncompleteSignature",
                f"The request signature does not conform to Aliyun standards. Expected "
                f"'{aliyun.ALGORITHM} Credential=...,SignedHeaders=...,Signature=...'.",
            ) from None
        signed = parsed.signed_headers
        must = {"host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce"}
        must |= {"x-acs-content-sha256", *(h for h in headers if h.startswith("x-acs-"))}
        if "content-type" in headers:
            must.add("content-type")
        unsigned = sorted(must - set(signed))
        if unsigned:
            raise _ApiError(
                400,
                "IncompleteSignature",
                f"The request signature does not conform to Aliyun standards: header(s) "
                f"{', '.join(unsigned)} must be signed.",
            )
        for name in ("x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce"):
            if not one(name):
                raise _ApiError(400, "IncompleteSignature", f"The header {name} is missing.")
        try:
            date = aliyun.parse_acs_date(one("x-acs-date") or "")
        except ValueError:
            raise _ApiError(
                400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted."
            ) from None
        if abs(_now() - date) > MAX_CLOCK_SKEW:
            raise _ApiError(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")

        ak = parsed.access_key_id
        token = one("x-acs-security-token")
        if ak in self._keys:
            account, sts = self._accounts[self._keys[ak]], False
            key_secret = account.access_key_secret
            if token:
                raise _ApiError(
                    400,
                    "InvalidSecurityToken.MismatchWithAccessKey",
                    "Specified SecurityToken mismatch with the AccessKey.",
                )
        elif ak in self._sts:
            creds = self._sts[ak]
            account, key_secret, sts = self._accounts[creds.account], creds.access_key_secret, True
            if not token:
                raise _ApiError(400, "MissingSecurityToken", "SecurityToken is mandatory for this action.")
            if not hmac.compare_digest(token, creds.security_token):
                raise _ApiError(
                    400,
                    "InvalidSecurityToken.MismatchWithAccessKey",
                    "Specified SecurityToken mismatch with the AccessKey.",
                )
            if ak in self._expired or creds.expiration <= _now():
                raise _ApiError(400, "InvalidSecurityToken.Expired", "Specified SecurityToken is expired.")
        else:
            raise _ApiError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        header_ak = one("x-acs-accesskey-id")
        if header_ak is not None and header_ak != ak:
            raise _ApiError(
                400,
                "InvalidSecurityToken.MismatchWithAccessKey",
                "x-acs-accesskey-id does not match the Credential.",
            )

        payload = one("x-acs-content-sha256") or ""
        canonical = aliyun.canonical_request(
            method, raw_path, query, {name: one(name) or "" for name in signed}, payload
        )
        to_sign = aliyun.string_to_sign(canonical)
        if not hmac.compare_digest(aliyun.signature(key_secret, to_sign), parsed.signature):
            raise _ApiError(
                400,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server string to sign is:"
                + to_sign,
            )
        if payload != aliyun.hashed_payload(body):
            # The signature covers the declared hash; the body must then match it.
            raise _ApiError(400, "SignatureDoesNotMatch", "The x-acs-content-sha256 does not match the body.")
        nonce = one("x-acs-signature-nonce") or ""
        now = time.monotonic()
        while self._nonces:  # insertion order is expiry order: drop the expired from the front
            oldest = next(iter(self._nonces))
            if self._nonces[oldest] > now:
                break
            del self._nonces[oldest]
        if nonce in self._nonces:
            raise _ApiError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
        self._nonces[nonce] = now + MAX_CLOCK_SKEW.total_seconds()
        return _Principal(account, ak, sts), signed

    def _route(
        self,
        method: str,
        raw_path: str,
        query: dict[str, str],
        action: str,
        version: str,
        body: bytes,
        who: _Principal,
    ) -> _Reply:
        if version != API_VERSION:
            raise _ApiError(400, "InvalidVersion", "Specified parameter Version is not valid.")
        segs = [unquote(s) for s in raw_path.strip("/").split("/")]
        expected: str | None = None
        handler: Callable[[], _Reply] | None = None
        match segs:
            case ["clusters", cid, "triggers"] if method == "POST":
                expected, handler = "CreateTrigger", lambda: self._create(cid, body, who)
            case ["clusters", cid, "triggers"] if method == "GET":
                expected, handler = "DescribeTrigger", lambda: self._describe(cid, query, who)
            case ["clusters", cid, "triggers", tid] if method == "DELETE":
                expected, handler = "DeleteTrigger", lambda: self._delete(cid, tid, who)
        if handler is None or expected != action:
            raise _ApiError(
                404, "InvalidAction.NotFound", "Specified api is not found, please check your url and method."
            )
        if expected not in who.account.actions:
            raise _ApiError(
                403,
                "Forbidden.RAM",
                f"User not authorized to operate on the specified resource: cs:{expected} is not allowed "
                f"for account {who.account.uid}.",
            )
        return handler()

    def _owned_cluster(self, cluster_id: str, who: _Principal) -> _Cluster:
        cluster = self._clusters.get(cluster_id)
        # Another account's cluster answers as if it did not exist: nothing leaks across accounts.
        if cluster is None or cluster.account != who.account.name:
            raise _ApiError(404, "ErrorClusterNotFound", f"cluster {cluster_id} not found")
        return cluster

    def _create(self, cluster_id: str, body: bytes, who: _Principal) -> _Reply:
        cluster = self._owned_cluster(cluster_id, who)
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise _ApiError(400, "InvalidParameter", "request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise _ApiError(400, "InvalidParameter", "request body must be a JSON object")
        for key in ("cluster_id", "project_id", "action"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise _ApiError(400, "InvalidParameter", f"{key} is required")
        if data["cluster_id"] != cluster_id:
            raise _ApiError(400, "InvalidParameter", "cluster_id in the body differs from the path")
        if data["action"] != "redeploy":
            raise _ApiError(400, "InvalidParameter", f"action {data['action']!r} is not supported")
        type_ = data.get("type") or "deployment"
        if type_ not in ("deployment", "application"):
            raise _ApiError(400, "InvalidParameter", f"type {type_!r} is not supported")
        project = data["project_id"]
        if not _PROJECT_RE.match(project):
            raise _ApiError(400, "InvalidParameter", f"project_id {project!r} is not <namespace>/<name>")
        if project not in cluster.applications:
            raise _ApiError(
                400, "InvalidParameter", f"application {project} not found in cluster {cluster_id}"
            )
        trig = self._new_trigger(cluster, project, type_, "redeploy")
        answer: dict[str, Any] = {
            "id": int(trig.id) if self.numeric_ids else trig.id,
            "cluster_id": trig.cluster_id,
            "project_id": trig.project_id,
            "type": trig.type,
            "action": trig.action,
        }
        return _Reply(200, answer, drop=self.faults._take_drop())

    def _describe(self, cluster_id: str, query: dict[str, str], who: _Principal) -> _Reply:
        self._owned_cluster(cluster_id, who)
        ns, name = query.get("Namespace"), query.get("Name")
        if not ns or not name:
            raise _ApiError(400, "InvalidParameter", "Namespace and Name are required")
        project = f"{ns}/{name}"
        type_, action = query.get("Type"), query.get("action")  # exactly these cases; others are ignored
        items = [
            self._trigger_json(t)
            for t in self._triggers.values()
            if t.cluster_id == cluster_id
            and t.project_id == project
            and (not type_ or t.type == type_)
            and (not action or t.action == action)
        ]
        return _Reply(200, items)

    def _delete(self, cluster_id: str, trigger_id: str, who: _Principal) -> _Reply:
        self._owned_cluster(cluster_id, who)
        trig = self._triggers.get(trigger_id)
        if trig is None or trig.cluster_id != cluster_id:
            raise _ApiError(404, "ErrorTriggerNotFound", f"trigger {trigger_id} not found")
        del self._triggers[trig.id]
        return _Reply(200, {})

    # ---- STS

    def _handle_sts(
        self,
        method: str,
        raw_path: str,
        pairs: list[tuple[str, str]],
        headers: dict[str, list[str]],
        body: bytes,
    ) -> _Reply:
        params = dict(pairs)
        ctype = ",".join(headers.get("content-type", []))
        if method == "POST" and ctype.startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        action = params.get("Action", "")
        detail: dict[str, str] = {}
        forced = self.sts_faults._draw(action)
        if forced is not None:
            reply = _fault_reply(forced, self.sts_faults.retry_after_ms)
        else:
            try:
                with self._lock:
                    reply = self._assume_role_with_oidc(method, params, detail)
            except _ApiError as err:
                # STS is an RPC product: its errors always use the PascalCase body.
                reply = _error_reply(err.status, err.code, err.message, err.headers, pascal=True)
        self._record(method, raw_path, dict(pairs), action, reply, None, headers, detail=detail)
        return reply

    def _assume_role_with_oidc(self, method: str, params: dict[str, str], detail: dict[str, str]) -> _Reply:
        if method not in ("GET", "POST"):
            raise _ApiError(405, "UnsupportedHTTPMethod", "Specified HTTP method is not supported.")
        if params.get("Action") != "AssumeRoleWithOIDC":
            raise _ApiError(404, "InvalidAction.NotFound", "Specified api is not found.")
        if params.get("Version") != STS_VERSION:
            raise _ApiError(400, "InvalidVersion", "Specified parameter Version is not valid.")
        for name in ("RoleArn", "OIDCProviderArn", "OIDCToken", "RoleSessionName"):
            if not params.get(name):
                raise _ApiError(
                    400,
                    f"Missing{name}",
                    f'The input parameter "{name}" that is mandatory for processing this request is not '
                    "supplied.",
                )
        token = params["OIDCToken"]
        detail.update(
            RoleArn=params["RoleArn"],
            OIDCProviderArn=params["OIDCProviderArn"],
            RoleSessionName=params["RoleSessionName"],
            OIDCTokenSha256=hashlib.sha256(token.encode()).hexdigest(),
        )
        role = self._roles.get(params["RoleArn"])
        if role is None:
            raise _ApiError(404, "EntityNotExist.Role", f"The role not exists: {params['RoleArn']}.")
        if role.oidc_provider_arn != params["OIDCProviderArn"]:
            raise _ApiError(
                404,
                "EntityNotExist.OIDCProvider",
                "The OIDC provider does not exist or does not match the role's trust policy.",
            )
        try:
            claims = _jwt_payload(token)
        except ValueError:
            raise _ApiError(
                400, "InvalidParameter.OIDCToken", "The parameter OIDCToken is invalid."
            ) from None
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if OIDC_AUDIENCE not in auds:
            raise _ApiError(
                400,
                "AuthenticationFail.OIDCToken.InvalidAud",
                f"The audience of the OIDC token must be {OIDC_AUDIENCE}.",
            )
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= time.time():
            raise _ApiError(400, "AuthenticationFail.OIDCToken.Expired", "The OIDCToken is expired.")
        try:
            duration = int(params.get("DurationSeconds") or 3600)
        except ValueError:
            duration = -1
        if not 900 <= duration <= role.max_session:
            raise _ApiError(
                400,
                "InvalidParameter.DurationSeconds",
                f"The DurationSeconds is out of range: 900 to {role.max_session}.",
            )
        creds = self.issue_sts(role.account, duration, role.arn)
        session = params["RoleSessionName"]
        role_name = role.arn.rsplit("/", 1)[-1]
        uid = self._accounts[role.account].uid
        body = {
            "RequestId": str(uuid.uuid4()).upper(),
            "OIDCTokenInfo": {
                "Subject": str(claims.get("sub", "")),
                "Issuer": str(claims.get("iss", "")),
                "ClientIds": OIDC_AUDIENCE,
                "ExpirationTime": datetime.fromtimestamp(exp, UTC).strftime(aliyun.DATE_FORMAT),
                "IssuanceTime": datetime.fromtimestamp(int(claims.get("iat", exp)), UTC).strftime(
                    aliyun.DATE_FORMAT
                ),
                "VerificationInfo": "Success",
            },
            "AssumedRoleUser": {
                "AssumedRoleId": f"3{uid[:17]}:{session}",
                "Arn": f"acs:ram::{uid}:assumed-role/{role_name}/{session}",
            },
            "Credentials": {
                "SecurityToken": creds.security_token,
                "Expiration": creds.expiration.strftime(aliyun.DATE_FORMAT),
                "AccessKeySecret": creds.access_key_secret,
                "AccessKeyId": creds.access_key_id,
            },
        }
        return _Reply(200, body)

    # ---- control

    def _handle_control(self, method: str, path: str, body: bytes) -> _Reply:
        """Health and fault control: never faulted, never recorded, no auth (bind to localhost)."""
        if path == "/-/health":
            return _Reply(200, {"status": "ok"})
        if path != "/-/sandbox/faults":
            return _error_reply(404, "InvalidAction.NotFound", "Specified api is not found.")
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
                    self.faults.fail_next(
                        int(forced["n"]),
                        int(forced["status"]),
                        forced.get("code"),
                        action=forced.get("action"),
                        message=forced.get("message"),
                    )
            except (ValueError, TypeError, KeyError) as exc:
                return _Reply(400, {"message": str(exc)})
        elif method != "GET":
            return _Reply(405, {"message": "405 Method Not Allowed"})
        return _Reply(200, self.faults.as_dict())


# --------------------------------------------------------------------------------------------------
# HTTP plumbing


class _Handler(SandboxHandler):
    def version_string(self) -> str:
        return "Tengine"  # what Alibaba's gateways announce; hides the Python version

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        body = self._read_body()
        sandbox = self.server.sandbox
        if split.path.startswith("/-/"):
            self._send(sandbox._handle_control(method, split.path, body))
            return
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        pairs = parse_qsl(split.query, keep_blank_values=True)
        reply = sandbox._handle(method, split.path or "/", pairs, headers, body)
        log.debug("ack sandbox: %s %s -> %s %s", method, split.path, reply.status, reply.code)
        if reply.drop:
            self.close_connection = True  # the socket is closed without a status line: a lost response
            return
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        data = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        if reply.body is not None:
            self.send_header("Content-Type", "application/json;charset=utf-8")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)


AckSandbox.handler_class = _Handler

# --------------------------------------------------------------------------------------------------


def serve(host: str = "127.0.0.1", port: int = 8931) -> None:
    """Run a sandbox in the foreground with one account and one cluster, until interrupted."""
    sandbox = AckSandbox(host, port)
    account = sandbox.add_account("demo")
    cluster = sandbox.add_cluster("demo", "c" + "0" * 31, applications=("default/web", "default/api"))
    with sandbox:
        print(f"ACK sandbox on {sandbox.url} (set spec.ack.endpoint to it)", flush=True)
        print(f"  accessKeyId     {account.access_key_id}", flush=True)
        print(f"  accessKeySecret {account.access_key_secret}", flush=True)
        print(f"  cluster         {cluster} (applications default/web, default/api)", flush=True)
        print(f"  faults          GET/PUT {sandbox.url}/-/sandbox/faults", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    serve()
