"""A World on the real cluster KUBECONFIG names: same helpers as the integration tests' LocalWorld.

Mixed in front of a scenario module's World class, it replaces the emulated API with the cluster
(a fresh namespace, the CRD applied, real admission and garbage collection) and keeps the local
provider sandboxes, which the in-process operator reaches on loopback.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from cloudtriggers.crd import build_crd
from cloudtriggers.models import GROUP, PLURAL, VERSION
from cloudtriggers.runner import build_operator
from cloudtriggers.sandbox.kopfthread import KopfThread
from cloudtriggers.sandbox.local import wait_for

KUBECONFIG = os.environ.get("KUBECONFIG", "")


def have_cluster() -> bool:
    return bool(KUBECONFIG) and os.path.exists(KUBECONFIG.split(os.pathsep)[0])


class ClusterMixin:
    """World on a real API server: same helpers, real admission, real garbage collection."""

    def start(self) -> Any:
        self.api = k8s_config.new_client_from_config(config_file=KUBECONFIG)
        self.ns = f"ct-e2e-{uuid.uuid4().hex[:8]}"
        ext = k8s.ApiextensionsV1Api(self.api)
        crd = build_crd()
        try:
            ext.create_custom_resource_definition(crd)
        except k8s.ApiException as e:
            if e.status != 409:
                raise
            current = ext.read_custom_resource_definition(crd["metadata"]["name"])
            crd["metadata"]["resourceVersion"] = current.metadata.resource_version
            ext.replace_custom_resource_definition(crd["metadata"]["name"], crd)
        wait_for(lambda: self._crd_established(ext), timeout=30, what="the CRD to be established")
        self.core.create_namespace({"metadata": {"name": self.ns}})
        self.gitlab.start()
        self.ack.start()
        self.swr.start()
        return self

    def _crd_established(self, ext: k8s.ApiextensionsV1Api) -> bool:
        crd = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))

    def start_operator(self) -> Any:
        async def login(**kwargs: Any) -> Any:
            return kopf.login_via_client(**kwargs)

        self.parts = build_operator(self.settings, self.api, login=login, providers=self.providers)
        self.operator = KopfThread(self.parts.registry, self.parts.settings, namespaces=[self.ns])
        self.operator.start()
        return self.parts

    def stop(self) -> None:
        try:
            # Delete the Triggers while the operator still runs, so their finalizers are released.
            for obj in self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)["items"]:
                self.delete_trigger(self.ns, obj["metadata"]["name"])
            if self.operator is not None:
                wait_for(
                    lambda: (
                        not self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)[
                            "items"
                        ]
                    ),
                    timeout=60,
                    what="the Triggers to be deleted",
                )
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

    def trigger(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
            return obj
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
        out: dict[str, Any] = k8s.ApiClient().sanitize_for_serialization(s)
        return out

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        return [k8s.ApiClient().sanitize_for_serialization(e) for e in items]
