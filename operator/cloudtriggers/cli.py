"""The `cloudtriggers` command: run, crd, demo, sandbox, version."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from . import __version__
from .settings import Settings


def run_settings(args: argparse.Namespace) -> Settings:
    """Environment (CLOUDTRIGGERS_*) first, then the flags that were given."""
    overrides = {
        "namespaces": args.namespace,
        "label_selector": args.label_selector,
        "resync_period": args.resync_period,
        "rate": args.rate,
        "burst": args.burst,
        "provider_concurrency": args.provider_concurrency,
        "workers": args.workers,
        "default_credentials_secret": args.default_credentials_secret,
        "default_credentials_endpoint": args.default_credentials_endpoint,
        "delete_timeout": args.delete_timeout,
        "log_format": args.log_format,
        "log_level": args.log_level,
        "http_port": args.http_port,
        "leader_election": args.leader_election,
        "lease_name": args.lease_name,
        "lease_namespace": args.lease_namespace,
        "lease_duration": args.lease_duration,
        "breaker_threshold": args.breaker_threshold,
        "breaker_cooldown": args.breaker_cooldown,
        "perma_diff_repairs": args.perma_diff_repairs,
        "ack_network": args.ack_network,
        "ack_trusted_endpoints": args.ack_trusted_endpoint,
        **_policy_overrides(args),
    }
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _policy_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The endpoint policy flags (run and plan take the same; _add_policy_flags)."""
    return {
        "allowed_endpoints": args.allowed_endpoint,
        "denied_endpoints": args.denied_endpoint,
        "only_allowed_endpoints": args.only_allowed_endpoints,
    }


def _add_policy_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allowed-endpoint",
        action="append",
        metavar="PATTERN",
        help="scheme://host[:port] (host: a name, *.suffix, an address or a CIDR) that may be called "
        "although plain http or a private or loopback address (repeatable; docs/security.md)",
    )
    parser.add_argument(
        "--denied-endpoint",
        action="append",
        metavar="PATTERN",
        help="an endpoint pattern never called, even when allowed (repeatable)",
    )
    parser.add_argument(
        "--only-allowed-endpoints",
        action="store_true",
        default=None,
        help="call only endpoints an --allowed-endpoint matches (a strict allowlist)",
    )


