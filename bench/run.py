"""The benchmark: N Triggers at once against the emulated API and the provider sandboxes.

The operator under test runs as a subprocess (`cloudtriggers run`, as users run it) so that its
peak RSS and CPU seconds are its own. The floor is bench/floor.py, a kopf operator that only
patches status Ready, run the same way against the same kind of world.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import platform
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import kmock
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch

from cloudtriggers.crd import build_crd
from cloudtriggers.models import GROUP, PLURAL, VERSION
from cloudtriggers.sandbox.ack import AckSandbox
from cloudtriggers.sandbox.gitlab import MAINTAINER, GitLabSandbox
from cloudtriggers.sandbox.kube import KubeServer, kube_client
from cloudtriggers.sandbox.swr import SwrSandbox
from cloudtriggers.settings import Settings

from . import targets

NS = "bench"
BENCH_UA = "cloudtriggers-bench"
TRIGGERS = f"{GROUP}/{VERSION}/{PLURAL}"
FLOOR = Path(__file__).with_name("floor.py")
SHAPE = Path(__file__).with_name("shape.py")


PROVIDERS = ("gitlab", "ack", "swr")


def parse_mix(text: str) -> dict[str, int]:
    """'gitlab=2,ack=1,swr=1' -> weights; a bare name counts 1. Triggers are dealt round-robin by weight."""
    mix: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        if name not in PROVIDERS:
            raise ValueError(f"unknown provider {name!r} (one of {', '.join(PROVIDERS)})")
        mix[name] = int(weight or 1)
        if mix[name] < 0:
            raise ValueError(f"negative weight for {name}")
    if not any(mix.values()):
        raise ValueError("the mix names no provider")
    return mix


@dataclass
class Config:
    n: int = 500
    mix: dict[str, int] = field(default_factory=lambda: {"gitlab": 1})  # provider weights
    latency: float = 0.0  # seconds the provider sandboxes add to every request
    concurrency: int = 16  # C: provider requests in flight per account (the bench has one account)
    workers: int = 0  # the operator's threads; 0: 2 x C, so that Kubernetes calls never take a provider slot
    rate: float | None = 10000.0  # per-account cap; high, so that C and latency are what is measured
    resync: float = 20.0  # steady-state phase: drift-check period
    steady_periods: float = 3.0
    floor: bool = True
    shape: bool = True  # also run bench/shape.py: kopf + our handlers and Kubernetes calls, no logic
    restart: bool = True
    steady: bool = True
    namespace: bool = True  # last: delete the namespace, time until it is gone, provider triggers left
    timeout: float = 600.0
    repeat: int = 1  # create phases (and floors) run this many times; the median run is reported
    accounts: int = 1  # accounts per provider (each its own credentials Secret and pacing)
    kubeconfig: str | None = None  # a real API server instead of the emulated one
    # The operator as a user starts it: its own C, workers and pacing (no rate cap), not the above.
    defaults: bool = False

    def __post_init__(self) -> None:
        if self.defaults:
            self.concurrency = Settings.model_fields["provider_concurrency"].default
            self.workers = Settings.model_fields["workers"].default
            self.rate = None  # what the saved config then says: no cap passed


@dataclass
class Phase:
    seconds: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    provider_calls: dict[str, float] = field(default_factory=dict)  # per Trigger, by operation
    kube_requests: float | None = 0.0  # per Trigger; None: not counted (a real API server)
    peak_rss_mib: float = 0.0
    cpu_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


REAL_SERVER_SETTLE = 5.0  # seconds an operator is given to start watching a real API server


def apply_crd(api: k8s.ApiClient) -> None:
    """The Trigger CRD on a real API server, created or brought to this build's, and Established."""
    ext = k8s.ApiextensionsV1Api(api)
    crd = build_crd()
    name = crd["metadata"]["name"]
    try:
        current = ext.read_custom_resource_definition(name)
    except k8s.ApiException as e:
        if e.status != 404:
            raise
        ext.create_custom_resource_definition(crd)  # type: ignore[arg-type]
    else:
        assert current.metadata is not None
        crd["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(name, crd)  # type: ignore[arg-type]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = ext.read_custom_resource_definition(name).status
        conditions = (status.conditions if status else None) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise TimeoutError(f"CRD {name} not Established after 60 s")


class ReadyWatch:
    """On a real API server: the names of the Triggers seen Ready, from a watch of the namespace (a
    list of every Trigger ten times a second would load the server under test)."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self._ready: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ready-watch", daemon=True)
        self._thread.start()

    def ready(self, names: Iterable[str]) -> set[str]:
        with self._lock:
            return self._ready & set(names)

    def stop(self) -> None:
        self._stop.set()

    def _see(self, obj: dict[str, Any]) -> None:
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready" and c.get("status") == "True":
                with self._lock:
                    self._ready.add(obj["metadata"]["name"])

    def _run(self) -> None:
        custom = k8s.CustomObjectsApi(self.api)
        while not self._stop.is_set():
            try:
                listed = cast(
                    dict[str, Any],
                    custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL),
                )
                for obj in listed["items"]:
                    self._see(obj)
                version = listed["metadata"]["resourceVersion"]
                stream = k8s_watch.Watch().stream(  # type: ignore[no-untyped-call]
                    custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    resource_version=version,
                    timeout_seconds=30,
                )
                for event in stream:
                    self._see(event["object"])
                    if self._stop.is_set():
                        return
            except Exception:  # an expired version (410) or a dropped connection: list again
                time.sleep(0.5)


class World:
    """The emulated API with the CRD; per provider in the mix, its sandbox with one account, one
    target (GitLab project, ACK cluster and application, SWR repository) and a credentials Secret."""

    def __init__(
        self,
        latency: float,
        mix: dict[str, int] | None = None,
        accounts: int = 1,
        kubeconfig: str | None = None,
    ) -> None:
        self.mix = {k: v for k, v in (mix or {"gitlab": 1}).items() if v}
        self.accounts = max(1, accounts)
        self.ack_clusters = [f"c{k:032d}" for k in range(self.accounts)]  # one ACK cluster per account
        # Round-robin over the mix, each provider as often as its weight.
        self.deal = [p for p in PROVIDERS for _ in range(self.mix.get(p, 0))]
        self.dir = Path(tempfile.mkdtemp(prefix="ct-bench-"))
        self.ns = NS
        self.kube: KubeServer | None = None  # None: a real API server (kubeconfig)
        self.watch: ReadyWatch | None = None
        if kubeconfig is None:
            self.kube = KubeServer(install_crd=False).start()
            self.api = kube_client(self.kube.url)
            self.kubeconfig = self.dir / "kubeconfig"
            self.kube.write_kubeconfig(self.kubeconfig)
            k8s.ApiextensionsV1Api(self.api).create_custom_resource_definition(build_crd())  # type: ignore[arg-type]
        else:
            self.api = k8s_config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            self.kubeconfig = Path(kubeconfig)
            self.ns = f"ct-bench-{secrets.token_hex(4)}"  # a namespace of its own per run
            apply_crd(self.api)
        self.api.user_agent = BENCH_UA
        k8s.CoreV1Api(self.api).create_namespace({"metadata": {"name": self.ns}})  # type: ignore[arg-type]
        if self.kube is None:
            self.watch = ReadyWatch(self.api, self.ns)
        self.sandboxes: dict[str, Any] = {}
        # (provider, account) -> the provider block of that account's Triggers
        self.specs: dict[tuple[str, int], dict[str, Any]] = {}
        credentials: dict[tuple[str, int], dict[str, str]] = {}
        if "gitlab" in self.mix:
            gitlab = self.sandboxes["gitlab"] = GitLabSandbox().start()
            users = [gitlab.add_user(f"bench-bot-{k}") for k in range(self.accounts)]
            gitlab.add_project("group/web", {user.username: MAINTAINER for user in users})
            for k, user in enumerate(users):
                self.specs["gitlab", k] = {"url": gitlab.url, "project": "group/web"}
                credentials["gitlab", k] = {"token": user.token}
        if "ack" in self.mix:
            ack = self.sandboxes["ack"] = AckSandbox().start()
            for k, cluster in enumerate(self.ack_clusters):
                account = ack.add_account(f"bench-{k}")
                ack.add_cluster(f"bench-{k}", cluster, region="cn-beijing", applications=("default/web",))
                self.specs["ack", k] = {
                    "regionId": "cn-beijing",
                    "clusterId": cluster,
                    "projectId": "default/web",
                    "type": "deployment",
                    "action": "redeploy",
                    "endpoint": ack.url,
                }
                credentials["ack", k] = {
                    "accessKeyId": account.access_key_id,
                    "accessKeySecret": account.access_key_secret,
                }
        if "swr" in self.mix:
            swr = self.sandboxes["swr"] = SwrSandbox().start()
            swr.add_repository("group", "team/web")
            for k in range(self.accounts):
                swr_account = swr.add_account(f"bench-{k}")
                self.specs["swr", k] = {
                    "region": "cn-north-4",
                    "organization": "group",
                    "repository": "team/web",
                    "appType": "deployments",
                    "application": "web",
                    "clusterNamespace": "default",
                    "clusterName": "prod",
                    "endpoint": swr.url,
                }
                credentials["swr", k] = {
                    "accessKey": swr_account.access_key,
                    "secretKey": swr_account.secret_key,
                }
        for sandbox in self.sandboxes.values():
            sandbox.faults.latency = latency
        core = k8s.CoreV1Api(self.api)
        for (provider, k), data in credentials.items():
            body = {
                "metadata": {"name": self.secret_of(provider, k), "namespace": self.ns},
                "stringData": data,
            }
            core.create_namespaced_secret(self.ns, body)  # type: ignore[arg-type]

    def provider_of(self, i: int) -> str:
        """The i-th Trigger's provider."""
        return self.deal[i % len(self.deal)]

    def account_of(self, i: int) -> int:
        """The i-th Trigger's account of its provider: round-robin too."""
        return (i // len(self.deal)) % self.accounts

    @staticmethod
    def secret_of(provider: str, account: int) -> str:
        return f"{provider}-credentials" + (f"-{account}" if account else "")

    @property
    def real(self) -> bool:
        """A real API server: what only the emulator can tell (requests per client, whether kopf is
        watching yet, the namespace controller's order) is not measured."""
        return self.kube is None

    def scope(self) -> dict[str, str]:
        """The operator's environment that confines it to this world's namespace on a real cluster,
        where other Triggers may live (on the emulator it watches the whole cluster, as before)."""
        return {"CLOUDTRIGGERS_NAMESPACES": self.ns} if self.real else {}

    def close(self) -> None:
        for sandbox in self.sandboxes.values():
            sandbox.stop()
        if self.kube is not None:
            self.kube.stop()
            return
        assert self.watch is not None
        self.watch.stop()
        # What is left (the operator is stopped) loses our finalizer so that the namespace can go.
        # So do the credentials Secrets the operator held for them.
        custom, core = k8s.CustomObjectsApi(self.api), k8s.CoreV1Api(self.api)
        unheld = {"metadata": {"finalizers": None}}
        listed = cast(dict[str, Any], custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL))
        for item in listed["items"]:
            if item["metadata"].get("finalizers"):
                name = item["metadata"]["name"]
                custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, unheld)
        for secret in core.list_namespaced_secret(self.ns).items:
            if secret.metadata and secret.metadata.finalizers and secret.metadata.name:
                core.patch_namespaced_secret(secret.metadata.name, self.ns, unheld)
        with contextlib.suppress(k8s.ApiException):
            core.delete_namespace(self.ns)

    def calls(self) -> list[tuple[str, Any]]:
        """Every provider request the sandboxes saw, as (provider, record)."""
        return [(p, c) for p, sb in self.sandboxes.items() for c in sb.calls()]

    def clear_requests(self) -> None:
        for sandbox in self.sandboxes.values():
            sandbox.clear_requests()

    def _operator_total(self) -> int:
        kube = self.kube
        if kube is None:
            return 0
        counts = kube.call(lambda: _async(dict(kube.emulator.requests_by_agent)))
        return sum(n for agent, n in counts.items() if agent != BENCH_UA)

    def operator_requests(self, since: int = 0) -> int:
        """Requests the operator (kopf and its Kubernetes client) sent since the mark."""
        return self._operator_total() - since

    def requests_per(self, since: int, n: float) -> float | None:
        """operator_requests per `n`; None on a real API server, which does not count them for us."""
        return None if self.real else round(self.operator_requests(since) / n, 2)

    def request_mark(self) -> int:
        return self._operator_total()

    def create_all(self, n: int) -> dict[str, float]:
        custom = k8s.CustomObjectsApi(self.api)
        started: dict[str, float] = {}

        def create(i: int) -> None:
            name = f"t{i:05d}"
            provider, account = self.provider_of(i), self.account_of(i)
            block = dict(self.specs[provider, account])
            if provider == "ack":
                # An ACK trigger is one application's redeploy hook: each Trigger its own application,
                # as in a real cluster (one application with every trigger of the run would make each
                # create's DescribeTrigger list them all).
                block["projectId"] = f"default/web-{i:05d}"
                self.sandboxes["ack"].add_application(block["clusterId"], block["projectId"])
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Trigger",
                "metadata": {"name": name, "namespace": self.ns},
                "spec": {
                    provider: block,
                    "credentialsSecretRef": {"name": self.secret_of(provider, account)},
                },
            }
            started[name] = time.monotonic()
            custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(n)))
        return started

    def provider_objects(self) -> int:
        """Provider triggers alive in the sandboxes."""
        count = 0
        for provider, sandbox in self.sandboxes.items():
            if provider == "gitlab":
                count += len(sandbox.triggers("group/web"))
            elif provider == "ack":
                count += sum(len(sandbox.triggers(cluster)) for cluster in self.ack_clusters)
            else:
                count += len(sandbox.triggers("group", "team/web"))
        return count

    def namespace_gone(self) -> bool:
        if self.kube is not None:
            return self.kube.get("v1/namespaces", None, self.ns) is None
        try:
            k8s.CoreV1Api(self.api).read_namespace(self.ns)
        except k8s.ApiException as e:
            if e.status == 404:
                return True
            raise
        return False

    def ready_names(self, names: Iterable[str]) -> set[str]:
        """Which of `names` are Ready, read in the emulator's loop without copying any object: the
        loop also serves the operator, and the measurement must not compete with it (so only the
        Triggers asked about are looked at, not every object the emulator holds)."""
        if self.kube is None:
            assert self.watch is not None
            return self.watch.ready(names)
        kube = self.kube
        emulator = kube.emulator
        resource = kmock.resource(TRIGGERS)
        asked = list(names)
        ns = self.ns

        async def scan() -> set[str]:
            out = set()
            for name in asked:
                obj = emulator._live((resource, ns, name))
                if obj is None:
                    continue
                for c in (obj.raw.get("status") or {}).get("conditions") or []:
                    if c.get("type") == "Ready" and c.get("status") == "True":
                        out.add(name)
            return out

        return set(kube.call(scan))


