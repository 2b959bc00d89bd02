"""`cloudtriggers demo`: the whole flow with no cluster and no GitLab.

An in-process Kubernetes API emulator and the GitLab sandbox stand in for the real things; the
operator is the real one. It applies examples/gitlab.yaml (pointed at the sandbox), waits for
Ready, shows the result, deletes the Trigger and shows the provider trigger is gone.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .logs import configure as configure_logging
from .models import GROUP, PLURAL, VERSION


def _example() -> list[dict[str, Any]]:
    """examples/gitlab.yaml from the source tree, or the copy packaged with the module."""
    repo_copy = Path(__file__).resolve().parents[2] / "examples" / "gitlab.yaml"
    text = (
        repo_copy.read_text()
        if repo_copy.exists()
        else (resources.files("cloudtriggers").joinpath("examples/gitlab.yaml").read_text())
    )
    return [d for d in yaml.safe_load_all(text) if d]


def run_demo(timeout: float = 25.0, out: Any = None) -> int:
    try:
        from .sandbox import local  # noqa: F401  (needs kmock, from the demo extra)
    except ImportError as e:
        print(f"the demo needs the demo extra: pip install 'cloudtriggers[demo]' ({e})", file=sys.stderr)
        return 2
    out = out or sys.stdout
    start = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - start:5.1f}s] {text}", file=out, flush=True)

    # The operator's own warnings go to stderr, prefixed; the story goes to stdout. Logging is
    # restored afterwards: the demo also runs inside the test suite.
    root, kopf_log = logging.getLogger(), logging.getLogger("kopf")
    saved = (list(root.handlers), root.level, kopf_log.level)
    handler = configure_logging("text", "warning")
    handler.setFormatter(logging.Formatter("  [operator] %(levelname)s %(message)s"))
    kopf_log.setLevel(logging.ERROR)
    try:
        return _demo(timeout, say)
    finally:
        root.removeHandler(handler)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        kopf_log.setLevel(saved[2])


def _demo(timeout: float, say: Callable[[str], None]) -> int:
    from .sandbox.gitlab import MAINTAINER
    from .sandbox.local import LocalWorld, condition, wait_for

    docs = _example()
    secret_doc = next(d for d in docs if d["kind"] == "Secret")
    trigger_doc = next(d for d in docs if d["kind"] == "Trigger")
    ns, name = trigger_doc["metadata"]["namespace"], trigger_doc["metadata"]["name"]
    project = trigger_doc["spec"]["gitlab"]["project"]

    with LocalWorld() as world:
        say(f"emulated Kubernetes API at {world.kube.url}; CRD triggers.{GROUP} installed")
        user = world.gitlab.add_user("cloudtriggers-bot")
        pid = world.gitlab.add_project(project, {user.username: MAINTAINER})
        say(f"GitLab sandbox at {world.gitlab.url}: project {project} (id {pid}), a Maintainer token")
        world.start_operator()
        say("operator running (the real one: kopf handlers, reconciler, GitLab provider)")

        # examples/gitlab.yaml, pointed at the sandbox instead of gitlab.com.
        trigger = copy.deepcopy(trigger_doc)
        trigger["spec"]["gitlab"]["url"] = world.gitlab.url
        world.apply_secret(ns, secret_doc["metadata"]["name"], {"token": user.token})
        world.create_trigger(trigger)
        say(f"applied examples/gitlab.yaml: Trigger {ns}/{name} (url -> sandbox) and its credentials Secret")

        seen: set[tuple[str, str]] = set()

        def progress() -> dict[str, Any] | None:
            obj = world.trigger(ns, name)
            ready = condition(obj)
            if ready:
                key = (ready.get("status", ""), ready.get("reason", ""))
                if key not in seen:
                    seen.add(key)
                    say(f"  Ready={key[0]} reason={key[1]} {ready.get('message', '')}")
            return obj if ready.get("status") == "True" else None

        obj: dict[str, Any] = wait_for(progress, timeout=timeout, what=f"Trigger {ns}/{name} Ready")
        status = obj["status"]
        secret_name = status["secretName"]
        secret = world.secret(ns, secret_name) or {}
        say(f"Ready: external id {status['externalId']} (GitLab trigger in project id {pid})")
        say(f"output Secret {ns}/{secret_name} holds keys: {', '.join(sorted(secret.get('data') or {}))}")
        say(
            f"status.tokenSha256 = {status['tokenSha256']} "
            "(a hash prefix; the token itself is only in the Secret)"
        )
        for event in world.events(ns, name):
            say(f"  event {event['type']} {event['reason']}: {event['message']}")

        world.delete_trigger(ns, name)
        say(f"deleted Trigger {ns}/{name}")
        wait_for(lambda: world.trigger(ns, name) is None, timeout=timeout, what="the Trigger to be gone")
        remaining = world.gitlab.triggers(pid)
        say(f"Trigger gone (finalizer released); GitLab triggers left in {project}: {len(remaining)}")
        if remaining:
            say("FAILED: the provider trigger was not deleted")
            return 1
        gone = world.kube.get(f"{GROUP}/{VERSION}/{PLURAL}", ns, name) is None
        if not gone:
            return 1
    say("demo finished: create -> Ready -> delete, all against the sandbox")
    return 0
