"""The namespace-deletion scenario, shared by the fault suite (emulated API, many seeded orders) and
tests/e2e (a real cluster): Triggers of one or more providers, with shared and separate credentials
Secrets, in one namespace; the namespace is deleted; every provider trigger must be deleted, none
orphaned, and the namespace must go.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client as k8s

from cloudtriggers.metrics import ORPHANED
from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for


class ProviderKit(Protocol):
    """What the scenario needs of faultkit.ProviderKit (tests/faults is not importable from tests/e2e)."""

    name: str

    @property
    def block(self) -> Callable[[LocalWorld], dict[str, Any]]: ...
    @property
    def objects(self) -> Callable[[LocalWorld], list[tuple[str, str | None]]]: ...


@dataclass
class Outcome:
    seconds: float  # from the namespace's DELETE until it was gone
    left: dict[str, list[str]]  # provider -> ids still alive
    orphaned: float  # cloudtriggers_orphaned_total{reason!="policy"} during the deletion
    held: int  # credentials Secrets seen carrying our finalizer while the namespace terminated


def orphan_count() -> float:
    total = 0.0
    for metric in ORPHANED.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("reason") != "policy":
                total += sample.value
    return total


def namespace_exists(w: LocalWorld, namespace: str) -> bool:
    try:
        w.core.read_namespace(namespace)
    except k8s.ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def populate(
    w: LocalWorld,
    kits: Sequence[ProviderKit],
    creds: dict[str, dict[str, str]],
    namespace: str,
    per_provider: int,
) -> list[str]:
    """Per provider, `per_provider` Triggers: even ones share a Secret, odd ones have their own.
    Returns the Trigger names, once every one is Ready."""
    names: list[str] = []
    for kit in kits:
        w.apply_secret(namespace, f"{kit.name}-shared", creds[kit.name])
        for i in range(per_provider):
            name = f"{kit.name}-{i}"
            secret = f"{kit.name}-shared" if i % 2 == 0 else f"{kit.name}-own-{i}"
            if i % 2:
                w.apply_secret(namespace, secret, creds[kit.name])
            spec: dict[str, Any] = {kit.name: kit.block(w), "credentialsSecretRef": {"name": secret}}
            if kit.name == "swr":
                spec["swr"] = {**spec["swr"], "name": f"{namespace}-{name}"[:60]}
            w.create_trigger(
                {
                    "apiVersion": "cloudtriggers.io/v1alpha1",
                    "kind": "Trigger",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": spec,
                }
            )
            names.append(name)

    def ready() -> bool:
        return all(condition(w.trigger(namespace, n)).get("reason") == "Available" for n in names)

    wait_for(ready, timeout=60, what=f"{len(names)} Triggers Ready in {namespace}")
    return names


def delete_namespace(w: LocalWorld, kits: Sequence[ProviderKit], namespace: str, timeout: float) -> Outcome:
    """Delete the namespace and wait for it to go; what is left at the providers."""
    before = {kit.name: {i for i, _ in kit.objects(w)} for kit in kits}
    orphans = orphan_count()
    held: set[str] = set()

    def gone() -> bool:
        for s in w.core.list_namespaced_secret(namespace).items:
            meta = s.metadata
            assert meta is not None and meta.name is not None  # as every object the API server lists
            if "cloudtriggers.io/credentials-in-use" in (meta.finalizers or []):
                held.add(meta.name)
        return not namespace_exists(w, namespace)

    start = time.monotonic()
    w.core.delete_namespace(namespace)
    wait_for(gone, timeout=timeout, what=f"namespace {namespace} to go")
    took = time.monotonic() - start
    left = {kit.name: sorted(before[kit.name] & {i for i, _ in kit.objects(w)}) for kit in kits}
    return Outcome(took, {k: v for k, v in left.items() if v}, orphan_count() - orphans, len(held))
