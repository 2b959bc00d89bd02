"""Alibaba Cloud ACK application triggers over the CS 2015-12-15 ROA API (reference/providers-ack.md).

Three calls exist: CreateTrigger (answers the id only), DescribeTrigger (every trigger of one
application, with its token) and DeleteTrigger. There is no update and no get-by-id, so a trigger is
read by listing its application and matching the id, and any change of projectId, type or action is a
replacement (create the new one, move the Secret, delete the old one: the reconciler's create_first).

Requests are signed with ACS3-HMAC-SHA256 (signing/aliyun.py). Credentials come from the Trigger's
Secret (an AccessKey pair, optionally with an STS securityToken) or, when it names none, from RRSA
workload identity: AssumeRoleWithOIDC with the pod's projected ServiceAccount token.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlencode, urlsplit

import requests
import urllib3

from ..logs import register_secret
from ..models import AckSpec
from ..signing import aliyun
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
    plain_session,
    redact,
    summarize,
)
from .pacing import ACK, ACK_THROTTLING, AccountLimiter, Signal, ack_signal

log = logging.getLogger(__name__)

API_VERSION = "2015-12-15"
STS_VERSION = "2015-04-01"
HOOK_URL = "https://cs.console.aliyun.com/hook/trigger?token="
STS_DURATION = 3600  # seconds asked of STS; the role's MaxSessionDuration must allow it (default 3600)
RRSA_MARKER: Mapping[str, str] = {"rrsa": "1"}  # Target.credentials of a Trigger using workload identity
TRUSTED_ENDPOINTS_ENV = "CLOUDTRIGGERS_ACK_TRUSTED_ENDPOINTS"
NETWORK_ENV = "CLOUDTRIGGERS_ACK_NETWORK"

# Regions the SDK's endpoint map sends to the central cs.aliyuncs.com (alibabacloud_cs20151215 7.2.3).
CENTRAL_ENDPOINT_REGIONS = frozenset(
    {
        "ap-northeast-2-pop",
        "cn-beijing-finance-pop",
        "cn-beijing-gov-1",
        "cn-beijing-nu16-b01",
        "cn-edge-1",
        "cn-fujian",
        "cn-haidian-cm12-c01",
        "cn-hangzhou-bj-b01",
        "cn-hangzhou-internal-prod-1",
        "cn-hangzhou-internal-test-1",
        "cn-hangzhou-internal-test-2",
        "cn-hangzhou-internal-test-3",
        "cn-hangzhou-test-306",
        "cn-hongkong-finance-pop",
        "cn-qingdao-nebula",
        "cn-shanghai-et15-b01",
        "cn-shanghai-et2-b01",
        "cn-shanghai-inner",
        "cn-shanghai-internal-test-1",
        "cn-shenzhen-inner",
        "cn-shenzhen-st4-d01",
        "cn-shenzhen-su18-b01",
        "cn-wuhan",
        "cn-yushanfang",
        "cn-zhangbei",
        "cn-zhangbei-na61-b01",
        "cn-zhangjiakou-na62-a01",
        "cn-zhengzhou-nebula-1",
        "eu-west-1-oxs",
        "rus-west-1-pop",
    }
)

# Error codes by class (design.md "Errors, by class"; reference section 5).
_THROTTLED = ACK_THROTTLING
_AUTH = re.compile(
    r"^(InvalidAccessKeyId(\..*)?|SignatureDoesNotMatch|IncompleteSignature|InvalidSecurityToken(\..*)?|"
    r"MissingSecurityToken|Forbidden\.AccessKeyDisabled)$"
)
_FORBIDDEN = re.compile(r"^(Forbidden(\..*)?|NoPermission(\..*)?|ErrorCheckAcl|ErrorRamPolicyConfig)$")
_RETRYABLE = frozenset({"InternalError", "UnknownError", "ServiceUnavailable"})
_CS_HOST = re.compile(r"^cs(-vpc|-anony-vpc)?(\.[a-z0-9-]+)?\.aliyuncs\.com$")
_XML_FIELD = re.compile(r"<(Code|Message|RequestId)>([^<]*)</\1>")


def classify(status: int, code: str, *, create: bool, retry_after: bool) -> ErrorClass:
    """The error class of an answer with HTTP `status` and provider `code`."""
    if _THROTTLED.match(code) or status == 429 or retry_after:
        return ErrorClass.THROTTLED
    if _AUTH.match(code) or status == 401:
        return ErrorClass.AUTH
    if _FORBIDDEN.match(code) or status == 403:
        return ErrorClass.FORBIDDEN
    if status >= 500 or code in _RETRYABLE:
        # CreateTrigger has no client token: after a 5xx the trigger may exist all the same.
        return ErrorClass.AMBIGUOUS if create else ErrorClass.TRANSIENT
    if "ClusterNotFound" in code or (status == 404 and not code.startswith("InvalidAction")):
        return ErrorClass.TARGET_NOT_FOUND
    return ErrorClass.PERMANENT


def trigger_id(value: Any) -> str | None:
    """The trigger id as a string: the schema says string, CreateKubernetesTrigger's example a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return value
    return None


