"""The SWR integration scenarios against the real cluster KUBECONFIG names; skipped without one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.cluster import ClusterMixin, have_cluster

pytestmark = pytest.mark.e2e

if not have_cluster():
    pytest.skip("no KUBECONFIG: the e2e tests need a real cluster", allow_module_level=True)

from integration.test_swr_operator import (  # noqa: E402
    World,
    swr_world,
    test_adoption_after_a_409_on_create,
    test_bad_secret_key_is_credentials_invalid_with_at_most_three_attempts,
    test_condition_change_is_delete_then_create_same_name,
    test_create_becomes_ready_with_the_name_as_id_and_no_secret,
    test_delete_sends_delete_and_releases_the_trigger,
    test_enable_toggle_is_one_patch,
    test_pre_existing_different_trigger_is_conflict_without_writes,
    test_pre_existing_matching_trigger_is_adopted,
)

__all__ = [
    "test_adoption_after_a_409_on_create",
    "test_bad_secret_key_is_credentials_invalid_with_at_most_three_attempts",
    "test_condition_change_is_delete_then_create_same_name",
    "test_create_becomes_ready_with_the_name_as_id_and_no_secret",
    "test_delete_sends_delete_and_releases_the_trigger",
    "test_enable_toggle_is_one_patch",
    "test_pre_existing_different_trigger_is_conflict_without_writes",
    "test_pre_existing_matching_trigger_is_adopted",
]


class ClusterWorld(ClusterMixin, World):
    pass


@pytest.fixture
def world(caplog: pytest.LogCaptureFixture) -> Iterator[World]:
    with swr_world(ClusterWorld, caplog) as w:
        yield w
