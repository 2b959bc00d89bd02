"""Kubernetes API faults: writes refused with 503 or 409, watch streams that drop or go silent.

The emulated API refuses a share of the operator's writes (kopf's finalizer and progress patches, the
status patches, the output Secrets) and, all along, ends or silences the watch streams. The operator
must still create, change and delete every Trigger, with the invariant holding at the end, and no
event lost: a change made while a watch was silent is acted on once the stream resumes.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cloudtriggers.sandbox.kube import reject_write, throttle
from cloudtriggers.sandbox.local import LocalWorld, wait_for
from faults.faultkit import (
    KITS,
    NS,
    TALLY,
    ProviderKit,
    new_world,
    rounds,
    seed,
    spec_patch,
    trigger_obj,
    wait_goal,
)
from faults.faultkit import violations as invariant_violations

TEST_AGENT = "cloudtriggers-fault-test"
N = 3


class Chaos:
    def __init__(self, w: LocalWorld, rng: random.Random, rate: float) -> None:
        self.w, self.rng, self.rate = w, rng, rate
        self.refused: dict[int, int] = {}
        self.disturbed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watches, name="watch-chaos", daemon=True)

    def before_write(self, request: Any) -> None:  # runs in the emulator's loop, under its lock
        if request.headers.get("User-Agent") == TEST_AGENT:
            return
        # The first write of the operator is always refused, so that every run tests refusals (at
        # 20 % alone, a run of ~20 writes had none with 0.8 ** 20 = 1 % odds: seed 3008308328).
        if not self.refused or self.rng.random() < self.rate:
            # 409 only for the operator's own updates (status, Secret patches): kopf's merge patches
            # carry no resourceVersion, so a real API server never answers them 409, and kopf does not
            # retry an event whose patch failed with one (it waits for the next event). 503 for all.
            agent = str(request.headers.get("User-Agent", ""))
            updating = str(request.method).upper().endswith(("PATCH", "PUT"))
            ours = agent.startswith("cloudtriggers/")
            status = self.rng.choice((503, 409)) if updating and ours else 503
            self.refused[status] = self.refused.get(status, 0) + 1
            reject_write(status)

    def _watches(self) -> None:
        local = random.Random(self.rng.random())
        while True:
            if local.random() < 0.5:
                self.w.kube.disturb_watches(silence=True)
                self._stop.wait(local.uniform(0.05, 0.4))
            self.w.kube.disturb_watches()
            self.disturbed += 1
            if self._stop.wait(local.uniform(0.05, 0.4)):
                break

    def __enter__(self) -> Chaos:
        self.w.kube.emulator.before_write = self.before_write
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        self.w.kube.emulator.before_write = None


@pytest.fixture(params=sorted(KITS))
def world(request: pytest.FixtureRequest) -> Iterator[tuple[LocalWorld, ProviderKit]]:
    kit = KITS[request.param]
    w = new_world(kit)
    assert w.api is not None
    w.api.user_agent = TEST_AGENT
    try:
        w.start_operator()
        yield w, kit
    finally:
        w.stop()


def test_refused_writes_and_dropped_watches(world: tuple[LocalWorld, ProviderKit]) -> None:
    w, kit = world
    rng = random.Random(seed())

    def settle(names: list[str], gone: bool) -> None:
        for name in names:
            try:
                wait_goal(w, name, gone=gone, timeout=60)
            except TimeoutError as e:
                e.add_note(json.dumps(w.trigger(NS, name), indent=1))
                raise

    for r in range(rounds(1)):
        names = [f"r{r}-{i}" for i in range(N)]
        before = kit.calls(w)
        with Chaos(w, rng, rate=0.2) as chaos:
            for name in names:
                w.create_trigger(trigger_obj(w, kit, name))
            settle(names, gone=False)
            for name in names:
                w.patch_trigger(NS, name, spec_patch(kit, kit.update))
            settle(names, gone=False)
            for name in names:
                w.delete_trigger(NS, name)
            settle(names, gone=True)
        wait_for(
            lambda: not invariant_violations(w, kit),
            timeout=30,
            what=f"invariant: {invariant_violations(w, kit)}",
        )
        assert kit.objects(w) == []
        per_trigger = (kit.calls(w) - before) // N
        print(
            f"{kit.name}: refused writes {chaos.refused}, watches disturbed {chaos.disturbed} times, "
            f"{per_trigger} provider calls per Trigger"
        )
        assert sum(chaos.refused.values()) > 0 and chaos.disturbed > 0
        TALLY.add("kube API faults (20% writes refused, watches dropped)", kit.name, per_trigger)


def test_writes_turned_away_by_priority_and_fairness_are_retried_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A loaded API server's priority-and-fairness filter answers 429 with Retry-After (1 s) before
    handling a request. The operator waits as asked and sends it again, as client-go does: every
    Trigger is Ready with one provider trigger each, and no error is logged for it."""
    kit = KITS["gitlab"]
    w = new_world(kit)
    assert w.api is not None
    w.api.user_agent = TEST_AGENT
    turned_away: list[str] = []

    def before_write(request: Any) -> None:
        agent = str(request.headers.get("User-Agent", ""))
        # Every other write of the operator's own (finalizer, output Secret, status, Event) while
        # the first Triggers are made.
        if agent.startswith("cloudtriggers/") and len(turned_away) < 6 and w.kube.emulator._rv % 2:
            turned_away.append(f"{request.method} {request.url.path}")
            throttle(1)

    try:
        w.start_operator()
        w.kube.emulator.before_write = before_write
        names = [f"apf-{i}" for i in range(N)]
        with caplog.at_level(logging.WARNING):
            for name in names:
                w.create_trigger(trigger_obj(w, kit, name))
            for name in names:
                wait_goal(w, name, gone=False, timeout=60)
        assert turned_away, "no write was turned away"
        assert not invariant_violations(w, kit)
        assert len(kit.objects(w)) == N
        loud = [r.getMessage() for r in caplog.records if r.name.startswith("cloudtriggers")]
        assert loud == []
    finally:
        w.kube.emulator.before_write = None
        w.stop()
