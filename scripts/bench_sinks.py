"""The `sinks` benchmark (see scripts/bench.py): publishing to the brokers of RECEIVER_SINKS.

1. backlog: a store prefilled with N finished jobs (and their events); `receiver serve` started with one
   sink (a stream/exchange of the run's own); events per second from the process answering /healthz to
   the sink's position reaching the newest event (GET /v1/sinks, polled every 50 ms). Per broker.
2. ingest: webhooks per second of a receiver publishing to two sinks (NATS and Redis) ÷ one without,
   alternated rounds under the same load, as `ingest` measures it, three times as many rounds as `ingest`
   (the two servers' throughput moves by ±15 % from round to round here; the target leaves 5 %, so five
   rounds' median could land on either side of it by chance). Publishing gives way to requests, so
   after each round with sinks the run waits for both sinks to catch up (their backlog must not drain
   during the other server's round) and counts that CPU too: CPU per webhook, publishing included.
3. e2e: webhook sent → its CloudEvent received by a NATS subscriber on the sink's subjects (JetStream
   stores and acknowledges it before delivering it to subscribers), open loop at a fixed rate, on
   SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from scripts import benchlib as bl
from scripts import benchpg
from tests.support import API_TOKEN

BROKERS = {"nats": 4222, "redis": 6379, "amqp": 5672}
ROUND_FACTOR = 3  # ingest rounds per `ingest` round (see the docstring)


def _reachable(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _url(kind: str, tag: str) -> str:
    if kind == "nats":
        return f"nats://127.0.0.1:4222/b{tag}?stream=BENCH{tag}"
    if kind == "redis":
        return f"redis://127.0.0.1:6379/0?stream=bench:{tag}"
    return f"amqp://guest:guest@127.0.0.1:5672/?exchange=bench-{tag}"


def _name(kind: str, tag: str) -> str:
    return {"nats": f"nats:BENCH{tag}", "redis": f"redis:bench:{tag}", "amqp": f"amqp:bench-{tag}"}[kind]


async def _cleanup(kind: str, tag: str) -> None:
    if kind == "nats":
        import nats

        nc = await nats.connect("nats://127.0.0.1:4222")
        try:
            await nc.jetstream().delete_stream(f"BENCH{tag}")
        except Exception:
            pass
        await nc.close()
    elif kind == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis()
        await client.delete(f"bench:{tag}")
        await client.aclose()
    else:
        import aio_pika

        conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        channel = await conn.channel()
        await channel.exchange_delete(f"bench-{tag}")
        await conn.close()


def _sink(base_url: str, name: str) -> dict[str, Any]:
    listing: Any = bl.get_json(f"{base_url}/v1/sinks", token=API_TOKEN)
    return next(s for s in listing["sinks"] if s["name"] == name)


def backlog(plan: Any, Row: Callable[..., Any], verdict: Callable[[bool], str]) -> list[Any]:
    size = 20_000 if plan.quick else 100_000
    db = plan.workdir / "sinks-backlog.db"
    bl.prefill_store(db, size)
    rows = []
    for kind, port in BROKERS.items():
        if not _reachable(port):
            rows.append(Row("sinks", f"{kind}: skipped, nothing on port {port}", ""))
            continue
        tag = uuid.uuid4().hex[:8]
        if kind == "amqp":  # a queue bound, so RabbitMQ stores (and fsyncs) what it confirms
            asyncio.run(_amqp_queue(tag))
        server = bl.Served(
            f"sinks-{kind}",
            "receiver.app:create_app",
            plan.workdir,
            factory=True,
            env=bl.receiver_env(db, RECEIVER_SINKS=_url(kind, tag)),
        )
        try:
            server.start()
            started = time.perf_counter()
            deadline = started + 600
            while time.perf_counter() < deadline:
                s = _sink(server.base_url, _name(kind, tag))
                if s["last_event_id"] >= size:
                    break
                time.sleep(0.05)
            took = time.perf_counter() - started
            rate = size / took
            rows.append(
                Row(
                    "sinks",
                    f"{kind}: backlog of {size:,} events published (start → position at the newest)",
                    f"{rate:,.0f} events/s, drained in {took:.1f} s",
                    "≥ 5,000/s, ≤ 30 s",
                    verdict(rate >= 5000 and took <= 30),
                )
            )
        finally:
            server.stop()
            asyncio.run(_cleanup(kind, tag))
    return rows


async def _amqp_queue(tag: str) -> None:
    import aio_pika

    conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    channel = await conn.channel()
    exchange = await channel.declare_exchange(f"bench-{tag}", aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(f"bench-{tag}", durable=True, arguments={"x-expires": 600_000})
    await queue.bind(exchange, "#")
    await conn.close()


def _lag(server: bl.Served, tag: str) -> int:
    return max(int(_sink(server.base_url, _name(kind, tag))["lag"]) for kind in ("nats", "redis"))


def _load(plan: Any, server: bl.Served, prefix: str, seconds: float) -> bl.LoadResult:
    """One closed-loop run of unique Pixazo webhooks, with the server's CPU time (as `ingest` runs it)."""
    cpu = server.cpu_seconds()
    if plan.generator == "wrk":
        result = bl.run_wrk(
            server.base_url + bl.HOOK_PATH,
            prefix=prefix,
            seconds=seconds,
            connections=plan.connections,
            workdir=plan.workdir,
        )
    else:
        result = asyncio.run(
            bl.closed_loop(
                server.port,
                bl.HOOK_PATH,
                bl.pixazo_webhook,
                prefix=prefix,
                seconds=seconds,
                connections=plan.connections,
            )
        )
    result.cpu_s = server.cpu_seconds() - cpu
    return result


