"""Compare asyncpg and psycopg 3 on the receiver's PostgreSQL write pattern, in one run.

Each round is one group commit as the store makes it: BEGIN; a SELECT by unique key; an INSERT of a
job row; an INSERT … RETURNING of a receipt row; COMMIT. Reported: transactions per second on one
connection (sequential) and with 8 concurrent connections, for each driver, alternated.

    python -m scripts.bench_drivers [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import asyncpg
import psycopg

SCHEMA = """
DROP TABLE IF EXISTS bench_jobs, bench_receipts;
CREATE TABLE bench_jobs (seq BIGSERIAL PRIMARY KEY, id TEXT UNIQUE, provider TEXT, pid TEXT, body TEXT,
                         UNIQUE (provider, pid));
CREATE TABLE bench_receipts (id BIGSERIAL PRIMARY KEY, provider TEXT, body BYTEA)
"""
BODY = b'{"status":"COMPLETED","output":{"media_url":["https://example.com/a.png"]}}' * 4


async def asyncpg_tx(conn: asyncpg.Connection) -> None:
    pid = uuid.uuid4().hex
    async with conn.transaction():
        await conn.fetch("SELECT seq FROM bench_jobs WHERE provider = $1 AND pid = ANY($2::text[])", "pixazo", [pid])
        await conn.execute(
            "INSERT INTO bench_jobs (id, provider, pid, body) VALUES ($1, $2, $3, $4)",
            "job_" + pid,
            "pixazo",
            pid,
            "{}",
        )
        await conn.fetchval("INSERT INTO bench_receipts (provider, body) VALUES ($1, $2) RETURNING id", "pixazo", BODY)


async def psycopg_tx(conn: psycopg.AsyncConnection) -> None:
    pid = uuid.uuid4().hex
    async with conn.transaction():
        await conn.execute("SELECT seq FROM bench_jobs WHERE provider = %s AND pid = ANY(%s)", ("pixazo", [pid]))
        await conn.execute(
            "INSERT INTO bench_jobs (id, provider, pid, body) VALUES (%s, %s, %s, %s)",
            ("job_" + pid, "pixazo", pid, "{}"),
        )
        await (
            await conn.execute(
                "INSERT INTO bench_receipts (provider, body) VALUES (%s, %s) RETURNING id", ("pixazo", BODY)
            )
        ).fetchone()


async def run(driver: str, dsn: str, n: int, concurrency: int) -> float:
    if driver == "asyncpg":
        conns = [await asyncpg.connect(dsn) for _ in range(concurrency)]
        tx = asyncpg_tx
    else:
        conns = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(concurrency)]
        tx = psycopg_tx  # type: ignore[assignment]

    async def worker(conn: object) -> None:
        for _ in range(n // concurrency):
            await tx(conn)  # type: ignore[arg-type]

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - start
    for c in conns:
        await c.close()
    return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_drivers")
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args()
    conn = await asyncpg.connect(args.dsn)
    await conn.execute(SCHEMA)
    await conn.close()
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for concurrency in (1, 8):
            for driver in ("asyncpg", "psycopg"):
                results.setdefault((driver, concurrency), []).append(await run(driver, args.dsn, args.n, concurrency))
    conn = await asyncpg.connect(args.dsn)
    await conn.execute("DROP TABLE IF EXISTS bench_jobs, bench_receipts")
    await conn.close()
    for (driver, concurrency), values in sorted(results.items()):
        print(
            f"{driver:8} connections={concurrency}: median {statistics.median(values):8.0f} tx/s "
            f"(runs: {', '.join(f'{v:.0f}' for v in values)})"
        )


if __name__ == "__main__":
    asyncio.run(main())