async def _async(value: Any) -> Any:
    return value


def _die_with_parent() -> None:
    """An operator left behind by a killed benchmark would keep calling whatever next listens on
    its API server's port (a later test's sandbox): it gets SIGTERM when the benchmark dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Proc:
    """An operator subprocess with its resource usage read from /proc."""

    def __init__(self, argv: list[str], world: World, env: dict[str, str], log: Path) -> None:
        self.proc = subprocess.Popen(
            argv,
            # Every operator (ours, the floor, the shape floor) runs with the image's malloc setting
            # (Dockerfile: MALLOC_ARENA_MAX=2), as deployed; the environment may say otherwise.
            env={"MALLOC_ARENA_MAX": "2", **os.environ, "KUBECONFIG": str(world.kubeconfig), **env},
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    def _status_mib(self, field: str) -> float:
        m = re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{self.proc.pid}/status").read_text())
        return int(m.group(1)) / 1024 if m else 0.0

    def peak_rss_mib(self) -> float:
        return self._status_mib("VmHWM")

    def rss_mib(self) -> float:
        return self._status_mib("VmRSS")

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu() -> float | None:
    """BENCH_SERVER_PID: the API server is a process of this machine (`python -m bench.apiserver`);
    its CPU seconds, so that a run through a kubeconfig shows the server's work too."""
    pid = os.environ.get("BENCH_SERVER_PID")
    return _cpu_seconds(int(pid)) if pid else None


