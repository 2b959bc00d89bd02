"""bench/targets.py: issue 14's targets read against a run's result, and `--check`'s exit status.

The results here are written by hand in the shape bench/run.py saves (its own test checks that shape
on a real run): what is checked is which targets a run is judged on and where each bound falls.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from bench.run import markdown
from bench.targets import verdicts


def result(**config: Any) -> dict[str, Any]:
    """A 500-Trigger run at the operator's defaults, every phase measured, every target met."""
    cfg = {"n": 500, "latency": 0.0, "defaults": True, "resync": 20.0, "mix": {"gitlab": 1}}
    cfg.update(config)
    create = {
        "seconds": 4.0,
        "p50": 2.0,
        "p99": 2.5,
        "provider_calls": {},
        "kube_requests": 4.0,
        "peak_rss_mib": 115.0,
        "cpu_seconds": 3.0,
        "extra": {},
    }
    return {
        "config": {"concurrency": 8, "workers": 16, "accounts": 1, **cfg},
        "cloudtriggers": {
            "create": create,
            "restart": {"seconds": 5.0, "provider_calls": {"writes": 0, "reads_per_trigger": 0.0}},
            "steady": {
                "provider_calls": {"per_minute": 1530.0, "expected_per_minute": 1500.0},
                "kube_requests": 32.0,
                "extra": {"cv": 0.03},
            },
            "namespace": {
                "seconds": 3.0,
                "extra": {"provider_triggers_before": 500, "provider_triggers_left": 0},
            },
        },
        "floor": {**create, "seconds": 3.0, "peak_rss_mib": 100.0, "kube_requests": 2.0},
        "ratio_to_floor": 1.33,
        "ratio_by_round": [1.74, 1.3, 1.29],
        "ratio_median_of_rounds": 1.3,
    }


def test_a_run_at_the_defaults_is_judged_on_each_target_it_measured() -> None:
    found = verdicts(result())
    assert [v.target for v in found] == [
        "all Ready <= 1.5 x the floor, at the operator's defaults",
        "restart with all Ready: idle within 30 s, 0 provider writes and reads",
        "steady state: provider calls a minute = N / resync +- 10%",
        "steady state: Kubernetes requests a minute <= N / resync",
        "deleting the namespace deletes every provider trigger",
    ]
    assert all(v.met for v in found)
    # The median of the interleaved rounds is what is judged; every round is shown.
    assert found[0].figure == "1.3 x: 4.0 s against 3.0 s (rounds 1.74, 1.3, 1.29)"
    assert found[1].figure == "idle after 5.0 s, 0 writes, 0.0 reads a Trigger"
    assert found[2].figure == "1530.0 against 1500.0 (spread CV 0.03)"
    assert found[3].figure == "32.0 against 1500.0"
    assert found[4].figure == "0 of 500 left"


@pytest.mark.parametrize(
    ("change", "missed"),
    [
        (lambda r: r.update(ratio_median_of_rounds=1.51), "all Ready <= 1.5 x the floor"),
        (lambda r: r["cloudtriggers"]["restart"].update(seconds=30.5), "restart with all Ready"),
        (
            lambda r: r["cloudtriggers"]["restart"]["provider_calls"].update(writes=1),
            "restart with all Ready",
        ),
        (
            lambda r: r["cloudtriggers"]["restart"]["provider_calls"].update(reads_per_trigger=0.002),
            "restart with all Ready",
        ),
        (
            lambda r: r["cloudtriggers"]["steady"]["provider_calls"].update(per_minute=1651.0),
            "provider calls",
        ),
        (
            lambda r: r["cloudtriggers"]["steady"]["provider_calls"].update(per_minute=1349.0),
            "provider calls",
        ),
        (lambda r: r["cloudtriggers"]["steady"].update(kube_requests=1501.0), "Kubernetes requests"),
        (
            lambda r: r["cloudtriggers"]["namespace"]["extra"].update(provider_triggers_left=1),
            "deleting the namespace",
        ),
    ],
)
def test_each_bound_is_missed_just_past_it(change: Any, missed: str) -> None:
    r = result()
    change(r)
    failed = [v.target for v in verdicts(r) if not v.met]
    assert len(failed) == 1 and missed in failed[0]


