"""PostgreSQL building blocks of `python -m scripts.bench`: a fresh database per run, counts, the server's CPU
time and commit count, and one closed-loop load split over several servers (replicas) at once.

The server is the tests' one (`tests.support.POSTGRES_ADMIN_URL`: `RECEIVER_TEST_POSTGRES_URL`, default
postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import asyncio
import statistics
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scripts import benchlib as bl
from tests.support import POSTGRES_ADMIN_URL as ADMIN_URL
from tests.support import cpu_seconds


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def unavailable() -> str | None:
    """None when the PostgreSQL server answers, else why not."""
    try:
        asyncio.run(_admin("SELECT 1"))
    except Exception as exc:  # any reason at all: no server to measure
        return f"no PostgreSQL at {ADMIN_URL.rsplit('@', 1)[-1]} ({type(exc).__name__})"
    return None


def create_database(tag: str) -> str:
    """A new empty database; its URL."""
    name = f"receiver_bench_{tag}_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    return f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"


def drop_database(url: str) -> None:
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))


def fetchval(url: str, sql: str, *args: object) -> object:
    async def one() -> object:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=5)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(one())


def count_jobs(url: str, provider: str) -> int:
    return int(fetchval(url, "SELECT COUNT(*) FROM jobs WHERE provider = $1", provider))  # type: ignore[arg-type]


def commits(url: str) -> int:
    """Transactions committed in this database so far (pg_stat_database; flushed about once a second)."""
    return int(fetchval(url, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))  # type: ignore[arg-type]


def server_version(url: str) -> str:
    return str(fetchval(url, "SHOW server_version")).split()[0]


def backend_cpu(url: str) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each server process serving this database's connections
    (not PostgreSQL's shared background processes, nor other databases' backends on a shared server)."""

    async def pids() -> list[int]:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=5)
        try:
            return [
                r[0]
                for r in await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ]
        finally:
            await conn.close()

    cpu: dict[int, float] = {}
    for pid in asyncio.run(pids()):
        try:
            cpu[pid] = cpu_seconds(pid)
        except OSError:
            continue  # gone meanwhile, or on another machine
    return cpu


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def split_load(
    generator: str,
    servers: list[bl.Served],
    prefix: str,
    seconds: float,
    connections: int,
    workdir: Path,
    streams: int = 2,
) -> bl.LoadResult:
    """`streams` closed-loop generators at once (connections split evenly), the i-th aimed at server i mod n:
    the same load shape whether it goes to one server or is spread over replicas. Counts add up; latency
    percentiles are the median of the streams'; `cpu_s` is the servers' CPU time meanwhile."""
    each = max(1, connections // streams)
    targets = [servers[i % len(servers)] for i in range(streams)]
    cpu = sum(s.cpu_seconds() for s in servers)
    run: Callable[[int], bl.LoadResult]
    if generator == "wrk":

        def run(i: int) -> bl.LoadResult:
            return bl.run_wrk(
                targets[i].base_url + bl.HOOK_PATH,
                prefix=f"{prefix}-{i}",
                seconds=seconds,
                connections=each,
                workdir=workdir,
            )

        with ThreadPoolExecutor(streams) as pool:
            results = list(pool.map(run, range(streams)))
    else:

        async def both() -> list[bl.LoadResult]:
            return list(
                await asyncio.gather(
                    *(
                        bl.closed_loop(
                            t.port,
                            bl.HOOK_PATH,
                            bl.pixazo_webhook,
                            prefix=f"{prefix}-{i}",
                            seconds=seconds,
                            connections=each,
                        )
                        for i, t in enumerate(targets)
                    )
                )
            )

        results = asyncio.run(both())
    combined = bl.LoadResult(
        generator=generator,
        seconds=statistics.mean(r.seconds for r in results),
        ok=sum(r.ok for r in results),
        failed=sum(r.failed for r in results),
        unanswered=sum(r.unanswered for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=max(r.p99_ms for r in results),
    )
    combined.cpu_s = sum(s.cpu_seconds() for s in servers) - cpu
    return combined