def _wait_watched(world: World, timeout: float = 60) -> None:
    if world.kube is None:
        time.sleep(REAL_SERVER_SETTLE)  # a real API server does not tell who watches
        return
    world.kube.wait_watched(TRIGGERS, timeout=timeout)


def _operator(world: World, cfg: Config, resync: float | None = None) -> Proc:
    env = {
        "CLOUDTRIGGERS_HTTP_PORT": "0",
        # At its defaults the operator logs as deployed (info: a line a create, to operator.log).
        "CLOUDTRIGGERS_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "info" if cfg.defaults else "warning"),
        "CLOUDTRIGGERS_RESYNC_PERIOD": str(resync or 3600),
        "CLOUDTRIGGERS_ALLOWED_ENDPOINTS": "http://127.0.0.1",  # the sandboxes
    }
    if not cfg.defaults:
        env |= {
            "CLOUDTRIGGERS_WORKERS": str(cfg.workers or 2 * cfg.concurrency),
            "CLOUDTRIGGERS_PROVIDER_CONCURRENCY": str(cfg.concurrency),
            "CLOUDTRIGGERS_RATE": str(cfg.rate),
            "CLOUDTRIGGERS_BURST": str(max(cfg.concurrency, 20)),
        }
    env |= world.scope()
    return Proc([sys.executable, "-m", "cloudtriggers.cli", "run"], world, env, world.dir / "operator.log")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def operation(provider: str, call: Any) -> str:
    """A provider request as its operation: ACK's action, else method and path with ids generalised."""
    if provider == "ack":
        return str(call.action)
    path = re.sub(r"/triggers/[^/]+$", "/triggers/{id}", call.path)
    return re.sub(r"/\d+(?=/|$)", "/{id}", f"{call.method} {path}")


