"""Operator settings: environment variables CLOUDTRIGGERS_*, overridden by `cloudtriggers run` flags.

Durations accept seconds (600) or Go-style strings (10m, 1h30m), the same syntax as spec.resyncPeriod.
"""

from __future__ import annotations

import json
import os
import typing
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from .models import parse_duration

if TYPE_CHECKING:
    from .providers.endpoints import EndpointPolicy


def _seconds(value: Any) -> Any:
    if isinstance(value, str) and value and not value.replace(".", "", 1).isdigit():
        return parse_duration(value)
    return value


Seconds = Annotated[float, BeforeValidator(_seconds)]


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


ENV_PREFIX = "CLOUDTRIGGERS_"


class Settings(BaseModel):
    """Each field not given is read from CLOUDTRIGGERS_<FIELD> (any case). Tuples are JSON there
    (`[1, 300]`), lists comma-separated, the rest plain text, validated as the field says: what
    pydantic-settings did for these fields, without its import (1.5 MiB of the operator's RSS)."""

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    namespaces: Annotated[list[str], BeforeValidator(_csv)] = Field(
        default_factory=list,
        description="Namespaces to watch (comma-separated in the environment); empty: all.",
    )
    label_selector: str = Field(
        default="", description="Only Triggers with these labels, e.g. shard=a (sharding)."
    )
    resync_period: Seconds = Field(
        default=600.0, description="Default drift-check interval; spec.resyncPeriod wins."
    )
    credentials_poll: Seconds = Field(
        default=15.0, gt=0, description="Re-read a missing or failing credentials Secret."
    )
    credentials_reads: Seconds = Field(
        default=2.0,
        ge=0,
        description="For how long one read of a credentials Secret serves every Trigger using it "
        "(a change of the Secret is seen at most this late; 0: every pass reads it).",
    )
    credentials_sweep: Seconds = Field(
        default=300.0,
        gt=0,
        description="How often held credentials Secrets that no Trigger uses any more are released "
        "(after a crash or a downtime; a Trigger's deletion releases its Secret at once).",
    )
    delete_timeout: Seconds = Field(
        default=120.0,
        description="After this, a Trigger in a terminating namespace whose delete fails is orphaned.",
    )
    transient_backoff: tuple[float, float] = Field(
        default=(1.0, 300.0), description="First and maximum transient backoff."
    )
    slow_backoff: tuple[float, float] = Field(
        default=(12.0, 1800.0),
        description="First and maximum backoff for credential, permission and not-found errors.",
    )
    breaker_threshold: int = Field(
        default=3,
        ge=1,
        description="Authentication failures in a row that open an account's circuit (no more calls).",
    )
    breaker_cooldown: Seconds = Field(
        default=300.0,
        gt=0,
        description="How long an open circuit waits before one Trigger probes the credentials again "
        "(doubling up to the slow backoff's maximum); a changed credentials Secret closes it at once.",
    )
    perma_diff_repairs: int = Field(
        default=3,
        ge=0,
        description="Identical drift repairs in a row after which a Trigger stops repairing and names the "
        "field that keeps differing (until its spec changes); 0: never stop.",
    )
    rate: float | None = Field(
        default=None,
        gt=0,
        description="Cap on provider requests per second per account. Unset: no cap of yours; the pace "
        "starts at what the provider documents, rises while it accepts and drops when it throttles.",
    )
    burst: int | None = Field(
        default=None, ge=1, description="Cap on the provider request burst per account; unset: no cap."
    )
    provider_concurrency: int = Field(
        default=8, ge=1, description="Provider requests in flight at once per account (at most `workers`)."
    )
    workers: int = Field(default=16, ge=1, description="Threads for provider and Kubernetes calls.")
    default_credentials_secret: str = Field(
        default="",
        description="namespace/name of a Secret used by Triggers that name none (single-tenant installs).",
    )
    default_credentials_endpoint: str = Field(
        default="",
        description="The only endpoint (GitLab url, ACK/SWR endpoint) the default credentials are sent to.",
    )
    log_format: Literal["text", "json"] = Field(default="text", description="Log format on stderr.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level (debug also shows kopf's line for every watch event)."
    )
    http_port: int = Field(
        default=8080, ge=0, le=65535, description="Port of /metrics, /healthz and /readyz; 0: off."
    )

    leader_election: bool = Field(
        default=False, description="Run only while holding a coordination.k8s.io Lease (for replicas > 1)."
    )
    lease_name: str = Field(default="cloudtriggers", description="Name of the leader-election Lease.")
    lease_namespace: str = Field(
        default="",
        description="Namespace of the Lease; default: the pod's namespace (POD_NAMESPACE) or default.",
    )
    lease_duration: Seconds = Field(
        default=15.0, ge=2, description="A leader that stops renewing loses it after this."
    )
    identity: str = Field(default="", description="This replica's name in the Lease; default: the hostname.")

    ack_network: Literal["public", "vpc"] = Field(
        default="public", description="Default ACK endpoint: public (cs.<region>) or vpc (cs-vpc.<region>)."
    )
    ack_trusted_endpoints: Annotated[list[str], BeforeValidator(_csv)] = Field(
        default_factory=list,
        description="spec.ack.endpoint values (besides the official ones) that may receive RRSA credentials.",
    )

    allowed_endpoints: Annotated[list[str], BeforeValidator(_csv)] = Field(
        default_factory=list,
        description="Endpoint patterns (scheme://host[:port]; *.suffix, CIDR) that may be called although "
        "plain http or a private or loopback address (docs/security.md).",
    )
    denied_endpoints: Annotated[list[str], BeforeValidator(_csv)] = Field(
        default_factory=list, description="Endpoint patterns never called (wins over allowed)."
    )
    only_allowed_endpoints: bool = Field(
        default=False, description="Call only endpoints an allowed pattern matches (a strict allowlist)."
    )

    @field_validator("allowed_endpoints", "denied_endpoints")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        from .providers.endpoints import Pattern

        for p in v:
            Pattern.parse(p)
        return v

    def endpoint_policy(self) -> EndpointPolicy:
        from .providers.endpoints import EndpointPolicy

        return EndpointPolicy.parse(
            self.allowed_endpoints, self.denied_endpoints, self.only_allowed_endpoints
        )

    @field_validator("default_credentials_secret")
    @classmethod
    def _ns_name(cls, v: str) -> str:
        if v and v.count("/") != 1:
            raise ValueError("default credentials Secret must be namespace/name")
        return v

    @model_validator(mode="before")
    @classmethod
    def _environment(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        env = {k.upper(): v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)}
        given = dict(data)
        for name, field in cls.model_fields.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if name in given or raw is None:
                continue
            if typing.get_origin(field.annotation) is tuple:
                try:
                    given[name] = json.loads(raw)
                except ValueError as e:
                    raise ValueError(f"{ENV_PREFIX}{name.upper()}: not JSON: {e}") from None
            else:
                given[name] = raw
        return given

    @classmethod
    def from_env(cls) -> Settings:
        return cls()
