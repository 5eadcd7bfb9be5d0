"""`python -m lease <verb>`: the steps of experiments/gpu/lease.sh."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resnet_repro.errors import ReproError
from lease.bench_plan import run_benches
from lease.machine import environment, warm_data
from lease.records import collect, poll
from lease.settings import LeaseSettings
from lease.sweep import jobs, launch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lease",
                                     description="The steps of experiments/gpu/lease.sh (settings: LEASE_* variables).")
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("jobs", help="the sweep's jobs, in order")
    sub.add_parser("env", help="write the environment record into LEASE_DIR/env_start.json")
    sub.add_parser("data", help="decode the image-folder data into its cache once")
    sub.add_parser("bench", help="the benches that fit in LEASE_BENCH_S, then the choice")
    p = sub.add_parser("launch", help="start the sweep detached with the bench's choice")
    p.add_argument("--since", type=float, required=True, help="`date +%%s` when start began")
    sub.add_parser("poll", help="each run's iteration and images/s")
    p = sub.add_parser("collect", help="one tarball of the records into OUT")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        s = LeaseSettings.from_env()
        if args.verb == "jobs":
            for e, sd in jobs(s.exps, s.seeds):
                print(f"{e} seed={sd}")
        elif args.verb == "env":
            s.lease_dir.mkdir(parents=True, exist_ok=True)
            env = environment(s)
            (s.lease_dir / "env_start.json").write_text(json.dumps(env, indent=2) + "\n")
            print(f"{env['nvidia_smi_L']}\ntorch {env['torch']}, {env['date']}")
        elif args.verb == "data":
            warm_data(s)
        elif args.verb == "bench":
            r = run_benches(s, s.lease_dir)
            c = r["choice"]
            print(f"chosen: trainer.compile={c['compile'] or '(config default)'} ({c['compile_reason']}); "
                  f"{c['processes']} sweep process(es) (total images/s vs one: {c['concurrency_gain']})")
        elif args.verb == "launch":
            bench_plan = s.lease_dir / "bench_plan.json"
            if not bench_plan.is_file():
                raise ReproError(f"no {bench_plan}: the bench has not run (lease.sh start runs it first)")
            choice = json.loads(bench_plan.read_text())["choice"]
            launch(s, choice, args.since)
        elif args.verb == "poll":
            return poll(s)
        elif args.verb == "collect":
            collect(s, Path(args.out))
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
