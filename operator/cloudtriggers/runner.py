"""Assembles one operator process: reconciler, providers, kopf registry and settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from .handlers import LoginFn, Runtime, configure, register
from .kube import KubeClient
from .providers import build_providers
from .providers.base import Provider
from .reconcile import Reconciler
from .settings import Settings


@dataclass
class OperatorParts:
    registry: kopf.OperatorRegistry
    settings: kopf.OperatorSettings
    runtime: Runtime


def providers_for(settings: Settings) -> dict[str, Provider]:
    """The provider clients as the settings make them (the operator's, and `cloudtriggers plan`'s)."""
    return build_providers(
        settings.rate,
        settings.burst,
        settings.ack_network,
        settings.ack_trusted_endpoints or None,
        concurrency=settings.provider_concurrency,
        policy=settings.endpoint_policy(),
    )


def build_operator(
    settings: Settings,
    api_client: Any,
    login: LoginFn | None = None,
    providers: Mapping[str, Provider] | None = None,
    serve_http: bool = True,
) -> OperatorParts:
    """Everything `kopf.operator()` needs; `api_client` is the kubernetes client the reconciler uses."""
    kube = KubeClient(api_client, secret_reads=settings.credentials_reads)
    outputs = kube.watch_outputs(settings.namespaces)
    events = kube.post_events_in_background()
    reconciler = Reconciler(kube, providers or providers_for(settings), settings)
    runtime = Runtime(reconciler, settings, outputs=outputs, events=events)
    registry = kopf.OperatorRegistry()
    register(registry, runtime, login=login, serve=serve_http)
    kopf_settings = kopf.OperatorSettings()
    configure(kopf_settings, settings)
    return OperatorParts(registry, kopf_settings, runtime)
