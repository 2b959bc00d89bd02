"""The integration scenarios against a real cluster: the one KUBECONFIG names (kind, k3d, any).

The operator runs in-process (out-of-cluster), watching one fresh namespace; GitLab is the local
sandbox, which the in-process operator reaches on loopback. Skipped cleanly without KUBECONFIG.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

KUBECONFIG = os.environ.get("KUBECONFIG", "")
if not KUBECONFIG or not os.path.exists(KUBECONFIG.split(os.pathsep)[0]):
    pytest.skip("no KUBECONFIG: the e2e tests need a real cluster", allow_module_level=True)

import kopf  # noqa: E402
from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402

from cloudtriggers.crd import build_crd  # noqa: E402
from cloudtriggers.models import GROUP, PLURAL, VERSION  # noqa: E402
from cloudtriggers.runner import build_operator  # noqa: E402
from cloudtriggers.sandbox.kopfthread import KopfThread  # noqa: E402
from cloudtriggers.sandbox.local import wait_for  # noqa: E402
from cloudtriggers.settings import Settings  # noqa: E402
from integration.test_gitlab_operator import (  # noqa: E402
    World,
    assert_no_secret_in_logs,
    setup_world,
    test_create_becomes_ready_with_id_and_secret,
    test_delete_removes_provider_trigger_and_finalizer,
    test_deleted_at_provider_is_recreated_with_new_secret_and_event,
    test_description_change_is_one_put_same_id,
    test_invalid_spec_is_invalidspec_with_zero_provider_calls,
    test_lost_create_response_then_restart_gives_exactly_one_trigger,
    test_missing_credentials_then_ready_when_secret_appears,
    test_observe_only_makes_zero_write_calls,
    test_orphan_keeps_provider_trigger,
    test_reconcile_requested_at_annotation_forces_a_pass,
    test_restart_of_ready_triggers_makes_no_provider_call,
)

__all__ = [
    "test_create_becomes_ready_with_id_and_secret",
    "test_delete_removes_provider_trigger_and_finalizer",
    "test_deleted_at_provider_is_recreated_with_new_secret_and_event",
    "test_description_change_is_one_put_same_id",
    "test_invalid_spec_is_invalidspec_with_zero_provider_calls",
    "test_lost_create_response_then_restart_gives_exactly_one_trigger",
    "test_missing_credentials_then_ready_when_secret_appears",
    "test_observe_only_makes_zero_write_calls",
    "test_orphan_keeps_provider_trigger",
    "test_reconcile_requested_at_annotation_forces_a_pass",
    "test_restart_of_ready_triggers_makes_no_provider_call",
]


class ClusterWorld(World):
    """World on a real API server: same helpers, real admission, real garbage collection."""

    def start(self) -> ClusterWorld:
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
        return self

    def _crd_established(self, ext: k8s.ApiextensionsV1Api) -> bool:
        crd = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        return any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))

    def start_operator(self) -> Any:
        async def login(**kwargs: Any) -> Any:
            return kopf.login_via_client(**kwargs)

        self.parts = build_operator(self.settings, self.api, login=login)
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
            self.core.delete_namespace(self.ns)
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


@pytest.fixture
def world(caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    caplog.set_level(logging.DEBUG)
    w = ClusterWorld(Settings(credentials_poll=0.5))
    w.start()
    try:
        yield setup_world(w)
        w.gitlab_tokens = w.gitlab.triggers(w.pid)
    finally:
        w.stop()
    # caplog.records holds only the teardown phase: the test's own lines are in the "call" phase.
    assert_no_secret_in_logs(w, [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records])