def ingest(plan: Any, Row: Callable[..., Any], verdict: Callable[[bool], str]) -> list[Any]:
    if not (_reachable(4222) and _reachable(6379)):
        return [Row("sinks", "ingest with two sinks: skipped (needs NATS and Redis)", "")]
    tag = uuid.uuid4().hex[:8]
    with_sinks = bl.Served(
        "sinks-two",
        "receiver.app:create_app",
        plan.workdir,
        factory=True,
        env=bl.receiver_env(plan.workdir / "sinks-two.db", RECEIVER_SINKS=f"{_url('nats', tag)},{_url('redis', tag)}"),
    )
    without = bl.Served(
        "sinks-none",
        "receiver.app:create_app",
        plan.workdir,
        factory=True,
        env=bl.receiver_env(plan.workdir / "sinks-none.db"),
    )
    two: list[Any] = []
    none: list[Any] = []
    lags: list[int] = []
    drains: list[float] = []
    try:
        with_sinks.start()
        without.start()
        for number in range(ROUND_FACTOR * plan.ingest_rounds + 1):  # round 0 warms both up
            seconds = plan.warmup_seconds if number == 0 else plan.ingest_seconds
            result = _load(plan, with_sinks, f"sinks-{tag}-{number}-two", seconds)
            cpu, started = with_sinks.cpu_seconds(), time.perf_counter()
            lags.append(_lag(with_sinks, tag))
            while _lag(with_sinks, tag) > 0 and time.perf_counter() - started < 300:
                time.sleep(0.05)
            drains.append(time.perf_counter() - started)
            result.cpu_s += with_sinks.cpu_seconds() - cpu
            two.append(result)
            none.append(_load(plan, without, f"sinks-{tag}-{number}-none", seconds))
            bl_log = (
                f"round {number}: sinks-two {result.rps:,.0f}/s (lag {lags[-1]}, drained in {drains[-1]:.1f} s), "
                f"sinks-none {none[-1].rps:,.0f}/s"
            )
            print(f"  · {bl_log}", flush=True)
    finally:
        with_sinks.stop()
        without.stop()
        for kind in ("nats", "redis"):
            asyncio.run(_cleanup(kind, tag))
    a, b = two[1:], none[1:]
    ratios = [x.rps / y.rps for x, y in zip(a, b)]
    ratio = statistics.median(ratios)
    cpu_ratio = statistics.median(x.cpu_us_per_request / y.cpu_us_per_request for x, y in zip(a, b))
    return [
        Row(
            "sinks",
            "ingest with two sinks (NATS, Redis) ÷ without (median; rounds: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + ")",
            f"{ratio:.2f}× ({statistics.median(x.rps for x in a):,.0f} vs {statistics.median(y.rps for y in b):,.0f} "
            f"req/s; lag at a round's end up to {max(lags[1:]):,}, drained in ≤ {max(drains[1:]):.1f} s)",
            "≥ 0.95×",
            verdict(ratio >= 0.95),
        ),
        Row(
            "sinks",
            "CPU per webhook with two sinks (publishing and its catch-up included) ÷ without (median)",
            f"{cpu_ratio:.2f}× ({statistics.median(x.cpu_us_per_request for x in a):,.0f} vs "
            f"{statistics.median(y.cpu_us_per_request for y in b):,.0f} µs)",
            "",
        ),
    ]


