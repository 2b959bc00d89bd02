"""The shape floor: kopf with cloudtriggers' registrations and its Kubernetes calls, nothing else.

The same kopf settings and handlers as cloudtriggers (an event handler, a daemon per Trigger, a
delete handler for objects being deleted), and per Trigger the same Kubernetes calls a create
makes (read the credentials Secret, write the create intent, create the output Secret, write the
final status, post an Event) through the same client, in worker threads; but no provider call and
no reconcile logic. cloudtriggers / shape is what the reconciler and the provider client cost;
shape / floor is what kopf and the Kubernetes calls of the design cost.
"""

from __future__ import annotations

import asyncio
import copy
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes import client, config

from cloudtriggers.handlers import configure
from cloudtriggers.kube import KubeClient, now_rfc3339
from cloudtriggers.models import GROUP, PLURAL, VERSION
from cloudtriggers.settings import Settings

WORKERS = int(os.environ.get("CLOUDTRIGGERS_WORKERS", "32"))
config.load_kube_config()  # type: ignore[no-untyped-call]
kube = KubeClient(client.ApiClient(client.Configuration.get_default_copy()), pool=WORKERS + 4)
pool = ThreadPoolExecutor(WORKERS)
seen: dict[str, Any] = {}


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    configure(settings, Settings(workers=WORKERS))


@kopf.on.login()
def login(**kwargs: Any) -> Any:
    return kopf.login_via_client(**kwargs)


@kopf.on.event(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]
async def watch(body: Any, uid: str, **_: Any) -> None:
    seen[uid] = body.get("metadata", {}).get("generation")


def create_pass(obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    ns, name = meta["namespace"], meta["name"]
    kube.read_secret(ns, obj["spec"]["credentialsSecretRef"]["name"])
    kube.patch_trigger_status(ns, name, {"pendingCreate": {"startedAt": now_rfc3339(), "provider": "gitlab"}})
    kube.write_output_secret(obj, f"{name}-trigger", {"token": "t" * 20})
    ready = {"type": "Ready", "status": "True", "reason": "Available", "message": ""}
    kube.patch_trigger_status(ns, name, {"pendingCreate": None, "externalId": "1", "conditions": [ready]})
    kube.emit_event(obj, "Normal", "Created", "created trigger 1")


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5.0)  # type: ignore[arg-type]
async def loop(stopped: kopf.DaemonStopped, body: Any, **_: Any) -> None:
    if not (body.get("status") or {}).get("externalId"):
        snapshot = copy.deepcopy(dict(body))
        await asyncio.get_running_loop().run_in_executor(pool, create_pass, snapshot)
    await stopped.wait()


@kopf.on.delete(GROUP, VERSION, PLURAL, field="metadata.deletionTimestamp", value=kopf.PRESENT)
async def delete(**_: Any) -> None:
    pass
