"""Several `receiver serve` processes on one PostgreSQL database behave as one receiver.

Real processes, real PostgreSQL (a database per test), real SIGKILLs; the providers and the
callback endpoint are fakes on loopback.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.fakes.callback import HANG, callback_server
from tests.fakes.oxen import API_KEY as OXEN_KEY
from tests.fakes.oxen import FakeOxen
from tests.support import API_TOKEN, WEBHOOK_TOKEN, ReceiverProcess, eventually, process_env, serve_app

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
Start = Callable[..., Awaitable[ReceiverProcess]]


def pixazo_done(request_id: str) -> bytes:
    return json.dumps(
        {
            "request_id": request_id,
            "status": "COMPLETED",
            "output": {"media_url": [f"https://cdn.pixazo.test/{request_id}.png"]},
        }
    ).encode()


def hook(base_url: str) -> str:
    return f"{base_url}/webhooks/pixazo?token={WEBHOOK_TOKEN}"


@pytest.fixture
async def start_replica(postgres_url: str, tmp_path: Path) -> AsyncIterator[Start]:
    """`await start_replica(**env)`: one more `receiver serve` on the test's database."""
    running: list[ReceiverProcess] = []

    async def start(**extra: str) -> ReceiverProcess:
        env = process_env(tmp_path, RECEIVER_DATABASE_URL=postgres_url, **extra)
        proc = ReceiverProcess(env)
        running.append(proc)
        return await asyncio.to_thread(proc.start)  # its health check blocks; the fakes run on this loop

    yield start
    for proc in running:
        await asyncio.to_thread(proc.kill)


async def test_replicas_behave_as_one_receiver(start_replica: Start) -> None:
    async with callback_server() as sink:
        replicas = [await start_replica(RECEIVER_DEFAULT_CALLBACK_URL=sink.url()) for _ in range(3)]
        async with httpx.AsyncClient(timeout=10) as client:
            # A webhook acknowledged by one replica shows through every other one's API.
            job_ids = []
            for i in range(15):
                reply = await client.post(hook(replicas[i % 3].base_url), content=pixazo_done(f"spread-{i}"))
                assert reply.status_code == 200
                (job_id,) = reply.json()["job_ids"]
                seen = await client.get(f"{replicas[(i + 1) % 3].base_url}/v1/jobs/{job_id}", headers=AUTH)
                assert seen.status_code == 200 and seen.json()["status"] == "succeeded"
                job_ids.append(job_id)
            # The same delivery at three replicas at once changes the job once and queues one callback.
            for i in range(5):
                body = pixazo_done(f"dup-{i}")
                replies = await asyncio.gather(*(client.post(hook(r.base_url), content=body) for r in replicas))
                assert [r.status_code for r in replies] == [200, 200, 200]
                assert sorted(r.json()["outcome"] for r in replies) == ["applied", "duplicate", "duplicate"]
                assert len({r.json()["job_ids"][0] for r in replies}) == 1
                job_ids.append(replies[0].json()["job_ids"][0])

        def delivered() -> dict[str, set[str]]:
            ids: dict[str, set[str]] = {}
            for received in sink.requests:
                ids.setdefault(json.loads(received.body)["data"]["id"], set()).add(received.webhook_id)
            return ids

        async def everyone_called_back() -> bool:
            return set(delivered()) == set(job_ids)

        await eventually(everyone_called_back, 30, "every job called back")
        await asyncio.sleep(1)  # a second callback, if one were queued twice, would be on its way by now
        assert all(len(ids) == 1 for ids in delivered().values())  # one message per job, whichever replica sent it


