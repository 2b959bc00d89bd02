"""`cloudtriggers validate`: offline, what the API server and the operator would refuse.

Each Trigger goes through exactly what the emulated API server runs on a write (apiserver/resources.py:
the name, strict decoding, pruning and defaults, the OpenAPI validations and the CEL rules, the
transition rules too when `against` holds the previous version), then the operator's own spec
validation (the pydantic models, what would be an InvalidSpec condition). No cluster, no credentials.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from ..apiserver import resources
from ..crd import build_crd
from ..models import KIND, TriggerSpec, spec_problems
from .manifests import Document


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    by: Literal["apiserver", "operator"]


@dataclass
class Result:
    doc: Document
    problems: list[Problem] = field(default_factory=list)
    message: str = ""  # the API server's whole answer, as kubectl prints it ("" when it would admit)

    @property
    def valid(self) -> bool:
        return not self.problems


@dataclass
class Report:
    results: list[Result]
    skipped: int  # documents of other kinds

    @property
    def valid(self) -> bool:
        return all(r.valid for r in self.results)

    def as_json(self) -> dict[str, Any]:
        return {
            "triggers": [
                {
                    "file": r.doc.source,
                    "document": r.doc.index,
                    "namespace": r.doc.key[0],
                    "name": r.doc.key[1],
                    "valid": r.valid,
                    "message": r.message,
                    "errors": [{"field": p.field, "message": p.message, "by": p.by} for p in r.problems],
                }
                for r in self.results
            ],
            "summary": self.summary(),
        }

    def summary(self) -> dict[str, int]:
        invalid = sum(not r.valid for r in self.results)
        return {
            "triggers": len(self.results),
            "valid": len(self.results) - invalid,
            "invalid": invalid,
            "skipped": self.skipped,
        }

    def as_text(self) -> str:
        lines = []
        for r in self.results:
            if r.valid:
                continue
            ns, name = r.doc.key
            lines.append(f"{r.doc.where}: Trigger {ns + '/' if ns else ''}{name}: invalid")
            for p in r.problems:
                by = "the API server" if p.by == "apiserver" else "the operator (InvalidSpec)"
                lines.append(f"  {p.field + ': ' if p.field else ''}{p.message}  [{by}]")
        s = self.summary()
        lines.append(
            f"{s['triggers']} Trigger(s): {s['valid']} valid, {s['invalid']} invalid; "
            f"{s['skipped']} other document(s) skipped"
        )
        return "\n".join(lines)


def check(doc: Document, old: dict[str, Any] | None = None) -> Result:
    """One Trigger, as `kubectl apply` (create, or update of `old`) and then the operator see it."""
    crd = build_crd()
    version = str(doc.obj.get("apiVersion", "")).partition("/")[2]
    served = [v["name"] for v in crd["spec"]["versions"] if v.get("served")]
    if version not in served:
        message = f'no matches for kind "{KIND}" in version "{doc.obj.get("apiVersion")}"'
        return Result(doc, [Problem("apiVersion", message, "apiserver")], message)
    try:
        stored = resources.admit(
            crd, copy.deepcopy(doc.obj), copy.deepcopy(old) if old else None, version, strict=True
        )
    except resources.Refused as e:
        status = e.status
        causes = (status.get("details") or {}).get("causes") or []
        problems = [Problem(str(c.get("field", "")), str(c.get("message", "")), "apiserver") for c in causes]
        return Result(
            doc, problems or [Problem("", str(status.get("message", "")), "apiserver")], status["message"]
        )
    try:
        TriggerSpec.model_validate(stored.get("spec") or {})
    except ValidationError as e:
        problems = []
        for text in spec_problems(e):
            where, _, message = text.partition(": ")
            problems.append(Problem(f"spec.{where}" if where != "spec" else "spec", message, "operator"))
        return Result(doc, problems)
    return Result(doc)


def validate(docs: Iterable[Document], against: Iterable[Document] = ()) -> Report:
    previous = {d.key: d.obj for d in against if d.is_trigger}
    results, skipped = [], 0
    for d in docs:
        if not d.is_trigger:
            skipped += 1
            continue
        results.append(check(d, previous.get(d.key)))
    return Report(results, skipped)
