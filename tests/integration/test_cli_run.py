"""`cloudtriggers run` as users start it: a subprocess reading KUBECONFIG, here the emulated API's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudtriggers.sandbox.gitlab import MAINTAINER
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for


@pytest.fixture
def world() -> Iterator[LocalWorld]:
    with LocalWorld() as w:
        yield w


def _run(kubeconfig: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "CLOUDTRIGGERS_RESYNC_PERIOD": "600"}
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "cloudtriggers.cli", "run", "--log-level", "debug", "--http-port", "0"),
            *("--allowed-endpoint", "http://127.0.0.1"),  # the sandboxes
        ],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def test_run_reconciles_and_survives_sigkill(world: LocalWorld, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    world.kube.write_kubeconfig(kubeconfig)
    user = world.gitlab.add_user("bot")
    pid = world.gitlab.add_project("group/web", {"bot": MAINTAINER})
    world.apply_secret("apps", "gl", {"token": user.token})
    log = tmp_path / "operator.log"
    trigger_token = ""
    proc = _run(kubeconfig, log)
    try:
        world.create_trigger(
            {
                "apiVersion": "cloudtriggers.io/v1alpha1",
                "kind": "Trigger",
                "metadata": {"name": "web", "namespace": "apps"},
                "spec": {
                    "gitlab": {"url": world.gitlab.url, "project": "group/web"},
                    "credentialsSecretRef": {"name": "gl"},
                },
            }
        )
        wait_for(
            lambda: condition(world.trigger("apps", "web")).get("reason") == "Available",
            timeout=30,
            what="Ready from the subprocess operator",
        )
        trigger_token = world.gitlab.triggers(pid)[0]["token"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # A new process picks up where the killed one left: no second trigger, delete still works.
        proc = _run(kubeconfig, tmp_path / "operator2.log")
        world.delete_trigger("apps", "web")
        wait_for(lambda: world.trigger("apps", "web") is None, timeout=30, what="deletion by the new process")
        assert world.gitlab.triggers(pid) == []
        assert len(world.gitlab.calls("POST", "/triggers")) == 1
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    text = log.read_text(errors="replace") + (tmp_path / "operator2.log").read_text(errors="replace")
    assert "Ready" in text or "cloudtriggers" in text  # the log was captured at debug level
    assert user.token not in text
    assert trigger_token not in text
