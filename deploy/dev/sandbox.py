"""The provider sandboxes of a development cluster, with fixed credentials and the examples' targets.

deploy/dev/sandbox.yaml runs this file in the operator's image (Tilt and scripts/e2e-kind.sh deploy
it); deploy/dev/examples.py points examples/*.yaml at it, with the credentials below. They are not
secrets: they open these emulators and nothing else.

    python deploy/dev/sandbox.py [--host 0.0.0.0] [--providers gitlab,ack,swr]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

# Where the sandboxes are reachable in the cluster: one Service, one port per provider.
NAMESPACE = "cloudtriggers-sandbox"
SERVICE = "sandbox"
PORTS = {"gitlab": 8929, "ack": 8931, "swr": 8930}  # as `cloudtriggers sandbox`

# The credentials Secret of each example gets these keys.
CREDENTIALS: dict[str, dict[str, str]] = {
    "gitlab": {"token": "glpat-cloudtriggers-dev"},
    "ack": {"accessKeyId": "LTAI5tCloudtriggersDev", "accessKeySecret": "cloudtriggers-dev-ack-secret-0000"},
    "swr": {"accessKey": "CLOUDTRIGGERSDEV0000", "secretKey": "cloudtriggersDevSecretKey000000000000000"},
}

# What the examples point at: GitLab projects, ACK clusters (region, applications), SWR repositories.
GITLAB_PROJECTS = ["group/web"]
ACK_CLUSTERS = {"c5cdf7e3938bc4f8eb0e44b21a80f1234": ("cn-beijing", ["default/web-server"])}
SWR_REPOSITORIES = [("group", "team/web")]


def service_url(provider: str) -> str:
    """The sandbox's URL inside the cluster."""
    return f"http://{SERVICE}.{NAMESPACE}.svc:{PORTS[provider]}"


def _gitlab(host: str, port: int) -> Any:
    from cloudtriggers.sandbox.gitlab import MAINTAINER, GitLabSandbox

    sandbox = GitLabSandbox(host, port)
    user = sandbox.add_user("cloudtriggers-bot", token=CREDENTIALS["gitlab"]["token"])
    for path in GITLAB_PROJECTS:
        sandbox.add_project(path, members={user.username: MAINTAINER})
    return sandbox


def _ack(host: str, port: int) -> Any:
    from cloudtriggers.sandbox.ack import AckSandbox

    sandbox = AckSandbox(host, port)
    creds = CREDENTIALS["ack"]
    account = sandbox.add_account(
        "cloudtriggers-dev", access_key_id=creds["accessKeyId"], access_key_secret=creds["accessKeySecret"]
    )
    for cluster_id, (region, applications) in ACK_CLUSTERS.items():
        sandbox.add_cluster(account.name, cluster_id, region=region, applications=applications)
    return sandbox


def _swr(host: str, port: int) -> Any:
    from cloudtriggers.sandbox.swr import SwrSandbox

    sandbox = SwrSandbox(host, port)
    creds = CREDENTIALS["swr"]
    sandbox.add_account("cloudtriggers-dev", access_key=creds["accessKey"], secret_key=creds["secretKey"])
    for organization, repository in SWR_REPOSITORIES:
        sandbox.add_repository(organization, repository)
    return sandbox


FACTORIES: dict[str, Callable[[str, int], Any]] = {"gitlab": _gitlab, "ack": _ack, "swr": _swr}


def start(
    providers: Sequence[str], host: str = "127.0.0.1", ports: dict[str, int] | None = None
) -> dict[str, Any]:
    """Start the sandboxes of `providers` (port 0: any free port); each has .url and .stop()."""
    started: dict[str, Any] = {}
    try:
        for provider in providers:
            port = PORTS[provider] if ports is None else ports[provider]
            started[provider] = FACTORIES[provider](host, port).start()
    except BaseException:
        for sandbox in started.values():
            sandbox.stop()
        raise
    return started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--providers", default=",".join(PORTS), help="comma-separated, default: all")
    args = parser.parse_args(argv)
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    unknown = sorted(set(providers) - set(PORTS))
    if unknown:
        parser.error(f"unknown provider(s): {', '.join(unknown)}")

    stop = threading.Event()
    # PID 1 in a container: SIGTERM has no default action there, so stop on it explicitly.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sandboxes = start(providers, args.host)
    for provider, sandbox in sandboxes.items():
        print(f"{provider} sandbox on {sandbox.url} (in the cluster: {service_url(provider)})", flush=True)
    stop.wait()
    for sandbox in sandboxes.values():
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
