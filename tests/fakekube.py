"""An in-memory stand-in for cloudtriggers.kube.Kube: reconcile decisions are tested without kopf."""

from __future__ import annotations

import copy
import itertools
import uuid
from typing import Any

from cloudtriggers.kube import Body, CredentialsSecret, SecretConflict, Strings
from cloudtriggers.output_secrets import OutputSecret


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_patch(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class FakeKube:
    def __init__(self) -> None:
        self.triggers: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.secret_annotations: dict[tuple[str, str], dict[str, str]] = {}
        self.events: list[dict[str, str]] = []
        self.status_writes = 0
        self.finalizer_writes = 0
        self.terminating: set[str] = set()
        self._rv = itertools.count(1)

    # -- test helpers
    def apply(
        self, namespace: str, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None
    ) -> None:
        key = (namespace, name)
        if key in self.triggers:
            obj = self.triggers[key]
            if obj["spec"] != spec:
                obj["metadata"]["generation"] += 1
            obj["spec"] = copy.deepcopy(spec)
            obj["metadata"]["annotations"] = dict(annotations or {})
            obj["metadata"]["resourceVersion"] = str(next(self._rv))  # every write moves it
        else:
            self.triggers[key] = {
                "apiVersion": "cloudtriggers.io/v1alpha1",
                "kind": "Trigger",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "generation": 1,
                    "creationTimestamp": f"2026-01-01T00:00:{len(self.triggers):02d}Z",
                    "annotations": dict(annotations or {}),
                    "finalizers": ["cloudtriggers.io/finalizer"],
                    "resourceVersion": str(next(self._rv)),
                },
                "spec": copy.deepcopy(spec),
            }

    def put_secret(
        self, namespace: str, name: str, data: dict[str, str], owner_uid: str | None = None
    ) -> None:
        before = self.secrets.get((namespace, name)) or {}
        self.secrets[(namespace, name)] = {
            "data": dict(data),
            "rv": str(next(self._rv)),
            "owner": owner_uid,
            "held": before.get("held", False),
            "deleting": before.get("deleting", False),
        }

    def delete_secret(self, namespace: str, name: str) -> None:
        """As the API server: a held Secret only gets a deletionTimestamp until it is released."""
        s = self.secrets[(namespace, name)]
        if s["held"]:
            s["deleting"] = True
            s["rv"] = str(next(self._rv))
        else:
            del self.secrets[(namespace, name)]

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return self.triggers[(namespace, name)].get("status") or {}

    def cond(self, namespace: str, name: str, type_: str = "Ready") -> dict[str, Any]:
        return next(c for c in self.status(namespace, name)["conditions"] if c["type"] == type_)

    def reasons(self) -> list[str]:
        return [e["reason"] for e in self.events]

    # -- the Kube protocol
    def get_trigger(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.triggers.get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    def patch_trigger_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        obj = self.triggers[(namespace, name)]
        obj["status"] = merge_patch(obj.get("status") or {}, status)
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.status_writes += 1
        return copy.deepcopy(obj)

    def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        s = self.secrets.get((namespace, name))
        return (dict(s["data"]), s["rv"]) if s else None

    def read_output(self, namespace: str, name: str) -> OutputSecret | None:
        got = self.read_secret(namespace, name)
        return None if got is None else OutputSecret.of(*got)

    def read_credentials(self, namespace: str, name: str) -> CredentialsSecret | None:
        s = self.secrets.get((namespace, name))
        return CredentialsSecret(dict(s["data"]), s["rv"], s["held"], s["deleting"]) if s else None

    def hold_secret(self, namespace: str, name: str, secret: CredentialsSecret) -> bool:
        s = self.secrets.get((namespace, name))
        if s is None or s["rv"] != secret.resource_version or s["deleting"]:
            return False
        if not s["held"]:
            s["held"] = True
            s["rv"] = str(next(self._rv))
        return True

    def set_trigger_finalizer(
        self, body: dict[str, Any], present: bool, annotations: Strings | None = None
    ) -> dict[str, Any] | None:
        obj = self.triggers.get((body["metadata"]["namespace"], body["metadata"]["name"]))
        if obj is None:
            return None
        finalizers = [f for f in obj["metadata"].get("finalizers") or [] if f != "cloudtriggers.io/finalizer"]
        obj["metadata"]["finalizers"] = [*finalizers, "cloudtriggers.io/finalizer"] if present else finalizers
        if annotations:
            obj["metadata"]["annotations"] = {**(obj["metadata"].get("annotations") or {}), **annotations}
        self.finalizer_writes += 1
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(obj)

    def release_secret(self, namespace: str, name: str) -> bool:
        s = self.secrets.get((namespace, name))
        if s is None or not s["held"]:
            return True
        s["held"] = False
        s["rv"] = str(next(self._rv))
        if s["deleting"]:
            del self.secrets[(namespace, name)]
        return True

    def list_triggers(self, namespace: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(t) for (ns, _), t in self.triggers.items() if ns == namespace]

    def list_held_secrets(self, namespaces: list[str]) -> list[tuple[str, str]]:
        return [k for k, s in self.secrets.items() if s["held"] and (not namespaces or k[0] in namespaces)]

    def write_output_secret(
        self, owner: Body, name: str, data: Strings, annotations: Strings | None = None
    ) -> None:
        if annotations:
            self.secret_annotations.setdefault((owner["metadata"]["namespace"], name), {}).update(annotations)
        ns = owner["metadata"]["namespace"]
        uid = owner["metadata"]["uid"]
        cur = self.secrets.get((ns, name))
        if cur is not None and cur["owner"] != uid:
            raise SecretConflict(
                f"Secret {name} exists and is not owned by this Trigger; it is left untouched"
            )
        self.put_secret(ns, name, data, owner_uid=uid)

    def emit_event(self, owner: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append(
            {"type": type_, "reason": reason, "message": message, "name": owner["metadata"]["name"]}
        )

    def namespace_terminating(self, namespace: str) -> bool:
        return namespace in self.terminating
