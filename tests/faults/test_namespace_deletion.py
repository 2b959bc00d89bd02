"""Namespace deletion in which the credentials Secret goes first (operator-practice.md §3.2).

The namespace controller deletes everything at once, so the credentials Secret may be gone before the
Triggers are finalized: their provider deletes can never authenticate. With the namespace terminating,
every Trigger must finish within the delete timeout (a setting, short here), orphaning its provider
trigger with a Warning Event, and leave no finalizer behind.
"""

from __future__ import annotations

import time

import pytest
from faultkit import KITS, NS, new_world, trigger_obj, wait_goal

from cloudtriggers.runner import OperatorParts
from cloudtriggers.settings import Settings

DELETE_TIMEOUT = 2.0


@pytest.mark.parametrize("provider", sorted(KITS))
def test_credentials_gone_first_every_trigger_finishes_in_time(provider: str) -> None:
    kit = KITS[provider]
    settings = Settings(credentials_poll=0.5, delete_timeout=DELETE_TIMEOUT)
    w = new_world(kit, settings)
    try:
        # The emulated API cannot serve namespaces (kmock parses no /api/v1/namespaces path), so the
        # one call that asks whether a namespace is terminating answers from this set instead.
        terminating: set[str] = set()

        def prepare(parts: OperatorParts) -> None:
            parts.runtime.reconciler.kube.namespace_terminating = terminating.__contains__  # type: ignore[method-assign]

        w.start_operator(prepare=prepare)
        names = ["a", "b", "c"]
        for name in names:
            w.create_trigger(trigger_obj(w, kit, name))
        for name in names:
            wait_goal(w, name, gone=False)
        ids = sorted(i for i, _ in kit.objects(w))
        assert len(ids) == 3
        # The namespace controller's order at its worst: the credentials first, then everything else.
        w.core.delete_namespaced_secret("creds", NS)
        terminating.add(NS)
        start = time.monotonic()
        for name in names:
            w.delete_trigger(NS, name)
        for name in names:
            wait_goal(w, name, gone=True, timeout=DELETE_TIMEOUT + 10)
        took = time.monotonic() - start
        print(f"{provider}: 3 Triggers released {took:.1f} s after the namespace started terminating")
        # deletionTimestamp has whole seconds (up to 1 s early); the retry comes at the deadline, not
        # after the usual 15 s; and nothing is released before the timeout.
        assert DELETE_TIMEOUT - 1.1 < took < DELETE_TIMEOUT + 4
        for name in names:
            orphaned = [e for e in w.events(NS, name) if e.get("reason") == "Orphaned"]
            assert orphaned and orphaned[0]["type"] == "Warning", w.events(NS, name)
            assert "namespace is terminating" in orphaned[0]["message"]
        # Released, not deleted: the provider triggers are left in place, as the Events say.
        assert sorted(i for i, _ in kit.objects(w)) == ids
    finally:
        w.stop()
