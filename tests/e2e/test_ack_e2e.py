"""The ACK integration scenarios against the real cluster KUBECONFIG names; skipped without one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.cluster import ClusterMixin, have_cluster

pytestmark = pytest.mark.e2e

if not have_cluster():
    pytest.skip("no KUBECONFIG: the e2e tests need a real cluster", allow_module_level=True)

from integration.test_ack_operator import (  # noqa: E402
    World,
    ack_world,
    test_create_becomes_ready_with_token_and_url_in_owned_secret,
    test_delete_calls_delete_trigger_and_collects_the_secret,
    test_deleted_at_provider_is_recreated_with_a_new_token_in_the_secret,
    test_lost_create_response_then_restart_gives_exactly_one_trigger,
    test_missing_credentials_then_ready_when_the_secret_appears,
    test_observe_only_makes_zero_write_calls,
    test_project_change_replaces_the_trigger_and_moves_the_secret,
    test_rotation_hands_the_hook_url_over_then_deletes_the_old_trigger,
    test_throttling_waits_as_long_as_x_acs_retry_after_says,
)

__all__ = [
    "test_create_becomes_ready_with_token_and_url_in_owned_secret",
    "test_delete_calls_delete_trigger_and_collects_the_secret",
    "test_deleted_at_provider_is_recreated_with_a_new_token_in_the_secret",
    "test_lost_create_response_then_restart_gives_exactly_one_trigger",
    "test_missing_credentials_then_ready_when_the_secret_appears",
    "test_observe_only_makes_zero_write_calls",
    "test_project_change_replaces_the_trigger_and_moves_the_secret",
    "test_rotation_hands_the_hook_url_over_then_deletes_the_old_trigger",
    "test_throttling_waits_as_long_as_x_acs_retry_after_says",
]


class ClusterWorld(ClusterMixin, World):
    pass


@pytest.fixture
def world(caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    with ack_world(ClusterWorld, caplog) as w:
        yield w