def _profiler(proc: Proc) -> subprocess.Popen[bytes] | None:
    """BENCH_PYSPY=<file>: py-spy samples the operator through the create phase (collapsed stacks),
    BENCH_PYSPY_RATE times a second (default 200)."""
    out = os.environ.get("BENCH_PYSPY")
    if not out:
        return None
    rate = os.environ.get("BENCH_PYSPY_RATE", "200")  # samples a second
    argv = ["py-spy", "record", "--pid", str(proc.proc.pid), "--format", "raw", "-r", rate, "-o", out]
    return subprocess.Popen([*argv, *os.environ.get("BENCH_PYSPY_FLAGS", "").split()])


def _create_phase(world: World, proc: Proc, cfg: Config) -> Phase:
    _wait_watched(world)
    profiler = _profiler(proc)
    mark = world.request_mark()
    world.clear_requests()
    t0 = time.monotonic()
    world_cpu, proc_cpu, server_cpu = time.process_time(), proc.cpu_seconds(), _server_cpu()
    started = world.create_all(cfg.n)
    ready_at: dict[str, float] = {}
    rss: list[tuple[float, int, float]] = []  # seconds, Ready, RSS MiB: once a second
    sampled = 0.0
    deadline = t0 + cfg.timeout
    while len(ready_at) < cfg.n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(ready_at)} of {cfg.n} Triggers Ready after {cfg.timeout} s")
        now = time.monotonic()
        for name in world.ready_names(started.keys() - ready_at.keys()):
            ready_at[name] = now
        if now - sampled >= 1.0:
            sampled = now
            rss.append((round(now - t0, 1), len(ready_at), round(proc.rss_mib(), 1)))
        time.sleep(0.1)
    total = max(ready_at.values()) - t0
    world_cpu, proc_cpu = time.process_time() - world_cpu, proc.cpu_seconds() - proc_cpu
    server_after = _server_cpu()
    # What was sent until then: a write the operator moves past the last Ready (its Events) is not.
    until_ready = world.requests_per(mark, cfg.n)
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(30)
    per = [ready_at[k] - started[k] for k in ready_at]
    per_provider = {p: sum(world.provider_of(i) == p for i in range(cfg.n)) for p in world.mix}
    calls: dict[str, float] = {}
    for provider, c in world.calls():
        op = f"{provider} {operation(provider, c)}"
        calls[op] = calls.get(op, 0) + 1 / per_provider[provider]
    time.sleep(1.0)  # let the last status writes and events land before counting
    return Phase(
        seconds=round(total, 3),
        p50=round(statistics.median(per), 3),
        p99=round(_percentile(per, 0.99), 3),
        provider_calls={k: round(v, 3) for k, v in sorted(calls.items())},
        kube_requests=world.requests_per(mark, cfg.n),
        peak_rss_mib=round(proc.peak_rss_mib(), 1),
        cpu_seconds=round(proc.cpu_seconds(), 2),
        # The bench process's own CPU until all Ready: the emulated API, the sandboxes, the clients.
        extra={
            "world_cpu_seconds": round(world_cpu, 2),
            "phase_cpu_seconds": round(proc_cpu, 2),
            "kube_requests_until_ready": until_ready,
            **(
                {"server_cpu_seconds": round(server_after - server_cpu, 2)}
                if server_cpu is not None and server_after is not None
                else {}
            ),
            "rss_timeline": rss,
        },
    )