def _path_segment(value: str) -> str:
    return aliyun.percent_encode(value)


# -- credentials ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessKey:
    """What a request is signed with. `identity` names the account for rate limiting (never a secret)."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None
    identity: str
    rrsa: bool = False

    def secrets(self) -> list[str]:
        return [s for s in (self.access_key_secret, self.security_token) if s]


def _sts_endpoint(env: Mapping[str, str]) -> str:
    """ALIBABA_CLOUD_STS_ENDPOINT (webhook >= 0.4.0), else sts[-vpc].<ALIBABA_CLOUD_STS_REGION>, else sts."""
    explicit = env.get("ALIBABA_CLOUD_STS_ENDPOINT", "").strip()
    if explicit:
        return (explicit if "://" in explicit else "https://" + explicit).rstrip("/")
    prefix = "sts-vpc" if env.get("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED", "").lower() == "true" else "sts"
    region = env.get("ALIBABA_CLOUD_STS_REGION", "").strip()
    return f"https://{prefix}.{region}.aliyuncs.com" if region else "https://sts.aliyuncs.com"


class RrsaCredentials:
    """STS credentials for the operator's RAM role via AssumeRoleWithOIDC (RRSA), cached and refreshed.

    The projected token file is read on every fetch: ACK rotates it and asks clients not to cache it.
    Credentials are refreshed when less than a quarter of their lifetime (at most 15 minutes, as the
    credentials library does) is left; a failed refresh keeps using credentials that are still valid.
    """

    def __init__(
        self,
        role_arn: str,
        oidc_provider_arn: str,
        token_file: str,
        sts_endpoint: str,
        *,
        session: requests.Session,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        session_name: str | None = None,
        duration: int = STS_DURATION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.role_arn = role_arn
        self.oidc_provider_arn = oidc_provider_arn
        self.token_file = token_file
        self.sts_endpoint = sts_endpoint.rstrip("/")
        self.session = session
        self.timeout = timeout
        self.session_name = session_name
        self.duration = duration
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: AccessKey | None = None
        self._expires = 0.0  # epoch seconds
        self._refresh_at = 0.0
        self.fetches = 0  # successful AssumeRoleWithOIDC calls (tests, metrics)

    @classmethod
    def from_environ(
        cls,
        env: Mapping[str, str],
        *,
        session: requests.Session,
        timeout: tuple[float, float],
        clock: Callable[[], float],
    ) -> RrsaCredentials | None:
        """The three variables ack-pod-identity-webhook injects must all be set; otherwise None."""
        role = env.get("ALIBABA_CLOUD_ROLE_ARN", "").strip()
        provider = env.get("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "").strip()
        token_file = env.get("ALIBABA_CLOUD_OIDC_TOKEN_FILE", "").strip()
        if not (role and provider and token_file):
            return None
        return cls(
            role,
            provider,
            token_file,
            _sts_endpoint(env),
            session=session,
            timeout=timeout,
            session_name=env.get("ALIBABA_CLOUD_ROLE_SESSION_NAME") or None,
            clock=clock,
        )

    def get(self) -> AccessKey:
        with self._lock:
            now = self.clock()
            if self._cached is not None and now < self._refresh_at:
                return self._cached
            try:
                self._fetch(now)
            except (ProviderError, CredentialsError) as e:
                if self._cached is not None and now < self._expires - 60:
                    log.warning(
                        "RRSA: refreshing STS credentials failed, the current ones stay in use: %s", e
                    )
                    return self._cached
                raise
            assert self._cached is not None
            return self._cached

    def invalidate(self) -> None:
        """The server rejected the cached token (expired early, revoked): fetch anew next time."""
        with self._lock:
            self._refresh_at = 0.0

    def _read_token(self) -> str:
        try:
            with open(self.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise CredentialsError(
                f"RRSA: cannot read the OIDC token file {self.token_file} ({e.strerror or e})"
            ) from None
        if not token:
            raise CredentialsError(f"RRSA: the OIDC token file {self.token_file} is empty")
        return token

    def _fetch(self, now: float) -> None:
        token = self._read_token()
        session_name = self.session_name or f"cloudtriggers-{int(now)}"
        query = {
            "Action": "AssumeRoleWithOIDC",
            "Format": "JSON",
            "Version": STS_VERSION,
            "Timestamp": datetime.fromtimestamp(now, UTC).strftime(aliyun.DATE_FORMAT),
        }
        # An unsigned RPC call. The token goes in a form body, not the URL as the Python credentials
        # library does, so that no access log on the way records it.
        form = {
            "RoleArn": self.role_arn,
            "OIDCProviderArn": self.oidc_provider_arn,
            "OIDCToken": token,
            "RoleSessionName": session_name,
            "DurationSeconds": str(self.duration),
        }
        secrets = [token]
        try:
            resp = self.session.post(
                f"{self.sts_endpoint}/?{urlencode(query)}",
                data=form,
                headers={"Accept": "application/json", "User-Agent": USER_AGENT},
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as e:
            raise ProviderError(
                ErrorClass.TRANSIENT, redact(f"RRSA: AssumeRoleWithOIDC: {type(e).__name__}: {e}", secrets)
            ) from None
        body = _json_or_none(resp)
        if resp.status_code >= 400:
            code, message, request_id = _error_fields(resp, body)
            kind = classify(resp.status_code, code, create=False, retry_after=False)
            if kind in (ErrorClass.PERMANENT, ErrorClass.TARGET_NOT_FOUND, ErrorClass.FORBIDDEN):
                kind = ErrorClass.AUTH  # the role, provider or token is wrong: the credentials are
            msg = f"RRSA: AssumeRoleWithOIDC for {self.role_arn} {resp.status_code}: {message}"
            if request_id:
                msg += f" (RequestId {request_id})"
            raise ProviderError(kind, redact(msg[:500], secrets), code=code, status=resp.status_code)
        creds = body.get("Credentials") if isinstance(body, dict) else None
        try:
            assert isinstance(creds, dict)
            key = AccessKey(
                access_key_id=str(creds["AccessKeyId"]),
                access_key_secret=str(creds["AccessKeySecret"]),
                security_token=str(creds["SecurityToken"]),
                identity=f"rrsa:{self.role_arn}",
                rrsa=True,
            )
            expires = aliyun.parse_acs_date(str(creds["Expiration"])).timestamp()
        except (AssertionError, KeyError, ValueError):
            raise ProviderError(
                ErrorClass.TRANSIENT, "RRSA: AssumeRoleWithOIDC answered without usable Credentials"
            ) from None
        register_secret(*key.secrets())  # the log filter scrubs them should any library print them
        self._cached = key
        self._expires = expires
        lifetime = max(expires - now, 0.0)
        self._refresh_at = expires - min(900.0, lifetime / 4)
        self.fetches += 1
        log.info(
            "RRSA: STS credentials for %s valid until %s",
            self.role_arn,
            datetime.fromtimestamp(expires, UTC).strftime(aliyun.DATE_FORMAT),
        )


def _json_or_none(resp: requests.Response) -> Any:
    try:
        return resp.json() if resp.content else None
    except ValueError:
        return None


def _error_fields(resp: requests.Response, body: Any) -> tuple[str, str, str]:
    """(code, message, request id) from an error answer in either casing, or from the XML form."""
    if isinstance(body, dict):
        code = body.get("Code") or body.get("code") or ""
        message = body.get("Message") or body.get("message") or ""
        rid = body.get("RequestId") or body.get("requestId") or body.get("requestid") or ""
        return str(code), str(message), str(rid)
    found = dict(_XML_FIELD.findall(resp.text or ""))
    if found:
        return found.get("Code", ""), found.get("Message", ""), found.get("RequestId", "")
    # Not an OpenAPI error answer: summarised, never copied (the endpoint may be any service).
    return "", summarize(resp), resp.headers.get("x-acs-request-id", "")


# -- the provider ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """Where a trigger lives: its cluster and application, and the type/action it was made with."""

    cluster_id: str
    project_id: str
    type: str
    action: str


class AckProvider:
    name: ClassVar[str] = "ack"
    in_place: ClassVar[frozenset[str]] = frozenset()  # no update call exists
    replace_order: ClassVar[Literal["create_first", "delete_first"]] = "create_first"
    has_outputs: ClassVar[bool] = True
    # find() cannot filter by creation time: the reconciler records what existed before a create.
    find_uses_time: ClassVar[bool] = False

    def __init__(
        self,
        limiter: AccountLimiter | None = None,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        policy: EndpointPolicy | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        network: Literal["public", "vpc"] | None = None,
        trusted_endpoints: Iterable[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`environ` (default os.environ) supplies the RRSA variables, CLOUDTRIGGERS_ACK_NETWORK
        (public | vpc: which default endpoint) and CLOUDTRIGGERS_ACK_TRUSTED_ENDPOINTS (comma-separated
        spec.endpoint values that may receive workload-identity credentials)."""
        env = os.environ if environ is None else environ
        self.limiter = limiter or AccountLimiter()
        self.session = session or new_session(policy)  # policy: which endpoints (endpoints.py)
        self.timeout = timeout
        chosen = network or env.get(NETWORK_ENV, "").strip().lower() or "public"
        if chosen not in ("public", "vpc"):
            raise ValueError(f"{NETWORK_ENV} must be public or vpc, not {chosen!r}")
        self.network = chosen
        if trusted_endpoints is None:
            trusted_endpoints = env.get(TRUSTED_ENDPOINTS_ENV, "").split(",")
        self.trusted_endpoints = frozenset(_norm(e) for e in trusted_endpoints if e.strip())
        # STS is the operator's own configuration, not a tenant's: the endpoint policy is not for it.
        sts = session or plain_session()
        self.rrsa = RrsaCredentials.from_environ(env, session=sts, timeout=timeout, clock=clock)

    # -- plumbing -------------------------------------------------------------------------------

    def endpoint(self, block: AckSpec) -> str:
        """spec.endpoint when set (it always wins), else the region's official endpoint."""
        if block.endpoint:
            return block.endpoint.rstrip("/")
        if block.region_id in CENTRAL_ENDPOINT_REGIONS:
            return "https://cs.aliyuncs.com"
        network = "-vpc" if self.network == "vpc" else ""
        return f"https://cs{network}.{block.region_id}.aliyuncs.com"

    def _access_key(self, target: Target) -> AccessKey:
        creds = target.credentials
        if creds.get("rrsa") and not creds.get("accessKeyId"):
            if self.rrsa is None:
                raise CredentialsError(
                    "RRSA is not configured for this operator (ALIBABA_CLOUD_ROLE_ARN ...)"
                )
            block: AckSpec = target.block
            if block.endpoint and not self._trusted(block.endpoint):
                # Workload identity belongs to the operator: never hand its token to an endpoint that
                # any Trigger author can choose (design.md: default credentials stay at their endpoint).
                raise CredentialsError(
                    f"workload identity (RRSA) credentials are sent only to the ACK API endpoints "
                    f"(https://cs[-vpc].<region>.aliyuncs.com) and to those in {TRUSTED_ENDPOINTS_ENV}; "
                    f"spec.ack.endpoint {block.endpoint} is neither: name a credentials Secret instead"
                )
            return self.rrsa.get()
        ak, secret = creds.get("accessKeyId", ""), creds.get("accessKeySecret", "")
        if not ak or not secret:
            raise CredentialsError("the credentials Secret needs the keys accessKeyId and accessKeySecret")
        return AccessKey(ak, secret, creds.get("securityToken") or None, identity=ak)

    def _trusted(self, endpoint: str) -> bool:
        parts = urlsplit(endpoint)
        # Only the CS API itself: other *.aliyuncs.com hosts (Function Compute, OSS buckets) run
        # customers' code or store what they receive.
        official = (
            parts.scheme == "https" and parts.port is None and bool(_CS_HOST.match(parts.hostname or ""))
        )
        return official or _norm(endpoint) in self.trusted_endpoints

    def _request(
        self,
        target: Target,
        method: str,
        action: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, str] | None = None,
        retry_auth: bool = True,
    ) -> Any:
        base = urlsplit(self.endpoint(target.block))
        key = self._access_key(target)
        account = account_key(self.name, base.netloc.lower(), {"identity": key.identity})
        secrets = [*key.secrets(), *target.secrets()]
        pathname = base.path.rstrip("/") + path
        query = dict(query or {})
        data = b""
        headers = {
            "host": base.netloc,
            "x-acs-version": API_VERSION,
            "x-acs-action": action,
            "user-agent": USER_AGENT,
            "accept": "application/json",
        }
        if body is not None:
            # The exact bytes the SDK hashes: compact separators, non-ASCII kept (reference 7.1).
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            headers["content-type"] = aliyun.JSON_CONTENT_TYPE
        self.limiter.acquire(account, ACK)
        try:
            signed = aliyun.sign(
                method,
                pathname,
                query,
                headers,
                data,
                key.access_key_id,
                key.access_key_secret,
                key.security_token,
            )
            url = f"{base.scheme}://{base.netloc}{pathname}"
            if query:
                url += "?" + urlencode(query, quote_via=quote, safe="~")
            create = action == "CreateTrigger"
            try:
                resp = self.session.request(
                    method,
                    url,
                    data=data or None,
                    headers=signed,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except requests.RequestException as e:
                # A create whose answer was lost may still have happened; one never sent has not.
                sent = not _never_connected(e)
                kind = ErrorClass.AMBIGUOUS if create and sent else ErrorClass.TRANSIENT
                raise ProviderError(kind, redact(f"{action}: {type(e).__name__}: {e}", secrets)) from None
            payload = _json_or_none(resp)
            fields = _error_fields(resp, payload) if resp.status_code >= 400 else None
            signal = ack_signal(resp.status_code, fields[0] if fields else "", resp.headers)
            self.limiter.observe(account, signal)
        finally:
            self.limiter.release(account)
        if fields is None:
            if resp.content and payload is None:
                kind = ErrorClass.AMBIGUOUS if create else ErrorClass.TRANSIENT
                raise ProviderError(kind, f"{action}: {resp.status_code} with a body that is not JSON")
            return payload
        err = self._error(resp, fields, signal, action, secrets)
        if err.kind is ErrorClass.AUTH and key.rrsa and retry_auth and self.rrsa is not None:
            # Cached STS credentials the server no longer takes: fetch fresh ones and try once more.
            # Safe for CreateTrigger too: a request refused at authentication did nothing.
            self.rrsa.invalidate()
            return self._request(target, method, action, path, query=query, body=body, retry_auth=False)
        raise err

    def _error(
        self,
        resp: requests.Response,
        fields: tuple[str, str, str],
        signal: Signal,
        action: str,
        secrets: list[str],
    ) -> ProviderError:
        status = resp.status_code
        code, message, request_id = fields
        wait = signal.retry_after  # x-acs-retry-after, already held by the limiter for the whole account
        kind = classify(status, code, create=action == "CreateTrigger", retry_after=wait is not None)
        msg = f"{action} {status}: {message or 'no message'}"
        if request_id:
            msg += f" (RequestId {request_id})"
        return ProviderError(kind, redact(msg[:500], secrets), code=code, status=status, retry_after=wait)

    # -- reading -------------------------------------------------------------------------------------

    @staticmethod
    def _spec_where(block: AckSpec) -> _Where:
        return _Where(block.cluster_id, block.project_id, block.type, block.action)

    def _live_where(self, target: Target) -> _Where:
        """Where the existing trigger lives: what was recorded when it was made (a projectId change
        leaves the old trigger at the old application), else the spec."""
        k = target.known
        if k.get("clusterId") and k.get("projectId"):
            return _Where(
                str(k["clusterId"]),
                str(k["projectId"]),
                str(k.get("type") or "deployment"),
                str(k.get("action") or "redeploy"),
            )
        return self._spec_where(target.block)

    def _describe(self, target: Target, where: _Where) -> list[dict[str, Any]]:
        namespace, _, app = where.project_id.partition("/")
        # Mixed-case keys, exactly as the API has them: Name, Namespace, Type and lower-case action.
        query = {"Name": app, "Namespace": namespace, "Type": where.type, "action": where.action}
        data = self._request(
            target,
            "GET",
            "DescribeTrigger",
            f"/clusters/{_path_segment(where.cluster_id)}/triggers",
            query=query,
        )
        if data is None:
            return []
        if not isinstance(data, list):
            raise ProviderError(ErrorClass.TRANSIENT, "DescribeTrigger: expected a JSON array")
        return [item for item in data if isinstance(item, dict) and trigger_id(item.get("id"))]

    def _observed(self, target: Target, item: Mapping[str, Any], where: _Where) -> Observed:
        block: AckSpec = target.block
        token = item.get("token") if isinstance(item.get("token"), str) and item.get("token") else None
        project = str(item.get("project_id") or where.project_id)
        type_ = str(item.get("type") or where.type)
        action = str(item.get("action") or where.action)
        at_provider: dict[str, Any] = {
            "regionId": block.region_id,
            "clusterId": str(item.get("cluster_id") or where.cluster_id),
            "projectId": project,
            "type": type_,
            "action": action,
        }
        if item.get("name"):
            at_provider["name"] = str(item["name"])
        register_secret(token)
        return Observed(
            external_id=str(trigger_id(item.get("id"))),
            fields={"projectId": project, "type": type_, "action": action},
            at_provider=at_provider,
            token=token,
            outputs={"token": token, "url": HOOK_URL + token} if token else None,
        )

    # -- the Provider protocol ----------------------------------------------------------------------

    def ambient_credentials(self, block: Any) -> Mapping[str, str] | None:
        return dict(RRSA_MARKER) if self.rrsa is not None else None

    def claim_key(self, block: Any, known: Mapping[str, Any], external_id: str) -> str:
        host = (urlsplit(self.endpoint(block)).netloc or "").lower()
        # The public and VPC endpoints of a region are one service: the same trigger either way.
        if host.startswith("cs-vpc.") and host.endswith(".aliyuncs.com"):
            host = "cs." + host.removeprefix("cs-vpc.")
        cluster = known.get("clusterId") or block.cluster_id
        return f"ack|{host}|{cluster}|{external_id}"

    def desired(self, target: Target) -> dict[str, Any]:
        block: AckSpec = target.block
        return {"projectId": block.project_id, "type": block.type, "action": block.action}

    def observe(self, target: Target, external_id: str) -> Observed | None:
        where = self._live_where(target)
        for item in self._describe(target, where):
            if trigger_id(item.get("id")) == external_id:
                return self._observed(target, item, where)
        return None

    def find(self, target: Target, since: datetime) -> list[Observed]:
        """Triggers of the spec's application with its type and action, oldest id first.

        `since` cannot narrow this: ACK keeps no creation time. The reconciler skips the ones another
        Trigger claims and the ones that existed before its create (find_uses_time = False).
        """
        where = self._spec_where(target.block)
        found = [
            self._observed(target, item, where)
            for item in self._describe(target, where)
            if item.get("project_id", where.project_id) == where.project_id
            and (item.get("type") or where.type) == where.type
            and (item.get("action") or where.action) == where.action
        ]
        return sorted(found, key=lambda o: (len(o.external_id), o.external_id))

    def create(self, target: Target) -> Observed:
        where = self._spec_where(target.block)  # never target.known: that is where an old trigger lives
        body = {
            "action": where.action,
            "cluster_id": where.cluster_id,
            "project_id": where.project_id,
            "type": where.type,
        }
        data = self._request(
            target,
            "POST",
            "CreateTrigger",
            f"/clusters/{_path_segment(where.cluster_id)}/triggers",
            body=body,
        )
        tid = trigger_id(data.get("id")) if isinstance(data, dict) else None
        if tid is None:
            raise ProviderError(ErrorClass.AMBIGUOUS, "CreateTrigger answered without a trigger id")
        # The token exists only in DescribeTrigger. If reading it fails the trigger still exists:
        # AMBIGUOUS keeps the create intent, so the next pass finds and adopts it instead of creating.
        try:
            items = self._describe(target, where)
        except ProviderError as e:
            raise ProviderError(
                ErrorClass.AMBIGUOUS,
                f"created trigger {tid}, but reading its token failed: {e.message}",
                code=e.code,
                status=e.status,
                retry_after=e.retry_after,
            ) from None
        for item in items:
            if trigger_id(item.get("id")) == tid:
                return self._observed(target, item, where)
        raise ProviderError(
            ErrorClass.AMBIGUOUS, f"created trigger {tid}, but DescribeTrigger does not list it"
        )

    def update(self, target: Target, observed: Observed, changed: list[str]) -> Observed:
        raise ProviderError(
            ErrorClass.PERMANENT,
            "ACK has no call to change a trigger; a change of projectId, type or action replaces it",
        )

    def delete(self, target: Target, external_id: str) -> None:
        where = self._live_where(target)
        path = f"/clusters/{_path_segment(where.cluster_id)}/triggers/{_path_segment(external_id)}"
        try:
            self._request(target, "DELETE", "DeleteTrigger", path)
        except ProviderError as e:
            if e.kind not in (ErrorClass.TARGET_NOT_FOUND, ErrorClass.PERMANENT):
                raise
            # ACK documents no not-found code for DeleteTrigger, so look instead of guessing from it:
            # gone from its application (or the whole cluster gone) counts as deleted.
            try:
                still = self.observe(target, external_id)
            except ProviderError as look:
                if look.kind is ErrorClass.TARGET_NOT_FOUND and "ClusterNotFound" in look.code:
                    return
                if look.kind in (ErrorClass.TRANSIENT, ErrorClass.THROTTLED, ErrorClass.AMBIGUOUS):
                    # The look failed, not the delete: retry soon, not at the pace of a permanent error
                    # (a delete answered too late and retried gets ErrorTriggerNotFound, then this).
                    raise look from None
                raise e from None
            if still is None:
                return
            raise


def _never_connected(e: requests.RequestException) -> bool:
    """The request never left: connect timeout or refused connection (urllib3's NewConnectionError)."""
    if isinstance(e, requests.ConnectTimeout):
        return True
    reason = getattr(e.args[0], "reason", None) if e.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _norm(endpoint: str) -> str:
    return endpoint.strip().rstrip("/").lower()
