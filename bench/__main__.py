"""python -m bench: run the benchmark, print a Markdown table, save JSON and Markdown in bench/results/."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .run import Config, markdown, parse_mix, run, save


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("-n", type=int, default=500, help="Triggers applied at once (default 500)")
    p.add_argument(
        "--mix",
        type=parse_mix,
        default={"gitlab": 1},
        help="providers and their weights, e.g. gitlab=2,ack=1,swr=1 (default gitlab)",
    )
    p.add_argument("--latency", type=float, default=0.0, help="provider latency in seconds (default 0)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="C: the operator's provider requests in flight per account (default 16)",
    )
    p.add_argument("--workers", type=int, default=0, help="the operator's threads (default 2 x C)")
    p.add_argument(
        "--resync", type=float, default=20.0, help="steady-state drift period, seconds (default 20)"
    )
    p.add_argument("--steady-periods", type=float, default=3.0, help="how many periods to watch (default 3)")
    p.add_argument(
        "--repeat", type=int, default=1, help="run the create phase and the floors K times; report the median"
    )
    p.add_argument("--accounts", type=int, default=1, help="accounts per provider (default 1)")
    p.add_argument(
        "--defaults",
        action="store_true",
        help="run the operator at its own defaults (C, workers, pacing with no rate cap); "
        "--concurrency and --workers are then ignored",
    )
    p.add_argument("--no-floor", action="store_true", help="skip the kopf floor (and the shape floor)")
    p.add_argument("--no-shape", action="store_true", help="skip the shape floor (bench/shape.py)")
    p.add_argument("--no-restart", action="store_true", help="skip the restart phase")
    p.add_argument("--no-steady", action="store_true", help="skip the steady-state phase")
    p.add_argument("--no-namespace", action="store_true", help="skip the namespace-deletion phase")
    p.add_argument(
        "--kubeconfig",
        help="run against the API server of this kubeconfig instead of the emulated one: the CRD is "
        "applied, each run gets a namespace ct-bench-<random> (deleted after it), and the operators, "
        "confined to it, and the provider sandboxes run on this machine",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--json", action="store_true", help="print the JSON document instead of the table")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a target of issue 14 that the run measured is missed (the table says which)",
    )
    a = p.parse_args(argv)
    cfg = Config(
        n=a.n,
        repeat=max(1, a.repeat),
        mix=a.mix,
        latency=a.latency,
        concurrency=a.concurrency,
        workers=a.workers,
        resync=a.resync,
        steady_periods=a.steady_periods,
        floor=not a.no_floor,
        shape=not a.no_floor and not a.no_shape,
        restart=not a.no_restart,
        steady=not a.no_steady,
        namespace=not a.no_namespace,
        accounts=a.accounts,
        defaults=a.defaults,
        kubeconfig=a.kubeconfig,
    )
    result = run(cfg)
    save(result, a.out)
    print(json.dumps(result, indent=2) if a.json else markdown(result))
    missed = [v["target"] for v in result["verdicts"] if not v["met"]]
    if a.check and missed:
        print(f"missed: {'; '.join(missed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
