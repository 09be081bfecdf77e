"""Real `receiver serve` processes: SIGKILL in the middle of a backlog, and failover between two replicas
on PostgreSQL. Afterwards every event is at the broker, first occurrences in order, a repeat only as
the same id (and, on NATS and Redis, none kept twice)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.fakes.tcp_proxy import TcpProxy
from tests.integration.sinks.brokers import PORTS, TestBroker
from tests.integration.sinks.common import check_complete, drained, fire, sink
from tests.support import API_TOKEN, ReceiverProcess, eventually, process_env

BACKLOG = 3000


def clients(proc: ReceiverProcess) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    return (
        httpx.AsyncClient(base_url=proc.base_url, timeout=30),
        httpx.AsyncClient(base_url=proc.base_url, timeout=30, headers={"Authorization": f"Bearer {API_TOKEN}"}),
    )


@pytest.fixture
async def slow_proxy(broker: TestBroker) -> AsyncIterator[TcpProxy]:
    """Between the receiver and the broker, each chunk held a little: a backlog takes long enough to kill."""
    proxy = await TcpProxy("127.0.0.1", PORTS[broker.kind]).start()
    proxy.delay = 0.03
    try:
        yield proxy
    finally:
        await proxy.close()


async def _backlog(client: httpx.AsyncClient, api: httpx.AsyncClient, name: str) -> None:
    """BACKLOG events made while the sink is paused, then resumed."""
    assert (await api.post(f"/v1/sinks/{name}/pause")).status_code == 200
    await fire(client, "pix_bk", BACKLOG)
    assert (await api.post(f"/v1/sinks/{name}/resume")).status_code == 200


async def _mid_backlog(api: httpx.AsyncClient, name: str) -> dict[str, Any]:
    async def partly() -> dict[str, Any] | None:
        s = await sink(api, name)
        return s if s["last_event_id"] > 0 else None

    result: dict[str, Any] = await eventually(partly, 60, "publishing under way")
    return result


async def test_sigkill_mid_backlog_then_restart(tmp_path: Path, broker: TestBroker, slow_proxy: TcpProxy) -> None:
    env = process_env(tmp_path, RECEIVER_SINKS=broker.url(slow_proxy.port))
    proc = ReceiverProcess(env)
    await asyncio.to_thread(proc.start)
    try:
        client, api = clients(proc)
        async with client, api:
            await _backlog(client, api, broker.sink_name)
            seen = await _mid_backlog(api, broker.sink_name)
            proc.kill()
            assert seen["last_event_id"] < BACKLOG, "drained before the kill: nothing was tested"
        await asyncio.to_thread(proc.start)
        client, api = clients(proc)
        async with client, api:
            await drained(api, broker.sink_name, BACKLOG, timeout=180)
        got = await broker.messages()
        check_complete(got, list(range(1, BACKLOG + 1)), duplicates_kept=broker.kind == "amqp")
    finally:
        proc.kill()


async def test_failover_between_replicas(
    tmp_path: Path, broker: TestBroker, slow_proxy: TcpProxy, postgres_url: str
) -> None:
    # Replicas behind one load balancer share their public URL, so a repeat from the other is the same CloudEvent.
    env = process_env(
        tmp_path,
        RECEIVER_DATABASE_URL=postgres_url,
        RECEIVER_SINKS=broker.url(slow_proxy.port),
        RECEIVER_PUBLIC_URL="https://receiver.example",
    )
    first, second = ReceiverProcess(env), ReceiverProcess(env)
    await asyncio.to_thread(first.start)
    try:

        async def leased() -> bool:
            conn = await asyncpg.connect(postgres_url)
            try:
                return bool(
                    await conn.fetchval(
                        "SELECT count(*) FROM leases WHERE name = $1 AND expires_at > 0", f"sink:{broker.sink_name}"
                    )
                )
            finally:
                await conn.close()

        await eventually(leased, 30, "the first replica leads the sink")
        await asyncio.to_thread(second.start)
        client, api = clients(first)
        async with client, api:
            await _backlog(client, api, broker.sink_name)
            seen = await _mid_backlog(api, broker.sink_name)
        first.kill()
        assert seen["last_event_id"] < BACKLOG, "drained before the kill: nothing was tested"
        client, api = clients(second)
        async with client, api:
            # The lease runs out 15 s after the dead replica's last renewal; then the other publishes.
            await drained(api, broker.sink_name, BACKLOG, timeout=180)
        check_complete(await broker.messages(), list(range(1, BACKLOG + 1)), duplicates_kept=broker.kind == "amqp")
    finally:
        first.kill()
        second.kill()
