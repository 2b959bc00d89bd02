"""The Trigger resource: pydantic models that validate specs and generate the CRD schema.

Field descriptions here are what `kubectl explain trigger.spec...` prints. CEL rules live next to
the fields they guard (`x-kubernetes-validations`), so the CRD and the operator cannot disagree.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "cloudtriggers.io"
VERSION = "v1alpha1"
KIND = "Trigger"
PLURAL = "triggers"
FINALIZER = f"{GROUP}/finalizer"  # ours (scheduler.py), on every Trigger the operator may still act for
SHORT_NAME = "trg"

PROVIDERS = ("gitlab", "ack", "swr")

URL_PATTERN = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
# Kubernetes object names (DNS subdomain), for the output Secret.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_NAME_MAX = 253  # a Secret's name is a DNS subdomain of at most 253 characters
# SWR trigger names: a letter first; letters, digits, '_' and '-'; no doubled or trailing separator.
SWR_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9]*([-_][A-Za-z0-9]+)*$"
SWR_NAME_MAX = 64
# SWR organization: lowercase start, [a-z0-9._-], separators never adjacent (at most two '_'),
# ends in a letter or digit.
SWR_ORG_PATTERN = r"^[a-z][a-z0-9]*(([.\-]|_{1,2})[a-z0-9]+)*$"
SWR_REPO_PATTERN = r"^[a-z0-9]([a-z0-9._/-]*[a-z0-9])?$"
ACK_PROJECT_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
GITLAB_PROJECT_PATTERN = r"^([0-9]+|[^/\s]+(/[^/\s]+)+)$"


def _rule(rule: str, message: str, reason: str | None = None) -> Any:
    out: dict[str, str] = {"rule": rule, "message": message}
    if reason:
        out["reason"] = reason
    return out


class _Model(BaseModel):
    # camelCase on the wire; the API server prunes unknown fields, so ignore rather than fail.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


def _nonempty(description: str, **kw: Any) -> Any:
    return Field(description=description, min_length=1, **kw)


class GitLabSpec(_Model):
    """A GitLab pipeline trigger token of one project."""

    url: str = Field(
        "https://gitlab.com",
        description="Base URL of the GitLab instance (scheme and host, no /api/v4). Immutable: a trigger "
        "on another instance is another object; create a new Trigger instead.",
        pattern=URL_PATTERN,
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule("self == oldSelf", "gitlab.url is immutable; create a new Trigger for another instance")
            ]
        },
    )
    project: str = _nonempty(
        "The project: its numeric id or its full path (group/subgroup/name). Changing it replaces the "
        "trigger: a new one is created in the new project, the Secret is updated, the old one deleted.",
        pattern=GITLAB_PROJECT_PATTERN,
        max_length=255,
    )
    description: str | None = Field(
        None,
        description='The trigger\'s description at GitLab; default "<namespace>/<name>". Updated in place.',
        min_length=1,
        max_length=255,
    )


class AckSpec(_Model):
    """An Alibaba Cloud ACK application trigger (a redeploy hook for one application)."""

    region_id: str = _nonempty(
        "Region of the cluster, e.g. cn-beijing.", pattern=r"^[a-z]{2,}(-[a-z0-9]+)+$", max_length=64
    )
    cluster_id: str = _nonempty(
        "Id of the ACK cluster. Immutable.",
        pattern=r"^[A-Za-z0-9-]+$",
        max_length=64,
        json_schema_extra={
            "x-kubernetes-validations": [_rule("self == oldSelf", "ack.clusterId is immutable")]
        },
    )
    project_id: str = _nonempty(
        'The application, as "<namespace>/<application>" in the target cluster. Changing it replaces '
        "the trigger.",
        pattern=ACK_PROJECT_PATTERN,
        max_length=317,
    )
    action: Literal["redeploy"] = Field(
        "redeploy", description="What the trigger does; only redeploy exists."
    )
    type: Literal["deployment", "application"] = Field(
        "deployment",
        description="deployment (a Kubernetes Deployment) or application (Application Center app).",
    )
    endpoint: str | None = Field(
        None,
        description="API endpoint override, a full URL (VPC endpoint, private cloud, the sandbox); "
        "default https://cs.<regionId>.aliyuncs.com.",
        pattern=URL_PATTERN,
    )


class SwrSpec(_Model):
    """A Huawei Cloud SWR image trigger: a push whose tag matches updates a CCE/CCI workload."""

    region: str = _nonempty("Region, e.g. cn-north-4.", pattern=r"^[a-z]{2,}(-[a-z0-9]+)+$", max_length=64)
    organization: str = _nonempty(
        'The SWR organization (SWR calls it "namespace").', pattern=SWR_ORG_PATTERN, max_length=64
    )
    repository: str = _nonempty(
        "The image repository; may contain '/'.", pattern=SWR_REPO_PATTERN, max_length=128
    )
    name: str | None = Field(
        None,
        description="Trigger name, which is its id at SWR: a letter first, then letters, digits, '_' or '-', "
        "no doubled or trailing separator, at most 64. Default derived from metadata.name.",
        pattern=SWR_NAME_PATTERN,
        min_length=1,
        max_length=SWR_NAME_MAX,
    )
    app_type: Literal["deployments", "statefulsets"] = Field("deployments", description="Kind of workload.")
    application: str = _nonempty("Name of the workload to update.", max_length=253)
    cluster_namespace: str = _nonempty("Kubernetes namespace of the workload.", max_length=63)
    cluster_id: str | None = Field(
        None, description="CCE cluster id (triggerMode cce).", min_length=1, max_length=64
    )
    cluster_name: str | None = Field(
        None, description="CCE cluster name (triggerMode cce).", min_length=1, max_length=64
    )
    container: str = Field(
        "", description="Container to update; empty means every container using the image."
    )
    trigger_type: Literal["all", "tag", "regular"] = Field(
        "all", description="all: every tag; tag: the tags in condition; regular: tags matching the regex."
    )
    condition: str = Field(
        ".*",
        description='For triggerType all ".*"; for tag, tag names separated by ";"; for regular, a regex.',
        min_length=1,
        max_length=255,
    )
    enabled: bool = Field(True, description="Whether the trigger fires. Changed in place.")
    trigger_mode: Literal["cce", "cci"] = Field(
        "cce", description="cce (CCE cluster) or cci (serverless CCI)."
    )
    endpoint: str | None = Field(
        None,
        description="API endpoint override, a full URL; default https://swr-api.<region>.myhuaweicloud.com.",
        pattern=URL_PATTERN,
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "self.triggerMode != 'cce' || has(self.clusterId) || has(self.clusterName)",
                    "swr: triggerMode cce needs clusterId or clusterName",
                ),
                _rule(
                    "self.triggerType != 'all' || self.condition == '.*'",
                    'swr: triggerType all needs condition ".*"',
                ),
            ]
        }
    )

    @model_validator(mode="after")
    def _check(self) -> SwrSpec:
        if self.trigger_mode == "cce" and not (self.cluster_id or self.cluster_name):
            raise ValueError("swr: triggerMode cce needs clusterId or clusterName")
        if self.trigger_type == "all" and self.condition != ".*":
            raise ValueError('swr: triggerType all needs condition ".*"')
        return self


class SecretRef(_Model):
    """A Secret in the Trigger's own namespace."""

    name: str = _nonempty("Name of the Secret.", pattern=DNS_SUBDOMAIN_PATTERN, max_length=SECRET_NAME_MAX)


