"""The shape floor: kopf with cloudtriggers' registrations and its Kubernetes calls, nothing else.

The same kopf settings and registrations as cloudtriggers (an event handler that starts a pass in a
worker thread, as its scheduler does), and per Trigger the same Kubernetes calls a create makes (read
the credentials Secret, add the finalizer with the create intent in one write, create the output
Secret, write the final status, post an Event) through the same client; but no provider call and no reconcile
logic. cloudtriggers / shape is what the reconciler and the provider client cost;
shape / floor is what kopf and the Kubernetes calls of the design cost.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes import client, config

from cloudtriggers.handlers import configure
from cloudtriggers.kube import KubeClient, now_rfc3339
from cloudtriggers.models import GROUP, PLURAL, VERSION
from cloudtriggers.reconcile.passes import INTENT_ANNOTATION
from cloudtriggers.settings import Settings

WORKERS = int(os.environ.get("CLOUDTRIGGERS_WORKERS", "32"))
config.load_kube_config()  # type: ignore[no-untyped-call]
kube = KubeClient(client.ApiClient(client.Configuration.get_default_copy()), pool=WORKERS + 4)
pool = ThreadPoolExecutor(WORKERS)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    configure(settings, Settings(workers=WORKERS))


@kopf.on.login()
def login(**kwargs: Any) -> Any:
    return kopf.login_via_client(**kwargs)


STARTED: set[str] = set()


def create_pass(obj: dict[str, Any]) -> None:
    try:
        _create_pass(obj)
    except Exception:
        logging.getLogger("shape").exception("create pass failed")


def _create_pass(obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    ns, name = meta["namespace"], meta["name"]
    kube.read_credentials(ns, obj["spec"]["credentialsSecretRef"]["name"])
    intent = json.dumps({"startedAt": now_rfc3339(), "provider": "gitlab"})
    obj = kube.set_trigger_finalizer(obj, True, {INTENT_ANNOTATION: intent}) or obj
    kube.write_output_secret(obj, f"{name}-trigger", {"token": "t" * 20})
    ready = {"type": "Ready", "status": "True", "reason": "Available", "message": ""}
    kube.patch_trigger_status(ns, name, {"externalId": "1", "conditions": [ready]})
    kube.emit_event(obj, "Normal", "Created", "created trigger 1")


@kopf.on.event(GROUP, VERSION, PLURAL)
async def watch(event: Any, body: Any, uid: str, **_: Any) -> None:
    # As cloudtriggers' event handler feeding its scheduler: a new Trigger's first pass, in a worker;
    # a deleted one loses the finalizer (the finalizer path, without its provider call).
    if event.get("type") == "DELETED":
        return
    if body.get("metadata", {}).get("deletionTimestamp"):
        if "cloudtriggers.io/finalizer" in (body["metadata"].get("finalizers") or []):
            snapshot = copy.deepcopy(dict(body))
            asyncio.get_running_loop().run_in_executor(pool, kube.set_trigger_finalizer, snapshot, False)
        return
    if uid in STARTED or (body.get("status") or {}).get("externalId"):
        return
    STARTED.add(uid)
    asyncio.get_running_loop().run_in_executor(pool, create_pass, copy.deepcopy(dict(body)))