def tune_gc() -> None:
    """Fewer cyclic-GC passes for a process that allocates a lot per watch event: the objects of
    start-up (modules, kopf's registry) are frozen out of every pass, and the youngest generation
    is collected every 20,000 allocations instead of 700. Measured with bench/: 240 -> 7 passes and
    0.22 -> 0.06 s of GC while 500 Triggers are created, with the same peak RSS."""
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def cmd_run(args: argparse.Namespace) -> int:
    import kopf
    from kubernetes import client, config

    from .handlers import serve_in_thread
    from .logs import configure as configure_logging
    from .metrics import LEADER
    from .models import GROUP, PLURAL
    from .runner import build_operator

    settings = run_settings(args)
    configure_logging(settings.log_format, settings.log_level)
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]

    async def login(**kwargs: Any) -> Any:
        # The same credentials the reconciler's client loaded above (kubeconfig or in-cluster).
        return kopf.login_via_client(**kwargs)

    config_ = client.Configuration.get_default_copy()
    # One pooled connection per worker thread, or urllib3 discards and reopens them under load.
    config_.connection_pool_maxsize = settings.workers + 4
    api = client.ApiClient(config_)
    parts = build_operator(settings, api, login=login, serve_http=False)
    tune_gc()
    if settings.http_port:
        # Served from the start, standby included: the kubelet probes every replica.
        serve_in_thread(settings.http_port)
    if settings.label_selector:
        parts.settings.watching.label_selectors[GROUP, PLURAL] = settings.label_selector

    def operate(stop: threading.Event | None = None) -> None:
        async def main() -> None:
            # kopf would wait for a threading stop flag in the loop's default executor (and then give
            # that waiter 5 s at exit); an asyncio.Event set from a bridge thread of ours avoids both.
            loop = asyncio.get_running_loop()
            aio_stop = asyncio.Event()

            def bridge() -> None:
                assert stop is not None
                stop.wait()
                with contextlib.suppress(RuntimeError):  # the loop may be closed already
                    loop.call_soon_threadsafe(aio_stop.set)

            if stop is not None:
                threading.Thread(target=bridge, name="stop-bridge", daemon=True).start()
            try:
                await kopf.operator(
                    registry=parts.registry,
                    settings=parts.settings,
                    clusterwide=not settings.namespaces,
                    namespaces=settings.namespaces,
                    stop_flag=aio_stop if stop is not None else None,
                )
            finally:
                if stop is not None:
                    stop.set()

        if stop is None:
            asyncio.run(main())
            return
        # With a stop flag, kopf runs in a thread: it then installs no signal handlers of its own, and
        # SIGTERM (handled in the main thread below) stops it through the flag alone, at once.
        worker = threading.Thread(target=lambda: asyncio.run(main()), name="kopf")
        worker.start()
        while worker.is_alive():
            worker.join(0.5)

    if not settings.leader_election:
        LEADER.set(1)
        operate()
        return 0
    from .leader import LeaseElector, lead

    elector = LeaseElector(
        api,
        settings.lease_name,
        settings.lease_namespace or os.environ.get("POD_NAMESPACE") or "default",
        settings.identity,
        settings.lease_duration,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    lost = lead(elector, operate, stop)
    return 1 if lost else 0


def cmd_crd(args: argparse.Namespace) -> int:
    from .crd import render_crd

    sys.stdout.write(render_crd())
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"cloudtriggers {__version__}")
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox import ack, gitlab, swr

    serving = {
        "gitlab": (gitlab.serve, args.gitlab_port),
        "ack": (ack.serve, args.ack_port),
        "swr": (swr.serve, args.swr_port),
    }
    chosen = [p.strip() for p in args.providers.split(",") if p.strip()]
    unknown = set(chosen) - set(serving)
    if unknown:
        print(f"unknown provider(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    # Each emulator serves in the foreground of its own thread, printing its endpoint and credentials.
    threads = [
        threading.Thread(
            target=serving[p][0], args=(args.host, serving[p][1]), name=f"sandbox-{p}", daemon=True
        )
        for p in chosen
    ]
    for t in threads:
        t.start()
        time.sleep(0.3)  # one banner at a time
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.5)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_release_credentials(args: argparse.Namespace) -> int:
    """Remove the operator's finalizer from credentials Secrets, e.g. when uninstalling it."""
    from kubernetes import client, config

    from .credentials import release_all
    from .kube import KubeClient

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    kube = KubeClient(client.ApiClient(client.Configuration.get_default_copy()), pool=2)
    release_all(kube, args.namespace or [], only_unused=args.only_unused, settle=args.settle)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .review.manifests import ManifestError, load
    from .review.validate import validate

    try:
        report = validate(load(args.filename), load(args.against or []))
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_json(), indent=2) if args.output == "json" else report.as_text())
    return 0 if report.valid else 1


def _selected(obj: dict[str, Any], namespaces: list[str], selector: str) -> bool:
    meta = obj.get("metadata") or {}
    if namespaces and meta.get("namespace") not in namespaces:
        return False
    labels = meta.get("labels") or {}
    wanted = [part.split("=", 1) for part in selector.split(",") if "=" in part]
    return all(labels.get(k.strip()) == v.strip() for k, v in wanted)