async def test_event_stream_and_long_poll_see_another_replicas_commit(start_replica: Start) -> None:
    a, b = await start_replica(), await start_replica()
    async with httpx.AsyncClient(timeout=30) as client:
        registered = await client.post(
            f"{a.base_url}/v1/jobs", headers=AUTH, json={"provider": "pixazo", "provider_job_id": "cross-1"}
        )
        job_id = registered.json()["id"]
        events: list[str] = []

        async def follow() -> None:
            async with client.stream("GET", f"{a.base_url}/v1/events", headers=AUTH) as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("event:"):
                        events.append(line)
                        return

        follower = asyncio.create_task(follow())
        long_poll = asyncio.create_task(client.get(f"{a.base_url}/v1/jobs/{job_id}?wait=20", headers=AUTH))
        await asyncio.sleep(0.5)  # both held on replica a
        started = time.monotonic()
        assert (await client.post(hook(b.base_url), content=pixazo_done("cross-1"))).status_code == 200
        answer = await long_poll
        await asyncio.wait_for(follower, 20)
        assert answer.json()["status"] == "succeeded"
        assert events == ["event: job.succeeded"]
        # Woken by NOTIFY from b, not by the long-poll's own 20 s running out.
        assert time.monotonic() - started < 15


async def test_a_killed_replicas_callback_is_taken_over(start_replica: Start) -> None:
    async with callback_server(HANG) as sink:  # the first POST hangs; later ones are answered 200
        env = {"RECEIVER_DEFAULT_CALLBACK_URL": sink.url(), "RECEIVER_CALLBACK_TIMEOUT_S": "300"}
        a = await start_replica(**env)
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.post(hook(a.base_url), content=pixazo_done("takeover-1"))
            (job_id,) = reply.json()["job_ids"]

            async def first_attempt_arrived() -> bool:
                return len(sink.requests) >= 1

            await eventually(first_attempt_arrived, 20, "a's first attempt")
            b = await start_replica(**env)
            a.kill()  # mid-request, its message leased
            killed_at = time.monotonic()

            async def delivered() -> bool:
                job = (await client.get(f"{b.base_url}/v1/jobs/{job_id}", headers=AUTH)).json()
                return job["delivery_status"] == "delivered"

            await eventually(delivered, 75, "b delivering a's message")
        assert time.monotonic() - killed_at < 75
        assert len({r.webhook_id for r in sink.requests}) == 1  # the same message, taken over, not a new one


async def test_oxen_stream_has_one_consumer_and_fails_over(start_replica: Start) -> None:
    fake = FakeOxen()
    async with serve_app(fake.app) as oxen_server:
        fake.base_url = oxen_server.base_url
        env = {"RECEIVER_OXEN_API_KEY": OXEN_KEY, "RECEIVER_OXEN_BASE_URL": fake.base_url}
        replicas = [await start_replica(**env), await start_replica(**env)]
        async with httpx.AsyncClient(timeout=10) as client:

            async def states() -> list[str]:
                return [(await client.get(f"{r.base_url}/readyz")).json()["oxen_stream"] for r in replicas]

            async def one_leader() -> bool:
                return sorted(await states()) == ["connected", "standby"]

            await eventually(one_leader, 30, "one consumer, one standby")
            leader, other = (
                (replicas[0], replicas[1]) if (await states())[0] == "connected" else (replicas[1], replicas[0])
            )
            generation = fake.submit()
            registered = await client.post(
                f"{other.base_url}/v1/jobs", headers=AUTH, json={"provider": "oxen", "provider_job_id": generation}
            )
            job_id = registered.json()["id"]
            leader.kill()
            killed_at = time.monotonic()
            fake.complete(generation)  # fired while nobody consumes the stream: lost there

            async def took_over() -> bool:
                return (await client.get(f"{other.base_url}/readyz")).json()["oxen_stream"] == "connected"

            await eventually(took_over, 30, "the standby taking the stream over")
            assert time.monotonic() - killed_at < 30

            async def caught_up() -> bool:
                job = (await client.get(f"{other.base_url}/v1/jobs/{job_id}", headers=AUTH)).json()
                return job["status"] == "succeeded"

            await eventually(caught_up, 20, "the new consumer's catch-up poll finding the lost completion")
        fake.close()


