"""What only the SQLite store has: one file, one process, WAL, reopening, schema upgrades."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from receiver.app import create_app
from receiver.models import DeliveryStatus, JobStatus, Outcome
from receiver.store import JobFilter, open_store
from receiver.store.schema import SQLITE
from tests.integration.store.test_conformance import done, receipt
from tests.support import API_TOKEN, WEBHOOK_TOKEN, make_settings, serve_app


async def test_default_callback_gets_unregistered_results(tmp_path: Path) -> None:
    s = await open_store(f"sqlite:///{tmp_path / 'd.db'}", default_callback_url="http://127.0.0.1:9/cb")
    try:
        result = await s.apply(receipt(), [done("r5", "https://a/5.jpg")])
        job = await s.get_job(result.job_ids[0])
        assert job is not None and job.delivery_status is DeliveryStatus.PENDING
        (message,) = (await s.claim_due(limit=10, lease_s=5)).messages
        assert message.url == "http://127.0.0.1:9/cb" and message.job_id == job.id
        assert (await s.claim_due(limit=10, lease_s=5)).messages == []  # leased
    finally:
        await s.close()


async def test_everything_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    s = await open_store(url)
    token = await s.secret("api_token", lambda: "generated-once")
    result = await s.apply(receipt(), [done("r6", "https://a/6.jpg")])
    await s.close()
    s = await open_store(url)
    try:
        assert await s.secret("api_token", lambda: "different") == token == "generated-once"
        job = await s.get_job(result.job_ids[0])
        assert job is not None and job.status is JobStatus.SUCCEEDED
    finally:
        await s.close()
    with sqlite3.connect(tmp_path / "p.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert int(version) == len(SQLITE)


async def test_schema_upgrades_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:  # a database from before any migration ran
        raw.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        raw.execute("INSERT INTO meta VALUES ('secret:api_token', 'kept')")
    s = await open_store(f"sqlite:///{path}")
    try:
        assert await s.secret("api_token", lambda: "new") == "kept"
        result = await s.apply(receipt(), [done("r7", "https://a/7.jpg")])  # the upgraded tables take writes
        assert result.outcome is Outcome.APPLIED
        job = await s.get_job(result.job_ids[0])
        assert job is not None and job.status is JobStatus.SUCCEEDED
        assert [o.url for o in job.outputs] == ["https://a/7.jpg"]
    finally:
        await s.close()
    with sqlite3.connect(path) as raw:
        version = raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert int(version) == len(SQLITE)


async def test_synchronous_full_commits_off_the_event_loop(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'full.db'}?synchronous=full"
    s = await open_store(url)
    try:
        results = await asyncio.gather(*(s.apply(receipt(), [done(f"f{i}", f"https://a/{i}.jpg")]) for i in range(40)))
        assert {r.outcome for r in results} == {Outcome.APPLIED}
        assert len({r.receipt_id for r in results}) == 40
    finally:
        await s.close()
    with sqlite3.connect(tmp_path / "full.db") as raw:
        assert raw.execute("SELECT COUNT(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0] == 40


# -- the promises of one process on one file ------------------------------------------------------


AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def pixazo(request_id: str) -> bytes:
    return json.dumps(
        {
            "request_id": request_id,
            "status": "COMPLETED",
            "output": {"media_url": [f"https://cdn.test/{request_id}.png"]},
        }
    ).encode()


async def test_a_read_sees_every_write_acknowledged_before_it(tmp_path: Path) -> None:
    """Readers busy with SSE replays and /metrics must not pin an old snapshot for the next GET."""
    async with serve_app(create_app(make_settings(tmp_path))) as server, server.client() as client:
        for i in range(30):  # events to replay
            await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", content=pixazo(f"seed-{i}"))
        stop = asyncio.Event()

        async def replay() -> None:
            while not stop.is_set():
                async with client.stream("GET", "/v1/events?last_event_id=0", headers=AUTH) as stream:
                    async for line in stream.aiter_lines():
                        if stop.is_set() or line.startswith(": keep-alive"):
                            break
                        await asyncio.sleep(0)  # a slow reader, holding its stream open

        async def scrape() -> None:
            while not stop.is_set():
                await client.get("/metrics")

        busy = [asyncio.create_task(replay()) for _ in range(3)] + [asyncio.create_task(scrape()) for _ in range(3)]
        misses = 0
        for i in range(60):
            reply = await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", content=pixazo(f"read-{i}"))
            (job_id,) = reply.json()["job_ids"]
            got = await client.get(f"/v1/jobs/{job_id}", headers=AUTH)
            misses += got.status_code != 200 or got.json()["status"] != "succeeded"
        stop.set()
        for task in busy:
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)
    assert misses == 0


async def test_the_wal_stays_bounded_under_load_and_shrinks_when_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from receiver.store.sqlite import file as sqlite_file

    # The ceiling is a ceiling, never a trigger: scaled down so that this load passes its restart point
    # many times over (the load writes ~15 MiB of WAL frames); the WAL file must never be larger.
    ceiling = 8 * 1024 * 1024
    monkeypatch.setattr(sqlite_file, "WAL_CEILING_BYTES", ceiling, raising=False)
    wal = tmp_path / "receiver.db-wal"
    peak = 0
    sampling = True

    def wal_bytes() -> int:
        try:
            return wal.stat().st_size
        except OSError:
            return 0

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, wal_bytes())
            await asyncio.sleep(0.002)

    async with serve_app(create_app(make_settings(tmp_path))) as server, server.client() as client:

        async def load(worker: int) -> None:
            nonlocal peak
            for i in range(300):
                body = json.dumps(
                    {
                        "request_id": f"w{worker}-{i}",
                        "status": "COMPLETED",
                        "output": {"media_url": [f"https://cdn.test/{'x' * 2000}/{i}.png"]},
                    }
                ).encode()
                await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", content=body)
                peak = max(peak, wal_bytes())

        async def read() -> None:  # readers keep the WAL from restarting, unless checkpoints handle them
            while True:
                await client.get("/v1/receipts?limit=50", headers=AUTH)

        readers = [asyncio.create_task(read()) for _ in range(2)]
        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(load(w) for w in range(6)))
        sampling = False
        await sampler
        for task in readers:
            task.cancel()
        deadline = time.monotonic() + 20
        while wal.exists() and wal.stat().st_size > 1024 * 1024 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        idle_size = wal.stat().st_size if wal.exists() else 0
    print(f"WAL peak {peak / 2**20:.1f} MiB, idle {idle_size / 2**20:.2f} MiB")
    assert peak > ceiling // 4, peak  # the load did reach the point where the WAL starts over
    assert peak <= ceiling, peak
    assert idle_size <= 1024 * 1024, idle_size  # truncated once the load stopped


HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("COMMIT")
"""


