"""examples/*.yaml, pointed at the in-cluster sandboxes of deploy/dev/sandbox.py, as one YAML stream.

Only the providers the operator implements (cloudtriggers.providers.build_providers) are included
unless --providers says otherwise. Each provider's example goes to its own namespace,
examples-<provider>: the examples are each written for namespace apps and may share names. Tilt and
scripts/e2e-kind.sh apply the output:

    .venv/bin/python deploy/dev/examples.py | kubectl apply -f -
    .venv/bin/python deploy/dev/examples.py --namespaces     # e.g. examples-gitlab,examples-ack
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sandbox import CREDENTIALS, PORTS, service_url

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROVIDERS = tuple(PORTS)


def namespace_of(provider: str) -> str:
    return f"examples-{provider}"


def provider_of(trigger: Mapping[str, Any]) -> str:
    found = [p for p in PROVIDERS if p in (trigger.get("spec") or {})]
    if len(found) != 1:
        raise ValueError(f"Trigger {trigger['metadata']['name']}: expected one provider block, got {found}")
    return found[0]


def point_at_sandbox(trigger: dict[str, Any], provider: str, url: str) -> None:
    block = trigger["spec"][provider]
    # GitLab's instance URL is its endpoint; ACK and SWR take an endpoint override.
    block["url" if provider == "gitlab" else "endpoint"] = url


def render(
    providers: Iterable[str] = PROVIDERS,
    urls: Mapping[str, str] | None = None,
    examples: Path = EXAMPLES,
) -> list[dict[str, Any]]:
    """The example objects of `providers`, pointed at `urls` (default: in the cluster), with credentials."""
    wanted = set(providers)
    out: list[dict[str, Any]] = []
    for path in sorted(examples.glob("*.yaml")):
        docs = [copy.deepcopy(d) for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        triggers = [d for d in docs if d.get("kind") == "Trigger"]
        kinds = {provider_of(t) for t in triggers}
        if len(kinds) != 1:
            raise ValueError(f"{path.name}: expected Triggers of one provider, got {sorted(kinds)}")
        (provider,) = kinds
        if provider not in wanted:
            continue
        secrets = {(t.get("spec") or {}).get("credentialsSecretRef", {}).get("name") for t in triggers}
        namespace = namespace_of(provider)
        if not any(o["kind"] == "Namespace" and o["metadata"]["name"] == namespace for o in out):
            out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for doc in docs:
            doc["metadata"]["namespace"] = namespace
            if doc.get("kind") == "Trigger":
                point_at_sandbox(doc, provider, (urls or {}).get(provider) or service_url(provider))
            elif doc.get("kind") == "Secret" and doc["metadata"]["name"] in secrets:
                doc.pop("data", None)
                doc["stringData"] = dict(CREDENTIALS[provider])
            out.append(doc)
    return out


def implemented() -> list[str]:
    """The providers the operator implements, in the sandbox's order."""
    from cloudtriggers.providers import build_providers

    have = build_providers()
    return [p for p in PROVIDERS if p in have]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", help="comma-separated; default: those the operator implements")
    parser.add_argument("--namespaces", action="store_true", help="print the namespaces, comma-separated")
    args = parser.parse_args(argv)
    providers = (
        [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers else implemented()
    )
    unknown = sorted(set(providers) - set(PROVIDERS))
    if unknown:
        parser.error(f"unknown provider(s): {', '.join(unknown)}")
    if args.namespaces:
        print(",".join(namespace_of(p) for p in providers))
        return 0
    sys.stdout.write(yaml.safe_dump_all(render(providers), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
