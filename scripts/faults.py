"""Fault injection against the real receiver; prints what each scenario measured and whether it held.

    .venv/bin/python -m scripts.faults              # the full run, a few minutes
    .venv/bin/python -m scripts.faults --quick      # a short run, under a minute
    .venv/bin/python -m scripts.faults --only crash,fuzz --seed 42 --examples 20000

(from the repository root: the scenarios are `tests.faults`).

1. crash: SIGKILL `receiver serve` at random moments under concurrent webhook load, many times, restarting
   it on the same SQLite file: every webhook that got a 2xx is in the store and its callback arrives;
   duplicate callbacks are counted (same webhook-id: at-least-once after a kill; another id: a bug).
2. outage: the callback endpoint refuses connections, then answers 503, then 200: every result delivered
   exactly once, none `failed`.
3. oxen: the Oxen stream is cut, closed and refused again and again while completions fire: every
   completion applied (the catch-up poll recovers what fired during the gaps).
4. fuzz: hypothesis-generated webhook, /v1 and raw-TCP requests against a real `receiver serve`: no 5xx,
   receipts exactly as answered, JSON logs without ERROR or secrets.
5. replicas: 3 `receiver serve` processes on one PostgreSQL cluster of its own (initdb on a free port, removed after) under
   Pixazo/Runware webhooks spread round-robin (some sent to two replicas at once) and Oxen completions on a
   fake's stream, while replicas are SIGKILLed and the scenario's own PostgreSQL cluster restarts once:
   nothing acknowledged lost, every job called back under one webhook-id, no Oxen completion missed, only
   503s while the database is away; and the time for another replica to take over the Oxen stream.
6. nginx: 3 replicas on PostgreSQL behind an nginx of its own (Debian's nginx-light), each stopped with
   SIGTERM and started again in turn under a steady webhook rate: every webhook acknowledged on its first
   attempt, none missing from the store (the nginx configuration of docs/deploy.md).

Exit status 0 when every scenario held, 1 otherwise. The scenarios live in tests/faults/ (shared with the
bounded `tests/faults/test_faults.py`); see docs/reliability.md for what each proves and the recorded figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.faults.common import Report
from tests.faults.crash import sigkill_under_load
from tests.faults.fuzz import fuzz
from tests.faults.nginx_rolling import rolling_restart_behind_nginx
from tests.faults.outage import callback_outage
from tests.faults.oxen_drops import oxen_drops
from tests.faults.replicas import replicas_under_faults

FULL: dict[str, dict[str, Any]] = {
    "crash": {"kills": 30, "senders": 16, "uptime_s": (0.3, 1.5), "settle_s": 120},
    "outage": {"jobs": 600, "refused_s": 10.0, "failing_s": 10.0, "settle_s": 120},
    "oxen": {"generations": 2000, "duration_s": 30.0, "drop_every_s": (0.1, 0.8), "settle_s": 60},
    "fuzz": {"examples": 10_000},
    "replicas": {"senders": 12, "duration_s": 60.0, "kills": 12, "oxen_jobs": 1000, "failovers": 3, "settle_s": 180},
    "nginx": {"rate": 300.0, "rounds": 2},
}
QUICK: dict[str, dict[str, Any]] = {
    "crash": {"kills": 5, "senders": 8, "uptime_s": (0.3, 0.8), "settle_s": 60},
    "outage": {"jobs": 90, "refused_s": 2.0, "failing_s": 2.0, "settle_s": 60},
    "oxen": {"generations": 200, "duration_s": 4.0, "drop_every_s": (0.1, 0.4), "settle_s": 30},
    "fuzz": {"examples": 1000},
    "replicas": {"senders": 8, "duration_s": 15.0, "kills": 3, "oxen_jobs": 150, "failovers": 1, "settle_s": 90},
    "nginx": {"rate": 100.0, "rounds": 1},
}


def _scenario(name: str, workdir: Path, seed: int, options: dict[str, Any]) -> Report:
    runs: dict[str, Callable[[], Any]] = {
        "crash": lambda: asyncio.run(sigkill_under_load(workdir, seed=seed, **options)),
        "outage": lambda: asyncio.run(callback_outage(workdir, seed=seed, **options)),
        "oxen": lambda: asyncio.run(oxen_drops(workdir, seed=seed, **options)),
        "fuzz": lambda: fuzz(workdir, seed=seed, **options),
        "replicas": lambda: asyncio.run(replicas_under_faults(workdir, seed=seed, **options)),
        "nginx": lambda: asyncio.run(rolling_restart_behind_nginx(workdir, **options)),
    }
    return runs[name]()  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, under a minute in all")
    parser.add_argument("--only", default=",".join(FULL), help=f"comma-separated, of: {', '.join(FULL)}")
    parser.add_argument("--seed", type=int, default=None, help="fix the randomness (default: a fresh seed, printed)")
    parser.add_argument("--examples", type=int, default=None, help="fuzz: how many generated requests")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (SQLite files, receiver logs)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in FULL]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(FULL)}")
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    # In-process servers (fakes, and the receiver of `outage`/`oxen`) log a traceback whenever a cut
    # connection ends a request: noise here. The receiver processes keep their own log files.
    logging.disable(logging.CRITICAL)
    root = Path(tempfile.mkdtemp(prefix="receiver-faults-"))
    print(
        f"machine: {platform.node()} · {platform.machine()} · Python {platform.python_version()} · "
        f"{_cpus()} CPU(s)\nseed: {seed} · work directory: {root}\n"
    )
    reports: list[Report] = []
    for name in names:
        options = dict((QUICK if args.quick else FULL)[name])
        if name == "fuzz" and args.examples:
            options["examples"] = args.examples
        workdir = root / name
        workdir.mkdir()
        started = time.monotonic()
        try:
            report = _scenario(name, workdir, seed, options)
        except Exception as exc:  # a scenario that crashes is a failed scenario, not a stopped run
            report = Report(
                name,
                problems=[f"the scenario itself failed: {type(exc).__name__}: {exc}"],
                elapsed_s=time.monotonic() - started,
            )
        reports.append(report)
        print(report.text(), "\n", flush=True)
    failed = [r.name for r in reports if not r.ok]
    print("ALL HELD" if not failed else f"FAILED: {', '.join(failed)}")
    if not args.keep and not failed:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())
