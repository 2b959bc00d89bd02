"""The benchmark itself runs: a few Triggers of every provider through all its phases.

Not a timed test (the targets live in bench/README.md); it checks that what the benchmark reports
is measured: every Trigger got Ready, each provider was called, a restart wrote nothing, the floor
ran on the same world, and the JSON and Markdown outputs were written.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from bench.run import Config, Phase, markdown, parse_mix, run, save

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, V1ObjectMeta


def _name(meta: V1ObjectMeta | None) -> str:
    assert meta is not None and meta.name is not None  # as every object the API server lists
    return meta.name


def test_parse_mix() -> None:
    assert parse_mix("gitlab=2,ack,swr=0") == {"gitlab": 2, "ack": 1, "swr": 0}
    with pytest.raises(ValueError, match="unknown provider"):
        parse_mix("github=1")
    with pytest.raises(ValueError, match="names no provider"):
        parse_mix("swr=0")


def test_every_phase_of_a_small_mixed_run(tmp_path: Path) -> None:
    cfg = Config(
        n=9, mix={"gitlab": 1, "ack": 1, "swr": 1}, accounts=2, resync=5.0, steady_periods=1.0, timeout=60.0
    )
    result = run(cfg)
    ct = result["cloudtriggers"]
    create = ct["create"]
    assert create["seconds"] > 0 and create["p50"] <= create["p99"]
    # Each provider was asked to create exactly one trigger per Trigger (3 of each).
    calls = create["provider_calls"]
    assert calls["ack CreateTrigger"] == 1.0
    assert calls["gitlab POST /api/v4/projects/{id}/triggers"] == 1.0
    assert calls["swr POST /v2/manage/namespaces/group/repos/team%24web/triggers"] == 1.0
    assert 4 <= create["kube_requests"] <= 10
    # Counted again after the last Ready: what the operator moved past it (its Events) is in the
    # total only.
    assert 0 < create["extra"]["kube_requests_until_ready"] <= create["kube_requests"]
    assert create["peak_rss_mib"] > 20 and create["cpu_seconds"] > 0
    restart = ct["restart"]["provider_calls"]
    assert restart["writes"] == 0 and restart["reads_per_trigger"] <= 1
    steady = ct["steady"]
    assert steady["provider_calls"]["expected_per_minute"] == 9 / 5.0 * 60
    assert steady["provider_calls"]["per_minute"] > 0 and steady["extra"]["writes"] == 0
    # Deleting the namespace deletes every provider trigger (the emulated namespace controller).
    namespace = ct["namespace"]
    assert namespace["extra"]["provider_triggers_before"] == 9
    assert namespace["extra"]["provider_triggers_left"] == 0
    assert namespace["seconds"] > 0
    floor = result["floor"]
    assert floor["seconds"] > 0 and floor["kube_requests"] >= 1
    assert floor["extra"]["namespace_seconds"] > 0
    assert result["ratio_to_floor"] == round(create["seconds"] / floor["seconds"], 2)
    # Issue 14's targets this run measured, judged; not the timed ones (a CI machine's speed is no
    # measure), but a restart that calls the provider or a namespace deletion that leaves a trigger
    # behind is missed on any machine.
    judged = {v["target"].split(":")[0]: v["met"] for v in result["verdicts"]}
    assert (
        judged["restart with all Ready"] and judged["deleting the namespace deletes every provider trigger"]
    )
    assert "steady state" in judged and not any(t.startswith("all Ready") for t in judged)  # not --defaults

    save(result, tmp_path)
    saved = json.loads((tmp_path / "n9-lat0ms-gitlab1-ack1-swr1-acc2.json").read_text())
    assert saved["config"]["mix"] == {"gitlab": 1, "ack": 1, "swr": 1} and saved["config"]["accounts"] == 2
    table = (tmp_path / "n9-lat0ms-gitlab1-ack1-swr1-acc2.md").read_text()
    assert table == markdown(result) and "| time until all Ready |" in table
    assert "| target (issue 14) | measured | verdict |" in table
    assert (
        f"{create['kube_requests']} ({create['extra']['kube_requests_until_ready']} until all Ready)" in table
    )


def test_repeated_runs_report_the_median_run() -> None:
    from bench.run import _median

    runs = [
        Phase(seconds=3.0, cpu_seconds=3),
        Phase(seconds=1.0, cpu_seconds=1),
        Phase(seconds=2.0, cpu_seconds=2),
    ]
    chosen = _median(runs)
    assert chosen.seconds == 2.0 and chosen.cpu_seconds == 2 and chosen.extra["runs"] == [3.0, 1.0, 2.0]
    assert _median([Phase(seconds=1.0), Phase(seconds=5.0)]).seconds == 1.0  # the lower of two
    assert "runs" not in _median([Phase(seconds=1.0)]).extra


def test_repeated_rounds_interleave_the_operators(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each round runs ours, then the floor, then the shape floor: a drift of the machine's speed
    over minutes falls on each alike, and each round's own ratio is reported beside the medians."""
    import bench.run as bench_run

    order: list[str] = []
    ours = iter([2.0, 3.0, 2.4])
    floors = iter([1.0, 2.0, 1.5])

    def fake_operator(cfg: Config) -> dict[str, Phase]:
        order.append("ours" if cfg.steady else "ours-once")
        return {"create": Phase(seconds=next(ours))}

    def fake_floor(cfg: Config, script: Path = bench_run.FLOOR) -> Phase:
        order.append("shape" if script == bench_run.SHAPE else "floor")
        return Phase(seconds=next(floors) if script != bench_run.SHAPE else 9.0)

    monkeypatch.setattr(bench_run, "run_operator", fake_operator)
    monkeypatch.setattr(bench_run, "run_floor", fake_floor)
    result = run(Config(n=1, repeat=3))
    assert order == ["ours", "floor", "shape", "ours-once", "floor", "shape", "ours-once", "floor", "shape"]
    assert result["ratio_by_round"] == [2.0, 1.5, 1.6]
    assert result["ratio_median_of_rounds"] == 1.6
    assert result["ratio_to_floor"] == round(2.4 / 1.5, 2)  # the medians' ratio, as before
    assert "each round" in markdown(result)