def hold_write_lock(path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


async def test_another_process_holding_the_lock_never_blocks_the_loop(tmp_path: Path) -> None:
    async with serve_app(create_app(make_settings(tmp_path))) as server, server.client() as client:
        holder = await asyncio.to_thread(hold_write_lock, tmp_path / "receiver.db", 3)
        webhook = asyncio.create_task(
            client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", content=pixazo("locked-1"))
        )
        await asyncio.sleep(0.3)
        started = time.monotonic()
        assert (await client.get("/healthz")).status_code == 200
        health_s = time.monotonic() - started
        reply = await webhook  # waited for the lock, without blocking anything else
        assert reply.status_code == 200
        await asyncio.to_thread(holder.communicate)
        holder = await asyncio.to_thread(hold_write_lock, tmp_path / "receiver.db", 8)
        try:
            late = await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", content=pixazo("locked-2"))
            assert late.status_code == 503 and late.json()["error"] == "store_unavailable"  # never a 500
        finally:
            await asyncio.to_thread(holder.communicate)
        assert (
            await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", content=pixazo("locked-2"))
        ).status_code == 200
    assert health_s < 1.0, health_s  # the old store blocked the loop for the whole busy timeout (5 s)


async def test_readyz_says_so_when_the_file_is_gone_or_replaced(tmp_path: Path) -> None:
    async with serve_app(create_app(make_settings(tmp_path))) as server, server.client() as client:
        assert (await client.get("/readyz")).json()["store"] == "ok"
        os.rename(tmp_path / "receiver.db", tmp_path / "moved.db")
        gone = await client.get("/readyz")
        assert gone.status_code == 503 and gone.json()["store"] == "unreachable"
        (tmp_path / "receiver.db").write_bytes(b"")  # a new, different file in its place
        replaced = await client.get("/readyz")
        assert replaced.status_code == 503
        os.replace(tmp_path / "moved.db", tmp_path / "receiver.db")
        assert (await client.get("/readyz")).status_code == 200


def test_receiver_info_does_not_wait_for_a_serving_lock(tmp_path: Path) -> None:
    """`info` reads a store that a server holds (the file lock keeps out only a second server)."""
    url = f"sqlite:///{tmp_path / 'receiver.db'}"

    async def serve_and_read() -> str:
        store = await open_store(url, exclusive=True)
        try:
            await store.secret("api_token", lambda: "kept-by-the-server")
            reader = await open_store(url, create=False)
            try:
                return await reader.secret("api_token", lambda: "never")
            finally:
                await reader.close()
        finally:
            await store.close()

    assert asyncio.run(serve_and_read()) == "kept-by-the-server"


async def test_a_provider_job_id_alone_is_searched_not_scanned(tmp_path: Path) -> None:
    """`GET /v1/jobs?provider_job_id=` without a provider finds its job through the unique
    (provider, provider_job_id) index, every provider listed, not by reading every job."""
    path = tmp_path / "find.db"
    s = await open_store(f"sqlite:///{path}")
    reads: list[tuple[str, tuple[object, ...]]] = []
    try:
        await s.apply(receipt(), [done(f"p{n}", f"https://a/{n}.jpg") for n in range(200)])
        await s.apply(receipt("oxen"), [done("p7", "https://o/7.png", provider="oxen")])
        fetch = s._fetch  # type: ignore[attr-defined]

        async def recording(sql: str, params: tuple[object, ...] = ()) -> list[object]:
            reads.append((sql, params))
            return await fetch(sql, params)  # type: ignore[no-any-return]

        s._fetch = recording  # type: ignore[attr-defined]
        page = await s.list_jobs(filters=JobFilter(provider_job_id="p7"), limit=10, cursor=None)
    finally:
        await s.close()
    assert sorted(j.provider for j in page.items) == ["oxen", "pixazo"]
    sql, params = next((sql, params) for sql, params in reads if "provider_job_id" in sql)
    with sqlite3.connect(path) as raw:
        plan = " / ".join(row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "SEARCH jobs USING INDEX sqlite_autoindex_jobs_2" in plan and "SCAN jobs" not in plan, plan
