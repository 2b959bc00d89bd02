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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from .logs import configure as configure_logging
from .models import GROUP

DEMO_PROVIDERS = ("gitlab", "ack", "swr")


def _example(provider: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """examples/<provider>.yaml from the source tree: its credentials Secret and its Trigger."""
    path = Path(__file__).resolve().parents[2] / "examples" / f"{provider}.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return next(d for d in docs if d["kind"] == "Secret"), next(d for d in docs if d["kind"] == "Trigger")


@dataclass
class _Prepared:
    trigger: dict[str, Any]
    credentials: dict[str, str]
    what: str  # where the provider object lives, for the story
    remaining: Callable[[], int]  # provider objects left once the Trigger is deleted


def _prepare(provider: str, world: Any, trigger: dict[str, Any]) -> _Prepared:
    """Create what the example needs in the sandbox, and point the example at the sandbox."""
    trigger = copy.deepcopy(trigger)
    spec = trigger["spec"][provider]
    if provider == "gitlab":
        from .sandbox.gitlab import MAINTAINER

        user = world.gitlab.add_user("cloudtriggers-bot")
        pid = world.gitlab.add_project(spec["project"], {user.username: MAINTAINER})
        spec["url"] = world.gitlab.url
        return _Prepared(
            trigger,
            {"token": user.token},
            f"GitLab project {spec['project']} (id {pid})",
            lambda: len(world.gitlab.triggers(pid)),
        )
    if provider == "ack":
        account = world.ack.add_account("demo")
        world.ack.add_cluster(
            "demo", spec["clusterId"], region=spec["regionId"], applications=(spec["projectId"],)
        )
        spec["endpoint"] = world.ack.url
        return _Prepared(
            trigger,
            {"accessKeyId": account.access_key_id, "accessKeySecret": account.access_key_secret},
            f"ACK cluster {spec['clusterId']}, application {spec['projectId']}",
            lambda: len(world.ack.triggers(spec["clusterId"])),
        )
    if provider == "swr":
        swr_account = world.swr.add_account("demo")
        world.swr.add_repository(spec["organization"], spec["repository"])
        spec["endpoint"] = world.swr.url
        org, repo = spec["organization"], spec["repository"]
        return _Prepared(
            trigger,
            {
                "accessKey": swr_account.access_key,
                "secretKey": swr_account.secret_key,
                "projectId": swr_account.project_id,
            },
            f"SWR repository {org}/{repo}",
            lambda: len(world.swr.triggers(org, repo)),
        )
    raise ValueError(f"no demo for provider {provider}")


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


def _gone(world: Any, ns: str, name: str) -> bool:
    return world.trigger(ns, name) is None


def _demo(timeout: float, say: Callable[[str], None]) -> int:
    from .sandbox.local import LocalWorld, condition, wait_for

    with LocalWorld() as world:
        say(f"emulated Kubernetes API at {world.kube.url}; CRD triggers.{GROUP} installed")
        say(f"sandboxes: GitLab {world.gitlab.url}, Alibaba ACK {world.ack.url}, Huawei SWR {world.swr.url}")
        world.start_operator()
        say("operator running (the real one: kopf handlers, reconciler, provider clients)")

        applied: list[tuple[str, str, str, _Prepared]] = []
        for provider in DEMO_PROVIDERS:
            secret_doc, trigger_doc = _example(provider)
            prepared = _prepare(provider, world, trigger_doc)
            ns, name = trigger_doc["metadata"]["namespace"], trigger_doc["metadata"]["name"]
            world.apply_secret(ns, secret_doc["metadata"]["name"], prepared.credentials)
            world.create_trigger(prepared.trigger)
            say(f"applied examples/{provider}.yaml: Trigger {ns}/{name} for {prepared.what} (-> sandbox)")
            applied.append((provider, ns, name, prepared))

        for provider, ns, name, _ in applied:
            seen: set[tuple[str, str]] = set()

            def progress(ns: str = ns, name: str = name, seen: set[tuple[str, str]] = seen) -> Any:
                obj = world.trigger(ns, name)
                ready = condition(obj)
                key = (ready.get("status", ""), ready.get("reason", ""))
                if ready and key not in seen:
                    seen.add(key)
                    say(f"  {ns}/{name}: Ready={key[0]} reason={key[1]} {ready.get('message', '')}")
                return obj if ready.get("status") == "True" else None

            obj = wait_for(progress, timeout=timeout, what=f"Trigger {ns}/{name} Ready")
            status = obj["status"]
            say(f"{provider}: Ready, external id {status['externalId']}")
            if status.get("secretName"):
                secret = world.secret(ns, status["secretName"]) or {}
                keys = ", ".join(sorted(secret.get("data") or {}))
                say(f"{provider}: output Secret {ns}/{status['secretName']} holds keys: {keys}")
                say(
                    f"{provider}: status.tokenSha256 = {status['tokenSha256']} (a hash prefix, not the token)"
                )
            for event in world.events(ns, name):
                say(f"  event {event['type']} {event['reason']}: {event['message']}")

        for provider, ns, name, prepared in applied:
            world.delete_trigger(ns, name)
            wait_for(partial(_gone, world, ns, name), timeout=timeout, what=f"{ns}/{name} to be deleted")
            left = prepared.remaining()
            say(f"{provider}: deleted Trigger {ns}/{name}; provider triggers left: {left}")
            if left:
                say(f"FAILED: the {provider} trigger was not deleted")
                return 1
    say("demo finished: create -> Ready -> delete for every provider, all against the sandboxes")
    return 0