def _restart_phase(world: World, proc: Proc, cfg: Config) -> tuple[Phase, Proc]:
    proc.stop()
    world.clear_requests()
    mark = world.request_mark()
    t0 = time.monotonic()
    proc = _operator(world, cfg)
    _wait_watched(world)
    # Idle: no provider call and no Kubernetes request from the operator for 2 s.
    last_change, seen = time.monotonic(), (-1, -1)
    while time.monotonic() - last_change < 2.0:
        now = (len(world.calls()), world.operator_requests(mark))
        if now != seen:
            seen, last_change = now, time.monotonic()
        time.sleep(0.1)
    calls = [c for _, c in world.calls()]
    writes = sum(1 for c in calls if c.method not in {"GET", "HEAD"})
    return (
        Phase(
            seconds=round(last_change - t0, 3),
            provider_calls={"writes": writes, "reads_per_trigger": round((len(calls) - writes) / cfg.n, 3)},
            kube_requests=world.requests_per(mark, cfg.n),
            peak_rss_mib=round(proc.peak_rss_mib(), 1),
            cpu_seconds=round(proc.cpu_seconds(), 2),
        ),
        proc,
    )


def _steady_phase(world: World, proc: Proc, cfg: Config) -> tuple[Phase, Proc]:
    proc.stop()
    proc = _operator(world, cfg, resync=cfg.resync)
    _wait_watched(world)
    # Steady state, not the transition into it: no Trigger is checked within half a period of its
    # last sync, so the first moments after a create or a restart are quieter than the rest.
    time.sleep(cfg.resync)
    world.clear_requests()
    mark = world.request_mark()
    t0 = time.time()
    duration = cfg.resync * cfg.steady_periods
    time.sleep(duration)
    kube_per_minute = world.requests_per(mark, duration / 60)
    calls = [c for _, c in world.calls() if c.at >= t0]
    per_minute = len(calls) / duration * 60
    expected = cfg.n / cfg.resync * 60
    # Evenness: calls in 20 equal slices of the window; the coefficient of variation of the counts.
    slices = [0] * 20
    for c in calls:
        slices[min(19, int((c.at - t0) / duration * 20))] += 1
    mean = statistics.mean(slices)
    cv = statistics.pstdev(slices) / mean if mean else 0.0
    return (
        Phase(
            seconds=round(duration, 1),
            provider_calls={"per_minute": round(per_minute, 1), "expected_per_minute": round(expected, 1)},
            kube_requests=kube_per_minute,  # per minute, all Triggers (target: <= N / resync)
            peak_rss_mib=round(proc.peak_rss_mib(), 1),
            cpu_seconds=round(proc.cpu_seconds(), 2),
            extra={
                "slices": slices,
                "cv": round(cv, 3),
                "writes": sum(c.method not in {"GET", "HEAD"} for c in calls),
            },
        ),
        proc,
    )