def parse_duration(text: str) -> float:
    """'1h30m' -> 5400.0; raises ValueError on anything else."""
    m = re.fullmatch(DURATION_PATTERN, text)
    if not text or not m:
        raise ValueError(f"not a duration like 30s, 10m, 1h30m: {text!r}")
    h, mi, s = (int(g[:-1]) if g else 0 for g in m.groups())
    return float(h * 3600 + mi * 60 + s)


class RotationSpec(_Model):
    """Token rotation: a new provider trigger (a new token) replaces the old one, create-before-delete."""

    every: str | None = Field(
        None,
        description="Rotate this often, e.g. 24h or 720h; at least 1h. Absent: only when the annotation "
        "cloudtriggers.io/rotate-requested-at gets a new value.",
        pattern=DURATION_PATTERN,
        min_length=2,
        max_length=32,
    )
    overlap: str = Field(
        "10m",
        description="How long the old token keeps working after the new one is in the Secret, so callers "
        "can pick it up (0s: deleted at once).",
        pattern=DURATION_PATTERN,
        min_length=2,
        max_length=32,
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _rule(
                    "!has(self.every) || duration(self.every) >= duration('1h')",
                    "rotation.every must be at least 1h",
                )
            ]
        }
    )

    @field_validator("every")
    @classmethod
    def _every_min(cls, v: str | None) -> str | None:
        if v is not None and parse_duration(v) < 3600:
            raise ValueError("rotation.every must be at least 1h")
        return v


