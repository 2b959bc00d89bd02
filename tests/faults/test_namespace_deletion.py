"""Deleting a namespace deletes every provider trigger in it, and nothing is left behind.

The emulated API runs the namespace controller's deletion (sandbox/namespaces.py, copied from
kube-controller-manager's pkg/controller/namespace): every namespaced resource's objects are deleted,
resource by resource, in an order the operator does not choose, and a terminating namespace refuses
new content (Events included). The order is seeded: the tests pick seeds that delete the credentials
Secrets before the Triggers (the order that left provider triggers alive on a real cluster) and after,
then random ones for a mixed namespace. Each failure prints its seed.

Nothing here waits for the delete timeout: the credentials Secrets are held by the operator's
finalizer until the last Trigger using them is finalized, so every delete authenticates.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator

import pytest

from cloudtriggers.sandbox.kube import ClusterEmulator, KubeServer
from cloudtriggers.sandbox.local import LocalWorld, wait_for
from cloudtriggers.settings import Settings
from faults.faultkit import KITS, ProviderKit, rounds, seed
from nsdeletion import Outcome, delete_namespace, namespace_exists, populate

SECRETS, TRIGGERS = "v1/secrets", "cloudtriggers.io/v1alpha1/triggers"
REQUEUE = 0.25  # the controller looks again after 8 s x 0.25 while content remains
PER_PROVIDER = 6  # three Triggers share a Secret, three have their own


def seed_with(order: str, start: int) -> int:
    """The first seed from `start` whose first pass deletes the Secrets before the Triggers, or after."""
    probe = ClusterEmulator()
    KubeServer(probe)  # declares the resources (the Trigger CRD included) without serving
    for s in range(start, start + 1000):
        first = probe.deletion_order(s)
        secrets_first = first.index(SECRETS) < first.index(TRIGGERS)
        if secrets_first == (order == "credentials-first"):
            return s
    raise AssertionError(f"no seed from {start} gives {order}")


def world(namespace_seed: int | None) -> LocalWorld:
    emulator = ClusterEmulator(namespace_seed=namespace_seed, namespace_requeue=REQUEUE)
    return LocalWorld(Settings(credentials_poll=0.5, transient_backoff=(0.2, 2.0)), emulator=emulator).start()


@pytest.fixture(scope="module")
def base_seed() -> int:
    return seed()


def check(outcome: Outcome, w: LocalWorld, what: str) -> None:
    orders = w.kube.emulator.namespace_orders
    used = orders[0][1] if orders else None
    print(f"{what}: namespace gone in {outcome.seconds:.1f} s, seed {used}, {outcome.held} Secrets held")
    assert outcome.left == {}, f"{what} (seed {used}): provider triggers left alive: {outcome.left}"
    assert outcome.orphaned == 0, f"{what} (seed {used}): {outcome.orphaned} orphaned"
    assert outcome.held > 0  # the operator's finalizer kept the credentials while they were needed
    assert outcome.seconds < 30
    assert w.kube.emulator.controller_errors == []


@pytest.mark.parametrize("order", ["credentials-first", "triggers-first"])
@pytest.mark.parametrize("provider", sorted(KITS))
def test_namespace_deletion_deletes_every_provider_trigger(
    provider: str, order: str, base_seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    kit = KITS[provider]
    ns_seed = seed_with(order, base_seed % 100_000)
    w = world(ns_seed)
    try:
        creds = {kit.name: kit.prepare(w)}
        w.start_operator()
        populate(w, [kit], creds, "preview", PER_PROVIDER)
        assert len(kit.objects(w)) == PER_PROVIDER
        caplog.clear()
        with caplog.at_level(logging.INFO):
            outcome = delete_namespace(w, [kit], "preview", timeout=60)
        check(outcome, w, f"{provider}, {order}")
        assert kit.objects(w) == []
        # A namespace deletion is routine: the API server refusing new content there (the Deleted
        # Events among it) is expected, not a warning per Trigger.
        noisy = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert noisy == []
    finally:
        w.stop()


@pytest.mark.parametrize("provider", sorted(KITS))
def test_namespace_deletion_under_random_orders(provider: str, base_seed: int) -> None:
    kit = KITS[provider]
    rng = random.Random(f"{base_seed}-{provider}")
    for _ in range(rounds(2)):
        ns_seed = rng.randrange(2**32)
        w = world(ns_seed)
        try:
            creds = {kit.name: kit.prepare(w)}
            w.start_operator()
            populate(w, [kit], creds, "preview", 4)
            check(delete_namespace(w, [kit], "preview", timeout=60), w, f"{provider}, seed {ns_seed}")
        finally:
            w.stop()


def test_a_mixed_namespace_under_random_orders(base_seed: int) -> None:
    rng = random.Random(base_seed)
    for _ in range(rounds(3)):
        ns_seed = rng.randrange(2**32)
        w = world(ns_seed)
        try:
            kits = [KITS[p] for p in sorted(KITS)]
            creds = {kit.name: kit.prepare(w) for kit in kits}
            w.start_operator()
            populate(w, kits, creds, "team", 4)
            check(delete_namespace(w, kits, "team", timeout=60), w, f"mixed, seed {ns_seed}")
        finally:
            w.stop()


@pytest.fixture
def stopped_midway(base_seed: int) -> Iterator[tuple[LocalWorld, ProviderKit]]:
    w = world(seed_with("credentials-first", base_seed % 100_000))
    try:
        yield w, KITS["gitlab"]
    finally:
        w.stop()


def test_an_operator_restart_in_the_middle_of_a_namespace_deletion(
    stopped_midway: tuple[LocalWorld, ProviderKit],
) -> None:
    w, kit = stopped_midway
    creds = {kit.name: kit.prepare(w)}
    w.start_operator()
    populate(w, [kit], creds, "preview", PER_PROVIDER)
    w.stop_operator()
    start = time.monotonic()
    w.core.delete_namespace("preview")

    # With no operator, the controller marks everything deleted; our finalizers keep it all.
    def all_deleting() -> bool:
        items = w.kube.list(SECRETS, "preview") + w.kube.list(TRIGGERS, "preview")
        return bool(items) and all(i["metadata"].get("deletionTimestamp") for i in items)

    wait_for(all_deleting, timeout=20, what="the namespace controller's first pass")
    assert len(kit.objects(w)) == PER_PROVIDER
    w.start_operator()  # a new process: nothing in memory, no last good credentials
    wait_for(lambda: not namespace_exists(w, "preview"), timeout=60, what="the namespace to go")
    print(f"restart midway: namespace gone {time.monotonic() - start:.1f} s after its DELETE")
    assert kit.objects(w) == []
