"""PostgreSQL cutting the receiver's connections (a restart, a failover, `pg_terminate_backend`) must give
503 (retry later), never 500.

Found by the replicas fault scenario (tests/faults/replicas.py): when a backend is terminated while a
pooled connection is busy, asyncpg's pool release raises `InternalClientError` ("cannot switch to state
…; another operation (2) is in progress", MagicStack/asyncpg#784, #1069), which the store does not map to
`StoreUnavailable`; it then reaches the request as a 500 (and the delivery loop logs it as a failure).
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import asyncpg
import httpx

from receiver.app import create_app
from tests.support import make_settings, serve_app

TERMINATE = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


async def test_terminated_backends_give_503_never_500(tmp_path: Path, postgres_url: str) -> None:
    statuses: collections.Counter[int] = collections.Counter()
    async with serve_app(create_app(make_settings(tmp_path, database_url=postgres_url))) as server:
        admin = await asyncpg.connect(postgres_url)
        stop = asyncio.Event()

        async def reader(client: httpx.AsyncClient) -> None:
            while not stop.is_set():
                for path in ("/readyz", "/v1/jobs"):
                    statuses[(await client.get(path)).status_code] += 1

        async def killer() -> None:
            for _ in range(300):
                await admin.execute(TERMINATE)
                await asyncio.sleep(0.005)
            stop.set()

        try:
            async with server.api() as client:
                await asyncio.gather(killer(), *(reader(client) for _ in range(4)))
        finally:
            await admin.close()
    assert statuses[503] > 0, statuses  # the cuts did reach requests
    assert set(statuses) <= {200, 503}, statuses