async def test_lost_database_connections_give_503_then_recover(start_replica: Start, postgres_url: str) -> None:
    import asyncpg

    replica = await start_replica()
    acknowledged: list[str] = []
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=10) as client:

        async def send(request_id: str) -> None:
            reply = await client.post(hook(replica.base_url), content=pixazo_done(request_id))
            statuses.append(reply.status_code)
            if reply.status_code == 200:
                acknowledged.append(request_id)

        await send("before")
        admin = await asyncpg.connect(postgres_url)
        try:
            stop = asyncio.Event()

            async def load(worker: int) -> None:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    await send(f"cut-{worker}-{i}")

            workers = [asyncio.create_task(load(w)) for w in range(8)]
            for _ in range(15):  # cut every connection of the receiver's, under load
                await asyncio.sleep(0.2)
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            stop.set()
            await asyncio.gather(*workers)
            for i in range(10):
                await send(f"after-{i}")
            stored = {r[0] for r in await admin.fetch("SELECT provider_job_id FROM jobs")}
        finally:
            await admin.close()
    assert set(statuses) <= {200, 503}, statuses  # never a 500
    assert 503 in statuses  # the cuts were felt (else this test proves nothing)
    assert statuses[-10:] == [200] * 10  # recovered by itself
    assert set(acknowledged) <= stored  # nothing acknowledged was lost
    assert (await asyncio.to_thread(httpx.get, f"{replica.base_url}/readyz")).json()["store"] == "ok"


async def test_a_replica_stopped_by_sigterm_hands_its_callbacks_back(start_replica: Start) -> None:
    async with callback_server(HANG) as sink:  # the first POST hangs (a slow endpoint); later ones are answered
        env = {"RECEIVER_DEFAULT_CALLBACK_URL": sink.url(), "RECEIVER_CALLBACK_TIMEOUT_S": "300"}
        a = await start_replica(**env)
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.post(hook(a.base_url), content=pixazo_done("handback-1"))
            (job_id,) = reply.json()["job_ids"]
            await eventually(lambda: len(sink.requests) >= 1, 20, "a's first attempt")
            b = await start_replica(**env)
            stopped_at = time.monotonic()
            await asyncio.to_thread(a.stop)  # SIGTERM mid-request, its message leased

            async def delivered() -> bool:
                job = (await client.get(f"{b.base_url}/v1/jobs/{job_id}", headers=AUTH)).json()
                return job["delivery_status"] == "delivered"

            await eventually(delivered, 60, "b delivering the message a handed back")
        assert len(sink.requests) == 2 and sink.requests[1].at - stopped_at < 10
        assert len({r.webhook_id for r in sink.requests}) == 1  # the same message, handed over, not a new one


async def test_readyz_is_503_while_the_store_cannot_take_writes(start_replica: Start, postgres_url: str) -> None:
    import asyncpg

    replica = await start_replica()
    database = postgres_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(postgres_url)

    async def reconnect_with(setting: str) -> None:
        """Every new session of the database read-only (as on a standby) or not, and the replica's sessions
        cut, so that it opens new ones."""
        await admin.execute(f'ALTER DATABASE "{database}" {setting}')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )

    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def ready(status: int) -> bool:
                return (await client.get(f"{replica.base_url}/readyz")).status_code == status

            assert await ready(200)
            await reconnect_with("SET default_transaction_read_only = on")

            async def reads() -> bool:
                return (await client.get(f"{replica.base_url}/v1/jobs", headers=AUTH)).status_code == 200

            await eventually(reads, 20, "reads working again on new sessions")  # past the cut's own 503s
            for _ in range(3):
                answer = await client.get(f"{replica.base_url}/readyz")
                assert (answer.status_code, answer.json()["store"]) == (503, "unreachable")
            await reconnect_with("RESET default_transaction_read_only")
            await eventually(lambda: ready(200), 20, "/readyz back to 200")
    finally:
        await admin.close()
