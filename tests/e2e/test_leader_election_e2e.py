"""Leader election on a real cluster: two `cloudtriggers run --leader-election` replicas against the
API server KUBECONFIG names, their Lease in a fresh namespace; the scenario of
tests/integration/test_leader_election.py, so the Lease's writes meet a real server's decoding (its
MicroTimes) and its resourceVersion checks. Skipped cleanly without KUBECONFIG.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.cluster import KUBECONFIG, ClusterMixin, have_cluster

pytestmark = pytest.mark.e2e

if not have_cluster():
    pytest.skip("no KUBECONFIG: the e2e tests need a real cluster", allow_module_level=True)


from cloudtriggers.settings import Settings  # noqa: E402
from integration.test_gitlab_operator import World  # noqa: E402
from integration.test_leader_election import prepared, standby_takes_over_when_the_leader_dies  # noqa: E402


class ClusterWorld(ClusterMixin, World):
    pass


@pytest.fixture
def world() -> Iterator[World]:
    with prepared(ClusterWorld(Settings())) as w:
        yield w


def test_standby_takes_over_when_the_leader_dies(world: World, tmp_path: Path) -> None:
    standby_takes_over_when_the_leader_dies(world, Path(KUBECONFIG.split(os.pathsep)[0]), tmp_path)