_SPEC_RULES: list[Any] = [
    _rule(
        "[has(self.gitlab), has(self.ack), has(self.swr)].filter(x, x).size() == 1",
        "exactly one provider block (gitlab, ack or swr) must be set",
    ),
    _rule(
        "has(self.gitlab) == has(oldSelf.gitlab) && has(self.ack) == has(oldSelf.ack) "
        "&& has(self.swr) == has(oldSelf.swr)",
        "the provider block cannot change kind after creation; create a new Trigger instead",
    ),
    _rule(
        "!has(self.managementPolicy) || self.managementPolicy != 'ObserveOnly' || has(self.swr) "
        "|| (has(self.externalId) && size(self.externalId) > 0)",
        "managementPolicy ObserveOnly needs spec.externalId for gitlab and ack",
    ),
    _rule(
        "!has(self.rotation) || !has(self.swr)",
        "spec.rotation: SWR triggers have no token to rotate",
    ),
    _rule(
        "!has(self.rotation) || ((!has(self.managementPolicy) || self.managementPolicy == 'Full') "
        "&& (!has(self.externalId) || size(self.externalId) == 0))",
        "spec.rotation needs managementPolicy Full and no spec.externalId: cloudtriggers rotates only "
        "tokens it created",
    ),
]


class TriggerSpec(_Model):
    """Desired state of a deployment trigger at one provider."""

    gitlab: GitLabSpec | None = Field(None, description="A GitLab pipeline trigger token.")
    ack: AckSpec | None = Field(None, description="An Alibaba Cloud ACK application trigger.")
    swr: SwrSpec | None = Field(None, description="A Huawei Cloud SWR image trigger.")
    credentials_secret_ref: SecretRef | None = Field(
        None,
        description="Secret in this namespace with the provider credentials. GitLab: token. "
        "ACK: accessKeyId, accessKeySecret, optional securityToken. "
        "SWR: accessKey, secretKey, optional projectId, securityToken. "
        "When absent, the operator's default credentials or workload identity apply.",
    )
    deletion_policy: Literal["Delete", "Orphan"] = Field(
        "Delete", description="Delete: delete the provider trigger with this object. Orphan: keep it."
    )
    management_policy: Literal["Full", "ObserveOnly"] = Field(
        "Full",
        description="Full: create, update and delete. ObserveOnly: only read the provider trigger named by "
        "externalId (never writes).",
    )
    external_id: str | None = Field(
        None,
        description="Id of an existing provider trigger to adopt (GitLab trigger id, ACK trigger id, SWR "
        "trigger name) instead of creating one.",
        max_length=255,
    )
    secret_name: str | None = Field(
        None,
        description='Secret that receives the secret outputs (token, url); default "<name>-trigger".',
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=SECRET_NAME_MAX,
    )
    resync_period: str | None = Field(
        None,
        description="How often the provider is re-read to repair drift, e.g. 30s, 10m, 1h30m; at least 5s. "
        "Default from the operator's settings (10m).",
        pattern=DURATION_PATTERN,
        min_length=2,
        max_length=32,
    )

    rotation: RotationSpec | None = Field(
        None,
        description="Rotate the token (GitLab, ACK): on a schedule (every) and whenever the annotation "
        "cloudtriggers.io/rotate-requested-at changes; the old token works for `overlap` more.",
    )

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    @field_validator("resync_period")
    @classmethod
    def _resync_min(cls, v: str | None) -> str | None:
        if v is not None and parse_duration(v) < 5:
            raise ValueError("resyncPeriod must be at least 5s")
        return v

    @model_validator(mode="after")
    def _one_provider(self) -> TriggerSpec:
        blocks = [p for p in PROVIDERS if getattr(self, p) is not None]
        if len(blocks) != 1:
            raise ValueError("exactly one provider block (gitlab, ack or swr) must be set")
        if self.management_policy == "ObserveOnly" and self.swr is None and not self.external_id:
            raise ValueError("managementPolicy ObserveOnly needs spec.externalId for gitlab and ack")
        if self.rotation is not None and self.swr is not None:
            raise ValueError("spec.rotation: SWR triggers have no token to rotate")
        if self.rotation is not None and (self.management_policy != "Full" or self.external_id):
            raise ValueError(
                "spec.rotation needs managementPolicy Full and no spec.externalId: cloudtriggers rotates "
                "only tokens it created"
            )
        return self

    @cached_property
    def provider(self) -> str:
        # Asked about a dozen times a pass; the model is frozen, so once is enough (model_copy with
        # update= would carry it over, but that skips validation anyway and nothing here uses it).
        return next(p for p in PROVIDERS if getattr(self, p) is not None)

    @property
    def block(self) -> GitLabSpec | AckSpec | SwrSpec:
        b = getattr(self, self.provider)
        assert b is not None
        return b  # type: ignore[no-any-return]


class Condition(_Model):
    """A standard Kubernetes condition."""

    type: str = Field(description="Ready or Synced.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One word, CamelCase: why the condition has this status.")
    message: str = Field("", description="Human-readable detail.")
    observed_generation: int | None = Field(
        None, description="The metadata.generation this was computed for."
    )
    last_transition_time: str | None = Field(None, description="When status last changed (RFC 3339).")