def _namespace_phase(world: World, proc: Proc, cfg: Config) -> Phase:
    """`kubectl delete namespace` of the namespace holding every Trigger and credentials Secret: the
    emulated namespace controller deletes its content in a random order (sandbox/namespaces.py)."""
    before = world.provider_objects()
    mark = world.request_mark()
    t0 = time.monotonic()
    k8s.CoreV1Api(world.api).delete_namespace(world.ns)
    deadline = t0 + cfg.timeout
    while not world.namespace_gone():
        if time.monotonic() > deadline:
            raise TimeoutError(f"namespace {world.ns} still there after {cfg.timeout} s")
        time.sleep(0.1)
    seconds = time.monotonic() - t0
    orders = world.kube.emulator.namespace_orders if world.kube is not None else []
    return Phase(
        seconds=round(seconds, 3),
        kube_requests=world.requests_per(mark, cfg.n),
        peak_rss_mib=round(proc.peak_rss_mib(), 1),
        cpu_seconds=round(proc.cpu_seconds(), 2),
        extra={
            "provider_triggers_before": before,
            "provider_triggers_left": world.provider_objects(),
            "seed": orders[0][1] if orders else None,
        },
    )


def run_operator(cfg: Config) -> dict[str, Phase]:
    world = World(cfg.latency, cfg.mix, cfg.accounts, cfg.kubeconfig)
    phases: dict[str, Phase] = {}
    proc = _operator(world, cfg)
    try:
        phases["create"] = _create_phase(world, proc, cfg)
        if cfg.restart:
            phases["restart"], proc = _restart_phase(world, proc, cfg)
        if cfg.steady:
            phases["steady"], proc = _steady_phase(world, proc, cfg)
        if cfg.namespace:
            phases["namespace"] = _namespace_phase(world, proc, cfg)
    finally:
        proc.stop()
        world.close()
    return phases


