"""A whole world in one process: an emulated Kubernetes API, the provider sandboxes and the operator.

The demo and the integration tests both run on it; nothing here needs a cluster or a network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, cast

from kubernetes import client as k8s

from ..crd import build_crd
from ..models import GROUP, PLURAL, VERSION
from ..providers.base import Provider
from ..runner import OperatorParts, build_operator
from ..settings import Settings
from . import LOOPBACK_ENDPOINTS
from .ack import AckSandbox
from .gitlab import GitLabSandbox
from .kopfthread import KopfThread, login_handler_for
from .kube import ClusterEmulator, KubeServer, kube_client
from .swr import SwrSandbox

T = TypeVar("T")


class LocalWorld:
    def __init__(
        self,
        settings: Settings | None = None,
        providers: Mapping[str, Provider] | None = None,
        emulator: ClusterEmulator | None = None,
    ) -> None:
        self.settings = settings or Settings(http_port=0)
        if "http_port" not in self.settings.model_fields_set:
            self.settings.http_port = 0  # tests and the demo do not bind the operator's port by default
        if "allowed_endpoints" not in self.settings.model_fields_set:
            self.settings.allowed_endpoints = list(LOOPBACK_ENDPOINTS)  # the sandboxes below
        self.providers = providers  # None: the operator's own build_providers()
        self.kube = KubeServer(emulator, install_crd=False)  # start() installs it, as kubectl apply would
        self.gitlab = GitLabSandbox()
        self.ack = AckSandbox()
        self.swr = SwrSandbox()
        self.api: k8s.ApiClient | None = None
        self.parts: OperatorParts | None = None
        self.operator: KopfThread | None = None
        self._namespaces: set[str] = set()  # created by this world's helpers

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> LocalWorld:
        self.kube.start()
        self.gitlab.start()
        self.ack.start()
        self.swr.start()
        self.api = kube_client(self.kube.url)
        # The CRD object, as `kubectl apply -f crds/trigger.yaml` would install it.
        k8s.ApiextensionsV1Api(self.api).create_custom_resource_definition(build_crd())  # type: ignore[arg-type]
        return self

    def start_operator(self, prepare: Callable[[OperatorParts], None] | None = None) -> OperatorParts:
        """Start the operator; `prepare` may change its parts first (fault tests wrap Kube, providers)."""
        assert self.api is not None, "start() first"
        self.parts = build_operator(
            self.settings,
            kube_client(self.kube.url),
            login=login_handler_for(self.kube.url),
            providers=self.providers,
        )
        if prepare is not None:
            prepare(self.parts)
        # kopf's observers (CRDs, and namespaces when namespaced) run as on a real cluster: the emulator
        # serves both (kopf-practice.md E8 is fixed in sandbox/kube.py's path parser).
        self.parts.settings.scanning.disabled = False
        self.parts.settings.watching.server_timeout = 30
        self.parts.settings.watching.client_timeout = 45
        self.parts.settings.networking.request_timeout = 10
        self.parts.settings.networking.error_backoffs = [0.1, 0.2, 0.5, 1]
        self.operator = KopfThread(self.parts.registry, self.parts.settings)
        self.operator.start()
        return self.parts

    def stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.stop()
            self.operator = None
        if self.parts is not None:
            self.parts.runtime.executor.shutdown(wait=True, cancel_futures=True)
            self.parts = None

    def stop(self) -> None:
        try:
            self.stop_operator()
        finally:
            self.swr.stop()
            self.ack.stop()
            self.gitlab.stop()
            self.kube.stop()

    def __enter__(self) -> LocalWorld:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- Kubernetes conveniences ------------------------------------------------------------------

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    def create_namespace(self, name: str) -> None:
        """Create the namespace unless it exists (as `kubectl create namespace`, tolerating 409)."""
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        try:
            self.core.create_namespace(body)  # type: ignore[arg-type]
        except k8s.ApiException as e:
            if e.status != 409:
                raise
        self._namespaces.add(name)

    def delete_namespace(self, name: str) -> None:
        self.core.delete_namespace(name)
        self._namespaces.discard(name)

    def _ensure_namespace(self, name: str) -> None:
        # The helpers below work in any namespace, as a test on a real cluster first creates it.
        if name not in self._namespaces:
            self.create_namespace(name)

    def apply_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque",
            "stringData": data,
        }
        self._ensure_namespace(namespace)
        try:
            self.core.create_namespaced_secret(namespace, body)  # type: ignore[arg-type]
        except k8s.ApiException as e:
            if e.status != 409:
                raise
            self.core.replace_namespaced_secret(name, namespace, body)  # type: ignore[arg-type]

    def create_trigger(self, obj: dict[str, Any]) -> dict[str, Any]:
        ns = obj["metadata"]["namespace"]
        self._ensure_namespace(ns)
        created = self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj)
        return cast(dict[str, Any], created)

    def patch_trigger(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)

    def delete_trigger(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def trigger(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.kube.get(f"{GROUP}/{VERSION}/{PLURAL}", namespace, name)

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.kube.get("v1/secrets", namespace, name)

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The Trigger's Events, once the operator has posted those it recorded (it posts them from a
        thread of its own, event_poster.py)."""
        if self.parts is not None and self.parts.runtime.events is not None:
            self.parts.runtime.events.flush(10.0)
        return [
            e
            for e in self.kube.list("v1/events", namespace)
            if (e.get("involvedObject") or {}).get("name") == name
        ]


def condition(obj: dict[str, Any] | None, type_: str = "Ready") -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def wait_for(
    probe: Callable[[], T | None], timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `probe` until it returns something truthy; raise TimeoutError with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or probe}")
        time.sleep(interval)