def test_the_api_servers_cpu_is_read_when_its_process_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from bench.run import _server_cpu

    monkeypatch.delenv("BENCH_SERVER_PID", raising=False)
    assert _server_cpu() is None
    monkeypatch.setenv("BENCH_SERVER_PID", str(os.getpid()))
    before = _server_cpu()
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    after = _server_cpu()
    assert before is not None and after is not None and after >= before + 0.02


def test_the_bench_runs_on_any_api_server_from_a_kubeconfig(tmp_path: Path) -> None:
    """`--kubeconfig`: the same phases against an API server the bench does not host (here the
    emulator, reached only through a kubeconfig, as a real one would be). Each world has a namespace
    of its own and the operators are confined to it: a Trigger elsewhere is never touched."""
    from kubernetes import client as k8s

    from cloudtriggers.sandbox.kube import KubeServer, kube_client

    server = KubeServer().start()
    try:
        kubeconfig = tmp_path / "kubeconfig"
        server.write_kubeconfig(kubeconfig)
        api = kube_client(server.url)
        k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace.model_validate({"metadata": {"name": "users"}}))
        theirs = {
            "apiVersion": "cloudtriggers.io/v1alpha1",
            "kind": "Trigger",
            "metadata": {"name": "prod", "namespace": "users"},
            "spec": {"gitlab": {"project": "team/prod"}, "credentialsSecretRef": {"name": "gl"}},
        }
        custom = k8s.CustomObjectsApi(api)
        custom.create_namespaced_custom_object("cloudtriggers.io", "v1alpha1", "users", "triggers", theirs)

        cfg = Config(
            n=4,
            kubeconfig=str(kubeconfig),
            shape=False,
            namespace=False,  # the world's close() then has to free its namespace itself
            resync=5.0,
            steady_periods=1.0,
            timeout=60.0,
        )
        result = run(cfg)
        ct = result["cloudtriggers"]
        create = ct["create"]
        assert create["seconds"] > 0 and create["kube_requests"] is None  # only the emulator counts
        assert ct["restart"]["provider_calls"]["writes"] == 0
        assert ct["steady"]["provider_calls"]["per_minute"] > 0 and ct["steady"]["kube_requests"] is None
        # The create row for ours and the floor (no shape floor here), and the steady row.
        table = markdown(result)
        assert table.count("not counted (real API server)") == 3
        assert not re.search(r"\d until all Ready\)", table)  # nor counted until all Ready
        assert result["floor"]["seconds"] > 0

        after = cast(
            dict[str, Any],
            custom.get_namespaced_custom_object("cloudtriggers.io", "v1alpha1", "users", "triggers", "prod"),
        )
        assert "status" not in after and not after["metadata"].get("finalizers")

        def ours() -> list[str]:
            names = [_name(ns.metadata) for ns in k8s.CoreV1Api(api).list_namespace().items]
            return [n for n in names if n.startswith("ct-bench-")]

        # Each world's namespace goes with it, though the operator held its Triggers and the
        # credentials Secret with finalizers when it stopped.
        deadline = time.monotonic() + 30
        while ours() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ours() == []
    finally:
        server.stop()


def test_bench_apiserver_serves_the_emulated_api_alone_through_a_kubeconfig(tmp_path: Path) -> None:
    """`python -m bench.apiserver KUBECONFIG`: the stand-in for a real API server, in its own process."""
    import signal
    import subprocess
    import sys

    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.apiserver", str(kubeconfig)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert "serving http://127.0.0.1:" in proc.stdout.readline()  # after the kubeconfig is written
        # kubernetes.config is not annotated: the client it builds, typed.
        new_client = cast(Callable[..., "ApiClient"], k8s_config.new_client_from_config)
        api = new_client(config_file=str(kubeconfig))
        names = [_name(ns.metadata) for ns in k8s.CoreV1Api(api).list_namespace().items]
        assert "default" in names
        # No CRD of ours: the bench applies it, as on a cluster.
        crds = k8s.ApiextensionsV1Api(api).list_custom_resource_definition().items
        assert "triggers.cloudtriggers.io" not in [_name(c.metadata) for c in crds]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