def run_floor(cfg: Config, script: Path = FLOOR) -> Phase:
    """A kopf operator script (the floor, or the shape floor) against a world of its own."""
    world = World(cfg.latency, cfg.mix, cfg.accounts, cfg.kubeconfig)
    scope = ["--namespace", world.ns] if world.real else ["-A"]
    proc = Proc(
        [sys.executable, "-m", "kopf", "run", "--standalone", *scope, "--quiet", str(script)],
        world,
        {"CLOUDTRIGGERS_WORKERS": str(cfg.workers or 2 * cfg.concurrency)},
        world.dir / f"{script.stem}.log",
    )
    try:
        phase = _create_phase(world, proc, cfg)
        if cfg.namespace:
            phase.extra["namespace_seconds"] = _namespace_phase(world, proc, cfg).seconds
        return phase
    finally:
        proc.stop()
        world.close()


def _median(runs: list[Phase]) -> Phase:
    """The run with the median time until all Ready; every run's time is kept in extra["runs"]."""
    ordered = sorted(runs, key=lambda ph: ph.seconds)
    chosen = ordered[(len(ordered) - 1) // 2]
    if len(runs) > 1:
        chosen.extra["runs"] = [ph.seconds for ph in runs]
    return chosen


def run(cfg: Config) -> dict[str, Any]:
    result: dict[str, Any] = {
        "config": asdict(cfg),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        },
    }
    # Rounds interleave the operators (ours, the floor, the shape floor, then again), so that a drift
    # of this machine's speed over minutes falls on each alike; each round's ratio is kept too.
    once = replace(cfg, restart=False, steady=False, namespace=False)
    ours: list[Phase] = []
    floors: list[Phase] = []
    shapes: list[Phase] = []
    phases: dict[str, Phase] = {}
    for i in range(cfg.repeat):
        if i == 0:
            phases = run_operator(cfg)
            ours.append(phases["create"])
        else:
            ours.append(run_operator(once)["create"])
        if cfg.floor:
            floors.append(run_floor(cfg if i == 0 else once))
            if cfg.shape:
                shapes.append(run_floor(cfg if i == 0 else once, SHAPE))
    pairs = zip(ours, floors, strict=False)
    rounds = [round(o.seconds / f.seconds, 2) if f.seconds else None for o, f in pairs]
    phases["create"] = _median(ours)
    result["cloudtriggers"] = {k: asdict(v) for k, v in phases.items()}
    if cfg.floor:
        floor = _median(floors)
        result["floor"] = asdict(floor)
        result["ratio_to_floor"] = (
            round(phases["create"].seconds / floor.seconds, 2) if floor.seconds else None
        )
        measured = [r for r in rounds if r is not None]
        if len(rounds) > 1 and len(measured) == len(rounds):
            result["ratio_by_round"] = measured
            result["ratio_median_of_rounds"] = statistics.median(measured)
        if cfg.shape:
            shape = _median(shapes)
            result["shape"] = asdict(shape)
            result["ratio_shape_to_floor"] = (
                round(shape.seconds / floor.seconds, 2) if floor.seconds else None
            )
        if cfg.latency:
            bound = 1.2 * (cfg.n * cfg.latency / cfg.concurrency) + floor.seconds
            result["latency_target_seconds"] = round(bound, 2)
    result["verdicts"] = [asdict(v) for v in targets.verdicts(result)]
    return result


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    ct = result["cloudtriggers"]
    create = ct["create"]
    mix = ", ".join(f"{k}={v}" for k, v in cfg["mix"].items())
    rows = [
        f"N = {cfg['n']} ({mix}; {cfg.get('accounts', 1)} account(s) each), "
        f"provider latency {cfg['latency'] * 1000:.0f} ms, "
        f"provider concurrency C = {cfg['concurrency']}, workers {cfg['workers'] or 2 * cfg['concurrency']}"
        + (" (the operator's defaults: no rate cap, its own pacing)" if cfg.get("defaults") else ""),
        "",
        "| measure | cloudtriggers | shape floor (kopf + our handlers and Kubernetes calls) "
        "| floor (kopf, status only) |",
        "|---|---|---|---|",
    ]
    floor = result.get("floor") or {}
    shape = result.get("shape") or {}

    def row(measure: str, ours: Any, fmt: Any) -> None:
        rows.append(f"| {measure} | {ours} | {fmt(shape)} | {fmt(floor)} |")

    def get(key: str, unit: str = "") -> Any:
        return lambda d: f"{d[key]}{unit}" if d.get(key) is not None else "-"

    def seconds(d: dict[str, Any]) -> str:
        if "seconds" not in d:
            return "-"
        runs = (d.get("extra") or {}).get("runs")
        return f"{d['seconds']} s" + (f" (runs {min(runs)}-{max(runs)})" if runs else "")

    row("time until all Ready", seconds(create), seconds)
    row(
        "per Trigger p50 / p99",
        f"{create['p50']} / {create['p99']} s",
        lambda d: f"{d['p50']} / {d['p99']} s" if d else "-",
    )

    def requests(d: dict[str, Any]) -> str:
        if not d:
            return "-"
        if d.get("kube_requests") is None:
            return "not counted (real API server)"
        early = (d.get("extra") or {}).get("kube_requests_until_ready")
        return f"{d['kube_requests']}" + (f" ({early} until all Ready)" if early is not None else "")

    row("Kubernetes API requests per Trigger", requests(create), requests)
    row("peak RSS", f"{create['peak_rss_mib']} MiB", get("peak_rss_mib", " MiB"))
    row("CPU seconds", create["cpu_seconds"], get("cpu_seconds"))

    def phase_cpu(d: dict[str, Any]) -> str:
        extra = d.get("extra") or {}
        if "phase_cpu_seconds" not in extra:
            return "-"
        server = f" / {extra['server_cpu_seconds']}" if "server_cpu_seconds" in extra else ""
        return f"{extra['phase_cpu_seconds']} / {extra['world_cpu_seconds']}{server}"

    row(
        "CPU seconds until all Ready: operator / bench process (sandboxes, clients, the emulated API)"
        + (" / API server (BENCH_SERVER_PID)" if os.environ.get("BENCH_SERVER_PID") else ""),
        phase_cpu(create),
        phase_cpu,
    )
    calls = ", ".join(f"{k}: {v}" for k, v in create["provider_calls"].items())
    rows.append(f"| provider calls per Trigger | {calls} | - | - |")
    if result.get("ratio_to_floor") is not None:
        shape_ratio = result.get("ratio_shape_to_floor") or "-"
        rows.append(
            f"| ratio to floor (time until all Ready) | {result['ratio_to_floor']} | {shape_ratio} | 1 |"
        )
    if result.get("ratio_by_round"):
        rows.append(
            f"| ratio to floor, each round (the operators interleaved) | median "
            f"{result['ratio_median_of_rounds']} ({', '.join(map(str, result['ratio_by_round']))}) | - | 1 |"
        )
    if "latency_target_seconds" in result:
        rows.append(
            f"| latency target 1.2 x (N x latency / C) + floor | {result['latency_target_seconds']} s | | |"
        )
    if "restart" in ct:
        r = ct["restart"]
        calls_r = r["provider_calls"]
        rows.append(
            "| restart: provider writes / reads per Trigger / time until idle | "
            f"{calls_r['writes']} / {calls_r['reads_per_trigger']} / {r['seconds']} s | | |"
        )
    if "steady" in ct:
        s = ct["steady"]
        calls_s = s["provider_calls"]
        rows.append(
            "| steady state: provider calls per minute (expected N / resync) | "
            f"{calls_s['per_minute']} ({calls_s['expected_per_minute']}), spread CV {s['extra']['cv']} | | |"
        )
        steady_kube = "not counted (real API server)" if s["kube_requests"] is None else s["kube_requests"]
        rows.append(f"| steady state: Kubernetes requests per minute | {steady_kube} | | |")
    if "namespace" in ct:
        ns = ct["namespace"]["extra"]

        def ns_seconds(d: dict[str, Any]) -> str:
            got = (d.get("extra") or {}).get("namespace_seconds")
            return f"{got} s" if got is not None else "-"

        row(
            "namespace deletion: time until gone / provider triggers left",
            f"{ct['namespace']['seconds']} s / "
            f"{ns['provider_triggers_left']} of {ns['provider_triggers_before']}",
            ns_seconds,
        )
    found = [targets.Verdict(**v) for v in result.get("verdicts", [])]
    return "\n".join(rows) + "\n" + ("\n" + targets.markdown(found) if found else "")


def save(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cfg = result["config"]
    mix = "-".join(f"{k}{v}" for k, v in cfg["mix"].items()) if cfg["mix"] != {"gitlab": 1} else ""
    stem = f"n{cfg['n']}-lat{int(cfg['latency'] * 1000)}ms" + (f"-{mix}" if mix else "")
    stem += f"-acc{cfg['accounts']}" if cfg.get("accounts", 1) > 1 else ""
    stem += "-defaults" if cfg.get("defaults") else ""
    stem += "-cluster" if cfg.get("kubeconfig") else ""  # a real API server's, kept apart
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    (out / f"{stem}.md").write_text(markdown(result))
