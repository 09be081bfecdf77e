"""What only the SQLite store has: one file, one process, WAL, reopening, schema upgrades."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from receiver.models import DeliveryStatus, JobStatus, Outcome
from receiver.store import open_store
from receiver.store.schema import MIGRATIONS
from tests.store.test_store import done, receipt


async def test_default_callback_gets_unregistered_results(tmp_path: Path) -> None:
    s = await open_store(f"sqlite:///{tmp_path / 'd.db'}", default_callback_url="http://127.0.0.1:9/cb")
    try:
        result = await s.apply(receipt(), [done("r5", "https://a/5.jpg")])
        job = await s.get_job(result.job_ids[0])
        assert job is not None and job.delivery_status is DeliveryStatus.PENDING
        (message,) = await s.claim_due_messages(limit=10, lease_s=5)
        assert message.url == "http://127.0.0.1:9/cb" and message.job_id == job.id
        assert await s.claim_due_messages(limit=10, lease_s=5) == []  # leased
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
    assert int(version) == len(MIGRATIONS)


async def test_schema_upgrades_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:  # a database from before any migration ran
        raw.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        raw.execute("INSERT INTO meta VALUES ('secret:api_token', 'kept')")
    s = await open_store(f"sqlite:///{path}")
    try:
        assert await s.secret("api_token", lambda: "new") == "kept"
        await s.apply(receipt(), [done("r7", "https://a/7.jpg")])
    finally:
        await s.close()


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
