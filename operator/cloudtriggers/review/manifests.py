"""Manifests as GitOps repositories hold them: files, directories, stdin (kustomize build | ...);
multi-document YAML or JSON, and List kinds."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..models import GROUP, KIND

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Document:
    source: str  # the file, or "-" for stdin
    index: str  # the document's number in the file, from 1; "3.2" for the second item of a List
    obj: dict[str, Any]

    @property
    def is_trigger(self) -> bool:
        return self.obj.get("kind") == KIND and str(self.obj.get("apiVersion", "")).startswith(f"{GROUP}/")

    @property
    def key(self) -> tuple[str, str]:
        meta = self.obj.get("metadata") or {}
        return str(meta.get("namespace") or ""), str(meta.get("name") or "")

    @property
    def where(self) -> str:
        return f"{self.source}#{self.index}"


class ManifestError(Exception):
    """A file that cannot be read or parsed."""


def _files(paths: Iterable[str]) -> Iterator[str]:
    for p in paths:
        path = Path(p)
        if p == "-" or path.is_file():
            yield p
        elif path.is_dir():
            yield from sorted(str(f) for f in path.rglob("*") if f.suffix in SUFFIXES and f.is_file())
        else:
            raise ManifestError(f"{p}: no such file or directory")


def load(paths: Iterable[str]) -> list[Document]:
    docs: list[Document] = []
    for source in _files(paths):
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
            parsed = list(yaml.safe_load_all(text))
        except (OSError, yaml.YAMLError) as e:
            raise ManifestError(f"{source}: {e}") from None
        n = 0
        for obj in parsed:
            if not isinstance(obj, dict):
                continue
            n += 1
            items = obj.get("items")
            if str(obj.get("kind", "")).endswith("List") and isinstance(items, list):
                docs.extend(
                    Document(source, f"{n}.{i}", item)
                    for i, item in enumerate(items, 1)
                    if isinstance(item, dict)
                )
            else:
                docs.append(Document(source, str(n), obj))
    return docs