async def _e2e_one(server: bl.Served, tag: str, rate: float, seconds: float, run: str) -> tuple[float, float, int, int]:
    import nats

    arrivals: dict[str, float] = {}
    nc = await nats.connect("nats://127.0.0.1:4222")

    async def got(msg: Any) -> None:
        arrivals[orjson.loads(msg.data)["data"]["provider_job_id"]] = time.perf_counter()

    await nc.subscribe(f"b{tag}.>", cb=got)
    try:
        keys = [f"sinks-e2e-{tag}-{run}-{i}" for i in range(int(rate * seconds))]
        records = await bl.open_loop(server.port, bl.HOOK_PATH, bl.pixazo_webhook, keys, rate=rate)
        accepted = [r for r in records if r.status is not None and 200 <= r.status < 300]
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline and not all(r.key in arrivals for r in accepted):
            await asyncio.sleep(0.05)
        latencies = [(arrivals[r.key] - r.sent_at) * 1000 for r in accepted if r.key in arrivals]
        return bl.percentile(latencies, 50), bl.percentile(latencies, 99), len(latencies), len(records)
    finally:
        await nc.close()


def e2e(plan: Any, Row: Callable[..., Any], verdict: Callable[[bool], str]) -> list[Any]:
    if not _reachable(4222):
        return [Row("sinks", "e2e: skipped (needs NATS)", "")]
    stores = {"SQLite": None}
    pg_url = None
    if benchpg.unavailable() is None:
        pg_url = benchpg.create_database("sinks")
        stores["PostgreSQL"] = pg_url  # type: ignore[assignment]
    rows = []
    try:
        for store, url in stores.items():
            tag = uuid.uuid4().hex[:8]
            extra = {"RECEIVER_SINKS": _url("nats", tag)}
            if url:
                extra["RECEIVER_DATABASE_URL"] = url
            server = bl.Served(
                f"sinks-e2e-{store}",
                "receiver.app:create_app",
                plan.workdir,
                factory=True,
                env=bl.receiver_env(plan.workdir / "sinks-e2e.db", **extra),
            )
            try:
                server.start()
                asyncio.run(_e2e_one(server, tag, plan.e2e_rate, plan.warmup_seconds, "warm"))
                p50, p99, arrived, sent = asyncio.run(_e2e_one(server, tag, plan.e2e_rate, plan.e2e_seconds, "run"))
            finally:
                server.stop()
                asyncio.run(_cleanup("nats", tag))
            rows.append(
                Row(
                    "sinks",
                    f"{store}: webhook → CloudEvent at a NATS subscriber, {plan.e2e_rate:.0f} req/s, "
                    f"p50 / p99 ({arrived}/{sent} arrived)",
                    f"{p50:.1f} / {p99:.1f} ms",
                    "p99 ≤ 25 ms",
                    verdict(p99 <= 25 and arrived == sent),
                )
            )
    finally:
        if pg_url:
            benchpg.drop_database(pg_url)
    return rows


def run(
    plan: Any, Row: Callable[..., Any], verdict: Callable[[bool], str], alternate: Callable[..., None]
) -> list[Any]:
    # `alternate` is not used: `ingest` alternates by itself, waiting for the sinks to catch up between rounds.
    return backlog(plan, Row, verdict) + ingest(plan, Row, verdict) + e2e(plan, Row, verdict)