class PendingCreate(_Model):
    """A create that was started and whose outcome is not known yet (crash recovery)."""

    started_at: str = Field(description="When the create call was about to be sent (RFC 3339).")
    provider: str = Field(description="The provider block the create was for.")
    existing: list[str] = Field(
        default_factory=list,
        description="Ids that existed before the create, never adopted as its result (providers without "
        "creation times).",
    )


class PendingDelete(_Model):
    """The trigger a replacement or a rotation superseded; deleted once the new one is recorded (and,
    after a rotation, once its overlap has run)."""

    external_id: str = Field(description="Id of the superseded provider trigger.")
    at_provider: dict[str, Any] = Field(
        default_factory=dict, description="Where it lives (as in atProvider)."
    )
    not_before: str | None = Field(
        None, description="A rotation's old token keeps working until then (RFC 3339); deleted after."
    )


class RotationStatus(_Model):
    """Token rotation's record."""

    last_rotation_time: str | None = Field(None, description="When the token was last rotated (RFC 3339).")
    next_rotation_time: str | None = Field(None, description="When it rotates next on schedule (RFC 3339).")
    requested: str | None = Field(
        None, description="The value of cloudtriggers.io/rotate-requested-at last acted on."
    )


class TriggerStatus(_Model):
    """Observed state, written by the operator."""

    provider: str | None = Field(None, description="Which provider block is in use: gitlab, ack or swr.")
    external_id: str | None = Field(
        None, description="Id of the provider trigger: GitLab trigger id, ACK trigger id, SWR trigger name."
    )
    observed_generation: int | None = Field(None, description="The metadata.generation last reconciled.")
    last_sync_time: str | None = Field(
        None,
        description="When the provider was last observed in sync. A check that changes nothing "
        "refreshes it only every 5 resync periods (no status write per check).",
    )
    secret_name: str | None = Field(None, description="The Secret that holds the secret outputs.")
    token_sha256: str | None = Field(
        None, description="First 12 hex characters of the token's SHA-256 (never the token)."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Ready and Synced.")
    at_provider: dict[str, Any] = Field(
        default_factory=dict,
        description="What the provider reports that users care about (owner, created and last-used times, "
        "resolved ids).",
    )
    pending_create: PendingCreate | None = Field(
        None, description="Set while a create is in flight; used after a crash to find and adopt."
    )
    pending_delete: PendingDelete | None = Field(
        None,
        description="Set while a replaced or rotated-out trigger still has to be deleted at the provider "
        "(during a rotation's overlap, the old token still works).",
    )
    token_created_at: str | None = Field(
        None, description="When the token now in the Secret was made or first written (RFC 3339)."
    )
    rotation: RotationStatus | None = Field(
        None, description="Token rotation: last, next, and the last request."
    )


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def default_description(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


SECRET_SUFFIX = "-trigger"
# A Trigger's name may be as long as a Secret's (SECRET_NAME_MAX): the suffix may not fit.
DEFAULT_SECRET_NAME_FITS = SECRET_NAME_MAX - len(SECRET_SUFFIX)
SECRET_NAME_TOO_LONG = (
    f"metadata.name is longer than {DEFAULT_SECRET_NAME_FITS} characters, so the default output Secret "
    f'name (metadata.name + "{SECRET_SUFFIX}") would be longer than {SECRET_NAME_MAX}; set spec.secretName'
)
# Rules on the whole object (CEL sees metadata.name there): refused at kubectl apply.
ROOT_RULES: list[Any] = [
    _rule(
        "has(self.spec.swr) || has(self.spec.secretName) "
        f"|| size(self.metadata.name) <= {DEFAULT_SECRET_NAME_FITS}",
        SECRET_NAME_TOO_LONG,
    )
]


def default_secret_name(name: str) -> str:
    return f"{name}{SECRET_SUFFIX}"


def swr_default_name(namespace: str, name: str) -> str:
    """SWR trigger name derived from metadata.name (design.md, "SWR default name")."""
    if re.fullmatch(SWR_NAME_PATTERN, name) and len(name) <= SWR_NAME_MAX:
        return name
    s = name.replace(".", "-")
    s = re.sub(r"[-_]+", "-", s)
    s = re.sub(r"^[^A-Za-z]+", "", s)
    s = s[:55].rstrip("-_")
    suffix = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:8]
    # A name with no letter at all still needs a letter first.
    return f"{s}-{suffix}" if s else f"t-{suffix}"


def spec_problems(error: ValidationError) -> list[str]:
    """What the operator says of a spec it cannot use (the InvalidSpec message; `cloudtriggers validate`)."""
    return [f"{'.'.join(str(x) for x in err['loc']) or 'spec'}: {err['msg']}" for err in error.errors()]


def parse_time(value: Any) -> float | None:
    """An RFC 3339 time of a status or condition, as a Unix timestamp; None when absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
