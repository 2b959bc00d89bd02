"""The integration scenarios against a real cluster: the one KUBECONFIG names (kind, k3d, any).

The operator runs in-process (out-of-cluster), watching one fresh namespace; GitLab is the local
sandbox, which the in-process operator reaches on loopback. Skipped cleanly without KUBECONFIG.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from e2e.cluster import ClusterMixin, have_cluster

pytestmark = pytest.mark.e2e

if not have_cluster():
    pytest.skip("no KUBECONFIG: the e2e tests need a real cluster", allow_module_level=True)


from cloudtriggers.settings import Settings  # noqa: E402
from integration.test_gitlab_operator import (  # noqa: E402
    World,
    assert_no_secret_in_logs,
    setup_world,
    test_a_delete_with_a_propagation_policy_deletes_the_provider_trigger,
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
    test_rotate_requested_at_annotation_rotates_with_overlap,
)

__all__ = [
    "test_a_delete_with_a_propagation_policy_deletes_the_provider_trigger",
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
    "test_rotate_requested_at_annotation_rotates_with_overlap",
]


class ClusterWorld(ClusterMixin, World):
    pass


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