def test_the_bounds_themselves_are_met() -> None:
    r = result()
    r["ratio_median_of_rounds"] = 1.5
    r["cloudtriggers"]["restart"]["seconds"] = 30.0
    r["cloudtriggers"]["steady"]["provider_calls"]["per_minute"] = 1650.0
    r["cloudtriggers"]["steady"]["kube_requests"] = 1500.0
    assert all(v.met for v in verdicts(r))


def test_the_ratio_is_judged_only_at_the_defaults_with_no_latency_from_200() -> None:
    assert not any(v.target.startswith("all Ready <= 1.5") for v in verdicts(result(defaults=False)))
    assert not any(v.target.startswith("all Ready <= 1.5") for v in verdicts(result(n=199)))
    assert any(v.target.startswith("all Ready <= 1.5") for v in verdicts(result(n=200)))
    latency = result(latency=0.1)
    latency["latency_target_seconds"] = 9.02
    found = verdicts(latency)
    assert not any(v.target.startswith("all Ready <= 1.5") for v in found)
    (bound,) = [v for v in found if "latency" in v.target]
    assert bound.met and bound.figure == "4.0 s against 9.02 s"
    latency["cloudtriggers"]["create"]["seconds"] = 9.1
    assert not next(v for v in verdicts(latency) if "latency" in v.target).met


def test_a_single_round_is_judged_on_the_ratio_of_its_times() -> None:
    r = result()
    for key in ("ratio_by_round", "ratio_median_of_rounds"):
        del r[key]
    r["ratio_to_floor"] = 1.6
    (ratio,) = [v for v in verdicts(r) if v.target.startswith("all Ready")]
    assert not ratio.met and "rounds" not in ratio.figure


def test_memory_is_judged_at_ten_thousand_against_the_floors_peak() -> None:
    r = result(n=10_000)
    r["cloudtriggers"]["steady"]["provider_calls"].update(per_minute=30_000.0, expected_per_minute=30_000.0)
    (rss,) = [v for v in verdicts(r) if "RSS" in v.target]
    assert rss.met and rss.figure == "1.15 x: 115.0 MiB against 100.0 MiB"
    r["cloudtriggers"]["create"]["peak_rss_mib"] = 120.1
    assert not next(v for v in verdicts(r) if "RSS" in v.target).met


def test_on_a_real_api_server_kubernetes_requests_are_not_judged() -> None:
    r = result()
    r["cloudtriggers"]["steady"]["kube_requests"] = None  # not counted there
    assert not any("Kubernetes requests" in v.target for v in verdicts(r))


def test_without_a_floor_or_phases_nothing_is_judged_on_them() -> None:
    r = result()
    del r["floor"]
    for phase in ("restart", "steady", "namespace"):
        del r["cloudtriggers"][phase]
    assert verdicts(r) == []


def test_the_table_and_check_say_what_was_missed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import bench.__main__ as cli

    missed = result()
    missed["cloudtriggers"]["namespace"]["extra"]["provider_triggers_left"] = 3
    missed["verdicts"] = [asdict(v) for v in verdicts(missed)]
    table = markdown(missed)
    assert "| deleting the namespace deletes every provider trigger | 3 of 500 left | **missed** |" in table
    assert "| all Ready <= 1.5 x the floor, at the operator's defaults |" in table

    runs = iter([result(), missed, missed])
    monkeypatch.setattr(cli, "run", lambda cfg: copy.deepcopy(next_with_verdicts(runs)))
    out = ["--out", str(tmp_path)]
    assert cli.main(["--check", *out]) == 0
    assert cli.main(["--check", *out]) == 1
    assert "missed: deleting the namespace" in capsys.readouterr().err
    assert cli.main(out) == 0  # without --check the run reports and succeeds


def next_with_verdicts(runs: Any) -> dict[str, Any]:
    r: dict[str, Any] = next(runs)
    r["verdicts"] = [asdict(v) for v in verdicts(r)]
    return r
