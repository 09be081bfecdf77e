"""A replica frozen in the middle of a transaction (SIGSTOP: a paused VM, a long GC pause) delays the other
replicas' answers by at most 10 s, and they answer no 5xx for it.

Real `receiver serve` processes on a PostgreSQL cluster of the test's own (a frozen backend's locks must
never be left on the machine's shared server); the frozen one is caught holding the event-id lock, in
a transaction, under load.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from receiver.store.postgres.store import EVENTS_LOCK
from tests.faults.own_cluster import own_cluster, unavailable
from tests.integration.store.test_replicas import pixazo_done
from tests.support import POSTGRES_REQUIRED, ReceiverProcess, process_env, webhook_path

BOUND_S = 10.0  # the contract's: how long a frozen replica may hold up the others' answers
# The backend holding the event-id lock (a bigint advisory lock: classid is its high half, objid its low).
HOLDER_SQL = (
    "SELECT a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
    f"AND l.classid = 0 AND l.objid = {EVENTS_LOCK} AND l.objsubid = 1 AND l.granted"
)


@pytest.fixture
async def cluster_url() -> AsyncIterator[str]:
    problem = unavailable()
    if problem is not None:
        if POSTGRES_REQUIRED:
            pytest.fail(problem)
        pytest.skip(problem)
    async with own_cluster() as cluster:
        url = cluster.url
        yield url


async def freeze_holding_the_event_lock(proc: ReceiverProcess, admin: asyncpg.Connection, tries: int = 200) -> None:
    """SIGSTOP `proc` at random moments while it is loaded, until it is stopped with its transaction open and
    the event-id lock held (its backend idle in transaction: waiting for the stopped client's next command)."""
    assert proc.proc is not None
    pid = proc.proc.pid
    for _ in range(tries):
        await asyncio.sleep(random.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGSTOP)
        await asyncio.sleep(0.15)  # a statement sent before the stop has finished by now
        if await admin.fetchval(HOLDER_SQL) == "idle in transaction":
            return
        os.kill(pid, signal.SIGCONT)
    raise AssertionError(f"never caught the replica inside its transaction in {tries} tries")


async def test_a_frozen_replica_holds_up_the_others_at_most_10s(cluster_url: str, tmp_path: Path) -> None:
    env = process_env(tmp_path, RECEIVER_DATABASE_URL=cluster_url)
    frozen, other = ReceiverProcess(env), ReceiverProcess(env)
    admin = await asyncpg.connect(cluster_url)
    load_stop = asyncio.Event()
    try:
        await asyncio.to_thread(frozen.start)
        await asyncio.to_thread(other.start)
        async with httpx.AsyncClient(timeout=60) as client:

            async def load(worker: int) -> None:
                # Webhooks, and the transactions that hold the event-id lock between round trips: a webhook's
                # group commit holds it only while its one write call runs (the server finishes that call
                # whether the client is stopped or not), so the readiness check's write is what is caught.
                for i in range(100_000):
                    if load_stop.is_set():
                        return
                    try:
                        if worker % 2:
                            await client.get(frozen.base_url + "/readyz")
                        else:
                            await client.post(
                                frozen.base_url + webhook_path("pixazo"), content=pixazo_done(f"load-{worker}-{i}")
                            )
                    except httpx.HTTPError:
                        return

            loaders = [asyncio.create_task(load(w)) for w in range(12)]
            await asyncio.sleep(1.0)
            await freeze_holding_the_event_lock(frozen, admin)
            frozen_at = time.monotonic()
            load_stop.set()
            for task in loaders:
                task.cancel()
            await asyncio.gather(*loaders, return_exceptions=True)

            answers: list[tuple[float, float, int]] = []  # (sent, seconds to answer, status) since the freeze

            async def send(request_id: str) -> None:
                sent = time.monotonic()
                reply = await client.post(other.base_url + webhook_path("pixazo"), content=pixazo_done(request_id))
                answers.append((sent - frozen_at, time.monotonic() - sent, reply.status_code))

            # At once, several together, then one after another for longer than the bound.
            await asyncio.gather(*(send(f"during-{i}") for i in range(8)))
            i = 0
            while time.monotonic() - frozen_at < BOUND_S + 3:
                await send(f"after-{i}")
                i += 1
                await asyncio.sleep(0.1)
            ready = (await client.get(f"{other.base_url}/readyz")).status_code
            assert await admin.fetchval(HOLDER_SQL) is None  # the frozen replica's lock was taken from it

        assert all(status == 200 for _, _, status in answers), answers
        # Those sent at the freeze are answered within the bound of it; none waits longer than the bound.
        assert all(sent + took <= BOUND_S for sent, took, _ in answers[:8]), answers[:8]
        assert max(took for _, took, _ in answers) <= BOUND_S, answers
        assert any(sent > BOUND_S for sent, _, _ in answers[8:]), answers  # and went on past the bound, all 200
        assert ready == 200
        assert frozen.alive  # still there, still frozen: nothing waited for it to come back
    finally:
        load_stop.set()
        if frozen.proc is not None and frozen.alive:
            os.kill(frozen.proc.pid, signal.SIGCONT)
        await asyncio.to_thread(frozen.kill)
        await asyncio.to_thread(other.kill)
        await admin.close()
