"""Crash safety, in-process: kill the operator before each of its writes, restart it, check the invariant.

For every provider and each of create, update, replacement and delete, the sweep crashes the operator
just before its 1st write, then (in a fresh round) before its 2nd, and so on until the scenario
finishes without reaching the crash point: every window between two writes is hit once, including
"the provider acted, status not yet written". Then randomized rounds crash the restarted operator
again during its recovery (CLOUDTRIGGERS_FAULT_ROUNDS, seed printed).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from cloudtriggers.sandbox.kube import reject_write
from cloudtriggers.sandbox.local import LocalWorld, wait_for
from faults.faultkit import (
    KITS,
    NS,
    TALLY,
    CrashPlan,
    ProviderKit,
    goal,
    new_world,
    rotate_patch,
    rounds,
    scenarios,
    secret_token,
    seed,
    spec_patch,
    trigger_obj,
    wait_goal,
    wait_invariant,
)


class Harness:
    def __init__(self, kit: ProviderKit) -> None:
        self.kit = kit
        self.world: LocalWorld = new_world(kit)
        self.plan = CrashPlan(self._die)
        self.world.start_operator(prepare=self.plan.install)
        self.count = 0

    def _die(self) -> None:
        # Nothing more from the dead instance reaches the API, kopf's own writes included.
        self.world.kube.emulator.before_write = lambda _: reject_write()

    def restart(self, crash_at: int | None) -> None:
        self.world.stop_operator()
        self.world.kube.emulator.before_write = None
        self.plan = CrashPlan(self._die)
        self.plan.arm(crash_at)
        self.world.start_operator(prepare=self.plan.install)

    def round(self, scenario: str, crashes: list[int]) -> bool:
        """One round; False when the first crash point lies beyond the scenario's last write."""
        w, kit = self.world, self.kit
        self.count += 1
        name = f"{scenario}-{self.count}"
        where = f"{kit.name} {scenario} crashes={crashes}"
        if scenario != "create":
            w.create_trigger(trigger_obj(w, kit, name))
            wait_goal(w, name, gone=False)
        before = kit.calls(w)
        token = secret_token(w, name)
        self.plan.arm(crashes[0])
        gone = scenario == "delete"
        if scenario == "create":
            w.create_trigger(trigger_obj(w, kit, name))
        elif scenario == "update":
            w.patch_trigger(NS, name, spec_patch(kit, kit.update))
        elif scenario == "replace":
            w.patch_trigger(NS, name, spec_patch(kit, kit.replace))
        elif scenario == "rotate":
            w.patch_trigger(NS, name, rotate_patch(name))
        else:
            w.delete_trigger(NS, name)
        fired = False
        for i in range(len(crashes)):
            wait_for(
                lambda: self.plan.dead.is_set() or goal(w, name, gone),
                timeout=20,
                what=f"{where}: crash or done",
            )
            if not self.plan.dead.is_set():
                break
            fired = True
            self.restart(crashes[i + 1] if i + 1 < len(crashes) else None)
        self.plan.arm(None)
        wait_goal(w, name, gone)
        wait_invariant(w, kit, 20, where)
        if scenario == "rotate":  # one new token, in the Secret; the old one gone (the invariant)
            assert secret_token(w, name) not in (None, token), f"{where}: the token did not change"
        TALLY.add(f"crash-{scenario} (in-process)", kit.name, kit.calls(w) - before)
        if not gone:
            w.delete_trigger(NS, name)
            wait_goal(w, name, gone=True)
            wait_invariant(w, kit, 20, f"{where}, cleanup")
        return fired or len(crashes) > 1

    def close(self) -> None:
        self.world.stop()


@pytest.fixture(params=sorted(KITS))
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(KITS[request.param])
    try:
        yield h
    finally:
        h.close()


def test_crash_before_each_write_then_restart(harness: Harness) -> None:
    steps: dict[str, int] = {}
    for scenario in scenarios(harness.kit):
        n = 1
        while harness.round(scenario, [n]):
            n += 1
            assert n < 20, f"{harness.kit.name} {scenario}: no end to the writes"
        steps[scenario] = n - 1
    print(f"{harness.kit.name}: writes per scenario {steps}")
    # Each scenario writes at least once; the sweep above crashed before every one of them.
    assert all(v >= 1 for v in steps.values()), steps
    harness.steps = steps  # type: ignore[attr-defined]


def test_randomized_crashes_during_recovery(harness: Harness) -> None:
    rng = random.Random(seed())
    for r in range(rounds(2)):
        scenario = rng.choice(scenarios(harness.kit))
        crashes = [rng.randint(1, 5) for _ in range(rng.randint(1, 3))]
        try:
            harness.round(scenario, crashes)
        except Exception as e:
            e.add_note(f"round {r}: {harness.kit.name} {scenario} crashes={crashes}")
            raise
