"""Crash safety with a real process: SIGKILL `cloudtriggers run` right after one of its writes, restart it.

The kill comes from the server side, at the exact moment a write has been applied and before it is
answered: a provider create/update/delete (sandbox `after_request`) or a Kubernetes write of the
operator (kopf's finalizer and progress patches, status, Secrets; `after_write` of the emulated API).
So "the provider acted, the operator never heard back" is hit for real. A fresh process then has to
reach the invariant. The kill point is drawn at random per round (seed printed); the default number
of rounds is small (CLOUDTRIGGERS_FAULT_ROUNDS per scenario and provider; 1 in CI).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudtriggers.sandbox.local import LocalWorld, wait_for
from faults.faultkit import (
    KITS,
    NS,
    TALLY,
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

TEST_AGENT = "cloudtriggers-fault-test"


class KillSwitch:
    """Counts the operator's writes (provider and Kubernetes) and SIGKILLs it right after the n-th."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.at: int | None = None
        self.writes: list[str] = []
        self.killed = threading.Event()
        self._lock = threading.Lock()

    def arm(self, at: int | None) -> None:
        with self._lock:
            self.at, self.writes = at, []
            self.killed.clear()

    def hit(self, what: str) -> None:
        with self._lock:
            if self.at is None or self.proc is None or self.killed.is_set():
                return
            self.writes.append(what)
            if len(self.writes) == self.at:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(10)
                self.killed.set()

    def install(self, w: LocalWorld) -> None:
        def provider(method: str, path: str, status: int) -> None:
            if method != "GET" and status < 300:
                self.hit(f"{method} {path}")

        def kube(request: Any, _: Any) -> None:
            if request.headers.get("User-Agent") == TEST_AGENT:
                return
            if request.resource is not None and request.resource.plural == "events":
                return  # best-effort, not a step of the protocol
            self.hit(f"kube {request.method} {request.url.path}")

        w.gitlab.after_request = provider
        w.ack.after_request = provider
        w.swr.after_request = provider
        w.kube.emulator.after_write = kube


class Harness:
    def __init__(self, kit: ProviderKit, tmp: Path) -> None:
        self.kit = kit
        self.tmp = tmp
        self.world = new_world(kit)
        assert self.world.api is not None
        self.world.api.user_agent = TEST_AGENT  # the test's own writes never count as the operator's
        self.kubeconfig = tmp / "kubeconfig"
        self.world.kube.write_kubeconfig(self.kubeconfig)
        self.switch = KillSwitch()
        self.switch.install(self.world)
        self.logs: list[Path] = []
        self.count = 0
        self.start()

    def start(self) -> None:
        log = self.tmp / f"operator-{len(self.logs)}.log"
        self.logs.append(log)
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "CLOUDTRIGGERS_RESYNC_PERIOD": "600",
            "CLOUDTRIGGERS_CREDENTIALS_POLL": "0.5",
            "CLOUDTRIGGERS_TRANSIENT_BACKOFF": "[0.2, 2.0]",
            "CLOUDTRIGGERS_ALLOWED_ENDPOINTS": "http://127.0.0.1",  # the sandboxes
        }
        self.switch.proc = subprocess.Popen(
            [sys.executable, "-m", "cloudtriggers.cli", "run", "--http-port", "0"],
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def tail(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.logs[-2:])

    def round(self, scenario: str, kill_at: int) -> None:
        w, kit = self.world, self.kit
        self.count += 1
        name = f"{scenario}-{self.count}"
        where = f"{kit.name} {scenario} kill after operator write {kill_at}"
        gone = scenario == "delete"
        if scenario != "create":
            w.create_trigger(trigger_obj(w, kit, name))
            wait_goal(w, name, gone=False, timeout=30)
        before = kit.calls(w)
        token = secret_token(w, name)
        self.switch.arm(kill_at)
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
        wait_for(
            lambda: self.switch.killed.is_set() or goal(w, name, gone), timeout=30, what=f"{where}: kill"
        )
        killed_at = list(self.switch.writes)
        print(f"{where}: {'killed' if self.switch.killed.is_set() else 'finished'} after {killed_at}")
        self.switch.arm(None)
        if self.switch.killed.is_set() or (self.switch.proc and self.switch.proc.poll() is not None):
            self.start()
        try:
            wait_goal(w, name, gone, timeout=30)
            wait_invariant(w, kit, 30, where)
            if scenario == "rotate":  # one new token, in the Secret; the old one gone (the invariant)
                assert secret_token(w, name) not in (None, token), f"{where}: the token did not change"
        except Exception as e:
            e.add_note(f"{where}; writes up to the kill: {killed_at}\n{self.tail()}")
            raise
        TALLY.add(f"crash-{scenario} (SIGKILL)", kit.name, kit.calls(w) - before)
        if not gone:
            w.delete_trigger(NS, name)
            wait_goal(w, name, gone=True, timeout=30)
            wait_invariant(w, kit, 30, f"{where}, cleanup")

    def close(self) -> None:
        proc = self.switch.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.world.stop()


@pytest.fixture(params=sorted(KITS))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(KITS[request.param], tmp_path)
    try:
        yield h
    finally:
        h.close()


# Operator writes per scenario (provider and Kubernetes, Events excluded), as measured; a kill point
# beyond a scenario's last write just lets it finish (and the round is still checked).
MAX_WRITES = {"create": 6, "update": 3, "replace": 8, "delete": 2, "rotate": 8}
MAX_WRITES_ACK = {**MAX_WRITES, "update": 8}  # ACK has no update call: a change is a replacement


def test_sigkill_after_a_write_then_restart(harness: Harness) -> None:
    """Random kill points; CLOUDTRIGGERS_FAULT_SIGKILL_SWEEP=1 kills after every write in turn instead."""
    rng = random.Random(seed())
    limits = MAX_WRITES_ACK if harness.kit.name == "ack" else MAX_WRITES
    if os.environ.get("CLOUDTRIGGERS_FAULT_SIGKILL_SWEEP"):
        for scenario in scenarios(harness.kit):
            for kill_at in range(1, limits[scenario] + 1):
                harness.round(scenario, kill_at)
        return
    for r in range(rounds(1)):
        for scenario in scenarios(harness.kit):
            kill_at = rng.randint(1, limits[scenario])
            try:
                harness.round(scenario, kill_at)
            except Exception as e:
                e.add_note(f"round {r}")
                raise
