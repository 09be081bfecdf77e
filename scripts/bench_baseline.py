"""Why two measurements of "ingest ÷ bare endpoint" disagree: each way of serving and loading, side by side.

    .venv/bin/python -m scripts.bench_baseline [--rounds 3] [--seconds 5] [--connections 32,64]

Serves, each in its own process, alternated round after round under the same wrk load:
- `bare-old`: the bare endpoint as `scripts.bench` served it before: `python -m uvicorn` with the bench's
  options, answering 202 with no body;
- `bare`: `python -m scripts.bare_app`: reads the body, answers the receiver's 200 JSON, `receiver serve`'s
  uvicorn settings with uvicorn's own httptools protocol, no access log;
- `bare-bounded`: the same with the receiver's request bounds (`receiver.server.BoundedHttpTools`);
- `receiver-uvicorn`: the receiver as `scripts.bench` served it before: `python -m uvicorn
  receiver.app:create_app --factory`, RECEIVER_LOG_LEVEL=WARNING (not `receiver serve`'s configuration);
- `receiver-serve`: `receiver serve` with its defaults, as users run it;
- `receiver-quiet`: `receiver serve` with RECEIVER_LOG_LEVEL=WARNING and RECEIVER_ACCESS_LOG=off.
Each at every `--connections` count, with wrk -t1 and a Lua `request()` giving each webhook its own id;
`bare-old` also with a static body (no Lua per request: the cheapest wrk can be). Reported: req/s,
the server's CPU per request, the client's CPU as a share of one core (it runs on the same cores), and
the load average. Needs wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scripts import benchlib as bl


async def _old_receive(request: Request) -> Response:
    await request.body()
    return Response(status_code=202)


async def _healthz(request: Request) -> Response:
    return Response(b"ok")


old_bare = Starlette(
    routes=[Route("/webhooks/{provider}", _old_receive, methods=["POST"]), Route("/healthz", _healthz)]
)

_STATIC_LUA = r"""
wrk.method = "POST"
wrk.body = [[@BODY@]]
wrk.headers["Content-Type"] = "application/json"
function done(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"status":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"built":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, summary.requests, latency:percentile(50), latency:percentile(99)))
end
"""


def run_static_wrk(url: str, *, seconds: float, connections: int, workdir: Path) -> bl.LoadResult:
    """wrk with one fixed body (every request the same webhook)."""
    script = workdir / "static.lua"
    script.write_text(_STATIC_LUA.replace("@BODY@", bl.pixazo_webhook("static").decode()))
    before = bl.children_cpu()
    done = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    client = bl.children_cpu() - before
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("WRKJSON "))
    r = json.loads(line[len("WRKJSON ") :])
    return bl.LoadResult(
        "wrk-static",
        r["duration_us"] / 1e6,
        r["requests"] - r["status"],
        r["status"],
        0,
        r["p50_us"] / 1000,
        r["p99_us"] / 1000,
        client_cpu_s=client,
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", default="32,64")
    args = parser.parse_args()
    if not bl.wrk_path():
        parser.error("needs wrk (Debian: apt-get install -y wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="receiver-baseline-"))
    serve_env = bl.receiver_env(workdir / "serve.db")
    del serve_env["RECEIVER_LOG_LEVEL"]
    servers = {
        "bare-old": bl.Served(
            "bare-old", "scripts.bench_baseline:old_bare", workdir, env=bl.receiver_env(workdir / "x.db")
        ),
        "bare": bl.Served("bare", "", workdir, env=bl.receiver_env(workdir / "x.db"), bare=True),
        "bare-bounded": bl.Served(
            "bare-bounded", "", workdir, env=bl.receiver_env(workdir / "x.db"), bare=True, bounded=True
        ),
        "receiver-uvicorn": bl.Served(
            "receiver-uvicorn",
            "receiver.app:create_app",
            workdir,
            factory=True,
            env=bl.receiver_env(workdir / "uvicorn.db"),
        ),
        "receiver-serve": bl.Served("receiver-serve", "", workdir, env=serve_env, cli=True),
        "receiver-quiet": bl.Served(
            "receiver-quiet",
            "",
            workdir,
            cli=True,
            env=bl.receiver_env(workdir / "quiet.db", RECEIVER_ACCESS_LOG="off"),
        ),
    }
    conns = [int(c) for c in args.connections.split(",")]
    kinds = [(name, c, "lua") for c in conns for name in servers] + [
        (name, c, "static") for c in conns for name in ("bare-old",)
    ]
    results: dict[tuple[str, int, str], list[bl.LoadResult]] = {k: [] for k in kinds}
    print(f"baseline: {bl.machine()}", flush=True)
    try:
        for server in servers.values():
            server.start()
        for number in range(args.rounds + 1):  # round 0: warm-up
            for name, c, how in kinds:
                server = servers[name]
                cpu = server.cpu_seconds()
                seconds = 2.0 if number == 0 else args.seconds
                if how == "lua":
                    r = bl.run_wrk(
                        server.base_url + bl.HOOK_PATH,
                        prefix=f"b{number}-{name}-{c}",
                        seconds=seconds,
                        connections=c,
                        workdir=workdir,
                    )
                else:
                    r = run_static_wrk(server.base_url + bl.HOOK_PATH, seconds=seconds, connections=c, workdir=workdir)
                r.cpu_s = server.cpu_seconds() - cpu
                if number:
                    results[(name, c, how)].append(r)
            if number:
                print(f"round {number} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    print(f"\n{'server':18} {'conns':>5} {'wrk':6} {'req/s (rounds)':40} {'server µs/req':>13} {'client %core':>12}")
    for (name, c, how), runs in results.items():
        rps = ", ".join(f"{r.rps:,.0f}" for r in runs)
        print(
            f"{name:18} {c:>5} {how:6} {statistics.median(r.rps for r in runs):>8,.0f} ({rps}){'':5} "
            f"{statistics.median(r.cpu_us_per_request for r in runs):>13.0f} "
            f"{statistics.median(r.client_share for r in runs):>12.0%}"
        )
    print("\nratios (median of per-round ratios):")
    for c in conns:
        for rec, bare in (
            ("receiver-uvicorn", "bare-old"),
            ("receiver-serve", "bare"),
            ("receiver-quiet", "bare"),
            ("receiver-serve", "bare-old"),
            ("receiver-uvicorn", "bare"),
            ("bare-bounded", "bare"),
        ):
            ratios = [a.rps / b.rps for a, b in zip(results[(rec, c, "lua")], results[(bare, c, "lua")])]
            print(
                f"  -c{c}: {rec} ÷ {bare}: {statistics.median(ratios):.2f}× ({', '.join(f'{x:.2f}' for x in ratios)})"
            )
    for c in conns:
        ratios = [a.rps / b.rps for a, b in zip(results[("bare-old", c, "static")], results[("bare-old", c, "lua")])]
        print(f"  -c{c}: bare-old with a static body ÷ with Lua ids: {statistics.median(ratios):.2f}×")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}; command: {' '.join([sys.argv[0], *sys.argv[1:]])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
