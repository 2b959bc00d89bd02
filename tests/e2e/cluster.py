"""A World on the real cluster KUBECONFIG names: same helpers as the integration tests' LocalWorld.

Mixed in front of a scenario module's World class, it replaces the emulated API with the cluster
(a fresh namespace, the CRD applied, real admission and garbage collection) and keeps the local
provider sandboxes, which the in-process operator reaches on loopback.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self, cast

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cloudtriggers.crd import build_crd
from cloudtriggers.models import GROUP, PLURAL, VERSION
from cloudtriggers.runner import OperatorParts, build_operator
from cloudtriggers.sandbox.kopfthread import KopfThread
from cloudtriggers.sandbox.local import LocalWorld, wait_for

if TYPE_CHECKING:
    _World = LocalWorld  # what the mixin is put in front of, and whose helpers it uses
else:
    _World = object

KUBECONFIG = os.environ.get("KUBECONFIG", "")


def have_cluster() -> bool:
    return bool(KUBECONFIG) and os.path.exists(KUBECONFIG.split(os.pathsep)[0])


def _new_client_from_config(config_file: str) -> k8s.ApiClient:
    # kubernetes.config is not annotated: the client it builds, typed.
    new_client = cast(Callable[..., k8s.ApiClient], k8s_config.new_client_from_config)
    return new_client(config_file=config_file)


def _serialized(obj: object) -> Any:
    """A client model as the API server sends it (camelCase keys); the serializer is not annotated."""
    sanitize = cast(Callable[[object], Any], k8s.ApiClient().sanitize_for_serialization)
    return sanitize(obj)


class ClusterMixin(_World):
    """World on a real API server: same helpers, real admission, real garbage collection."""

    ns: str

    def start(self) -> Self:
        self.api = _new_client_from_config(KUBECONFIG)
        self.ns = f"ct-e2e-{uuid.uuid4().hex[:8]}"
        ext = k8s.ApiextensionsV1Api(self.api)
        crd = build_crd()
        try:
            ext.create_custom_resource_definition(k8s.V1CustomResourceDefinition.model_validate(crd))
        except k8s.ApiException as e:
            if e.status != 409:
                raise
            current = ext.read_custom_resource_definition(crd["metadata"]["name"])
            assert current.metadata is not None
            crd["metadata"]["resourceVersion"] = current.metadata.resource_version
            ext.replace_custom_resource_definition(
                crd["metadata"]["name"], k8s.V1CustomResourceDefinition.model_validate(crd)
            )
        wait_for(lambda: self._crd_established(ext), timeout=30, what="the CRD to be established")
        self.core.create_namespace(k8s.V1Namespace.model_validate({"metadata": {"name": self.ns}}))
        self.gitlab.start()
        self.ack.start()
        self.swr.start()
        return self

    def _crd_established(self, ext: k8s.ApiextensionsV1Api) -> bool:
        crd = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        assert crd.status is not None
        return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))

    def start_operator(self, prepare: Callable[[OperatorParts], None] | None = None) -> OperatorParts:
        async def login(**kwargs: Any) -> Any:
            return kopf.login_via_client(**kwargs)

        self.parts = parts = build_operator(self.settings, self.api, login=login, providers=self.providers)
        if prepare is not None:
            prepare(parts)
        self.operator = KopfThread(parts.registry, parts.settings, namespaces=[self.ns])
        self.operator.start()
        return parts

    def stop(self) -> None:
        try:
            # Delete the Triggers while the operator still runs, so their finalizers are released.
            for obj in self._triggers():
                self.delete_trigger(self.ns, obj["metadata"]["name"])
            if self.operator is not None:
                wait_for(lambda: not self._triggers(), timeout=60, what="the Triggers to be deleted")
            self.stop_operator()
        finally:
            try:
                self.core.delete_namespace(self.ns)
            except k8s.ApiException as e:
                if e.status != 404:  # a scenario may have deleted it already
                    raise
            self.swr.stop()
            self.ack.stop()
            self.gitlab.stop()

    def _triggers(self) -> list[dict[str, Any]]:
        listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)
        return cast(list[dict[str, Any]], cast(dict[str, Any], listed)["items"])

    def trigger(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            return cast(dict[str, Any], obj)
        except k8s.ApiException as e:
            if e.status == 404:
                return None
            raise

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            s = self.core.read_namespaced_secret(name, namespace)
        except k8s.ApiException as e:
            if e.status == 404:
                return None
            raise
        out: dict[str, Any] = _serialized(s)
        return out

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        return [_serialized(e) for e in items]
