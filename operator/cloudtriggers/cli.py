"""The `cloudtriggers` command: run, crd, demo, sandbox, version."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .settings import Settings


def cmd_run(args: argparse.Namespace) -> int:
    import kopf
    from kubernetes import client, config

    from .runner import build_operator

    settings = Settings.from_env()
    if args.namespace:
        settings.namespaces = list(args.namespace)
    if args.resync_period:
        from .models import parse_duration

        settings.resync_period = parse_duration(args.resync_period)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]

    async def login(**kwargs: Any) -> Any:
        # The same credentials the reconciler's client loaded above (kubeconfig or in-cluster).
        return kopf.login_via_client(**kwargs)

    parts = build_operator(settings, client.ApiClient(), login=login)
    asyncio.run(
        kopf.operator(
            registry=parts.registry,
            settings=parts.settings,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=args.liveness or None,
        )
    )
    return 0


def cmd_crd(args: argparse.Namespace) -> int:
    from .crd import render_crd

    sys.stdout.write(render_crd())
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"cloudtriggers {__version__}")
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox.gitlab import serve

    serve(args.host, args.gitlab_port)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(timeout=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudtriggers",
        description="Kubernetes operator for deployment triggers at Alibaba Cloud ACK, Huawei Cloud SWR "
        "and GitLab.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig or in-cluster config")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    run.add_argument("--resync-period", help="default drift-check interval, e.g. 10m (default 10m)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--liveness", default="", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz (default: off)"
    )
    run.set_defaults(func=cmd_run)

    crd = sub.add_parser("crd", help="print the Trigger CustomResourceDefinition (YAML)")
    crd.set_defaults(func=cmd_crd)

    demo = sub.add_parser(
        "demo", help="run the whole flow against an in-process Kubernetes API and GitLab sandbox"
    )
    demo.add_argument("--timeout", type=float, default=25.0, help="seconds to wait for each step")
    demo.set_defaults(func=cmd_demo)

    sandbox = sub.add_parser("sandbox", help="serve the GitLab API emulator for manual testing")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--gitlab-port", type=int, default=8929)
    sandbox.set_defaults(func=cmd_sandbox)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