def cmd_plan(args: argparse.Namespace) -> int:
    from kubernetes import client, config

    from .kube import KubeApiError, KubeClient
    from .review.manifests import ManifestError, load
    from .review.plan import Planner
    from .runner import providers_for

    if args.prune and not (args.namespace or args.selector):
        print(
            "error: --prune needs --namespace or --selector: which Triggers the files are all of",
            file=sys.stderr,
        )
        return 1
    settings = Settings(**{k: v for k, v in _policy_overrides(args).items() if v is not None})
    try:
        docs = load(args.filename)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    kube = KubeClient(client.ApiClient(), component="cloudtriggers-plan")
    providers = providers_for(settings)
    default_ns = (args.namespace or ["default"])[0]
    try:
        try:
            existing = kube.list_all_triggers()
        except KubeApiError as e:
            if e.status != 403:
                raise
            # No cluster-wide list: the namespaces in question (conflicts across others go unseen).
            spaces = {d.key[0] or default_ns for d in docs if d.is_trigger} | set(args.namespace or [])
            existing = [t for ns in sorted(spaces) for t in kube.list_triggers(ns)]
        in_scope = [t for t in existing if _selected(t, args.namespace or [], args.selector or "")]
        planner = Planner(kube, providers, settings)
        result = planner.plan(docs, existing, prune=False, default_namespace=default_ns)
        if args.prune:
            wanted = {(d.key[0] or default_ns, d.key[1]) for d in docs if d.is_trigger}
            gone = [t for t in in_scope if (t["metadata"]["namespace"], t["metadata"]["name"]) not in wanted]
            result.changes.extend(planner.plan([], gone, prune=True).changes)
    except KubeApiError as e:
        print(f"error: the cluster answered {e}", file=sys.stderr)
        return 1
    print(json.dumps(result.as_json(), indent=2) if args.output == "json" else result.as_text())
    return result.exit_code()


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

    run = sub.add_parser(
        "run",
        help="run the operator against the current kubeconfig or in-cluster config",
        description="Run the operator. Every flag can also be set as an environment variable "
        "CLOUDTRIGGERS_<FLAG> (e.g. CLOUDTRIGGERS_RESYNC_PERIOD=10m); flags win.",
    )
    run.add_argument(
        "-n", "--namespace", action="append", help="watch only this namespace (repeatable); default: all"
    )
    run.add_argument(
        "--label-selector", help="only Triggers matching this label selector (sharding), e.g. shard=a"
    )
    run.add_argument("--resync-period", help="default drift-check interval, e.g. 10m (default 10m)")
    run.add_argument(
        "--rate",
        type=float,
        help="cap on provider requests per second per account (default: none; the pace adapts to what "
        "the provider documents and says)",
    )
    run.add_argument("--burst", type=int, help="cap on the provider request burst per account (default none)")
    run.add_argument(
        "--provider-concurrency", type=int, help="provider requests in flight per account (default 8)"
    )
    run.add_argument("--workers", type=int, help="threads for provider and Kubernetes calls (default 16)")
    run.add_argument(
        "--default-credentials-secret", help="namespace/name of a Secret for Triggers that name none"
    )
    run.add_argument(
        "--default-credentials-endpoint",
        help="the only endpoint the default credentials are sent to (GitLab url, ACK/SWR endpoint)",
    )
    run.add_argument("--delete-timeout", help="orphan after this in a terminating namespace (default 2m)")
    run.add_argument("--log-format", choices=["text", "json"], help="log format on stderr (default text)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    run.add_argument(
        "--http-port", type=int, help="port of /metrics, /healthz and /readyz (default 8080; 0: off)"
    )
    run.add_argument(
        "--leader-election",
        action="store_true",
        default=None,
        help="act only while holding a coordination.k8s.io Lease (run several replicas safely)",
    )
    run.add_argument("--lease-name", help="name of the Lease (default cloudtriggers)")
    run.add_argument("--lease-namespace", help="namespace of the Lease (default: POD_NAMESPACE or default)")
    run.add_argument("--lease-duration", help="a dead leader is replaced after about this long (default 15s)")
    run.add_argument(
        "--breaker-threshold",
        type=int,
        help="authentication failures in a row that pause an account's calls (default 3)",
    )
    run.add_argument(
        "--breaker-cooldown", help="wait before one Trigger probes paused credentials again (default 5m)"
    )
    run.add_argument(
        "--perma-diff-repairs",
        type=int,
        help="identical drift repairs in a row before a Trigger stops repairing (default 3; 0: never)",
    )
    run.add_argument(
        "--ack-network",
        choices=["public", "vpc"],
        help="default ACK endpoint: cs.<region> or cs-vpc.<region>",
    )
    run.add_argument(
        "--ack-trusted-endpoint",
        action="append",
        help="a spec.ack.endpoint that may receive RRSA credentials besides the official ones (repeatable)",
    )
    _add_policy_flags(run)
    run.set_defaults(func=cmd_run)

    release = sub.add_parser(
        "release-credentials",
        help="remove the operator's finalizer from credentials Secrets (when uninstalling it)",
        description="While a Trigger uses a credentials Secret, the operator keeps a finalizer "
        "(cloudtriggers.io/credentials-in-use) on it, so that the Secret outlives the Trigger's provider "
        "delete. Run this after stopping the operator for good, so the Secrets can be deleted. The Helm "
        "chart runs it as a post-delete hook.",
    )
    release.add_argument(
        "-n", "--namespace", action="append", help="only in this namespace (repeatable); default: all"
    )
    release.add_argument(
        "--only-unused",
        action="store_true",
        help="release only Secrets that no Trigger needs any more (what the operator's sweep does)",
    )
    release.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="keep releasing for this many seconds (an operator still shutting down may hold one again)",
    )
    release.set_defaults(func=cmd_release_credentials)

    validate = sub.add_parser(
        "validate",
        help="check Trigger manifests offline, as the API server and the operator would (docs/gitops.md)",
        description="Every Trigger in the files (multi-document YAML or JSON, List kinds, '-' for stdin, "
        "directories recursively) is checked as the API server checks a write (the CRD's schema and CEL "
        "rules, with the transition rules against --against's version of the same Trigger) and then by the "
        "operator's own spec validation. Other kinds are skipped. Exit 0: all valid; 1: not.",
    )
    validate.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE|DIR|-",
        help="manifests (repeatable)",
    )
    validate.add_argument(
        "--against",
        action="append",
        metavar="FILE|DIR|-",
        help="the previous version of the manifests (e.g. the target branch), for the transition rules",
    )
    validate.add_argument("-o", "--output", choices=["text", "json"], default="text")
    validate.set_defaults(func=cmd_validate)

    plan = sub.add_parser(
        "plan",
        help="what the operator would do if these manifests were applied, read-only (docs/gitops.md)",
        description="For each Trigger in the files, against the current cluster (kubeconfig) and, "
        "read-only, the providers with each Trigger's own credentials: create, update in place (which "
        "fields), replace (callers get a new token), adopt, delete (with --prune: Triggers of the "
        "namespace or selector that the files no longer hold), nothing, or a blocker (Conflict, "
        "CredentialsMissing, InvalidSpec, ...). The decisions are the reconciler's own. No provider and "
        "no Kubernetes write, ever. Exit 0: no change; 2: changes; 1: an error or a blocker.",
    )
    plan.add_argument(
        "-f", "--filename", action="append", required=True, metavar="FILE|DIR|-", help="manifests"
    )
    plan.add_argument(
        "-n", "--namespace", action="append", help="namespace of documents without one; --prune scope"
    )
    plan.add_argument("-l", "--selector", help="--prune scope: only Triggers with these labels (k=v,...)")
    plan.add_argument(
        "--prune", action="store_true", help="plan the deletion of Triggers the files do not hold"
    )
    plan.add_argument("--kubeconfig", help="default: KUBECONFIG or ~/.kube/config, else in-cluster")
    _add_policy_flags(plan)  # the providers are called under the same policy as by the operator
    plan.add_argument("-o", "--output", choices=["text", "json"], default="text")
    plan.set_defaults(func=cmd_plan)

    crd = sub.add_parser("crd", help="print the Trigger CustomResourceDefinition (YAML)")
    crd.set_defaults(func=cmd_crd)

    demo = sub.add_parser(
        "demo", help="run the whole flow against an in-process Kubernetes API and GitLab sandbox"
    )
    demo.add_argument("--timeout", type=float, default=25.0, help="seconds to wait for each step")
    demo.set_defaults(func=cmd_demo)

    sandbox = sub.add_parser(
        "sandbox",
        help="serve the provider emulators (GitLab, ACK, SWR) to try manifests without cloud accounts",
        description="Serve the provider emulators with demo credentials (printed) until interrupted. Point a "
        "Trigger at one with spec.gitlab.url or spec.ack/swr.endpoint.",
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sandbox.add_argument("--providers", default="gitlab,ack,swr", help="which emulators (default all)")
    sandbox.add_argument("--gitlab-port", type=int, default=8929)
    sandbox.add_argument("--ack-port", type=int, default=8931)
    sandbox.add_argument("--swr-port", type=int, default=8930)
    sandbox.set_defaults(func=cmd_sandbox)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
