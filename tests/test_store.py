"""The SQLite store on real files: correlation, idempotence, Runware collection, persistence."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import AsyncIterator

import pytest

from receiver.models import Completion, DeliveryStatus, JobStatus, Outcome, Output, Receipt
from receiver.store import SQLiteStore, open_store
from receiver.store.schema import MIGRATIONS


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await open_store(f"sqlite:///{tmp_path / 'r.db'}")
    yield s
    await s.close()


def receipt(provider: str = "pixazo", body: bytes = b"{}") -> Receipt:
    return Receipt(provider=provider, source="webhook", body=body)


def done(pid: str, *urls: str, provider: str = "pixazo") -> Completion:
    return Completion(provider, pid, JobStatus.SUCCEEDED, outputs=tuple(Output(u, "image/jpeg") for u in urls))


def image(task: str, key: str) -> Completion:
    return Completion("runware", task, JobStatus.SUCCEEDED, outputs=(Output(f"https://im/{key}.jpg", "image/jpeg", key),), partial=True)


async def test_completion_before_registration_is_claimed(store: SQLiteStore) -> None:
    result = await store.apply(receipt(), [done("r1", "https://a/1.jpg")])
    assert result.outcome is Outcome.APPLIED and result.terminal_job_ids == result.job_ids
    job, created = await store.register_job(
        provider="pixazo", provider_job_id="r1", callback_url=None, metadata={"k": "v"}, expected_outputs=None
    )
    assert not created
    assert job.id == result.job_ids[0]
    assert job.status is JobStatus.SUCCEEDED and job.metadata == {"k": "v"} and job.registered
    again, created_again = await store.register_job(
        provider="pixazo", provider_job_id="r1", callback_url=None, metadata={"other": 1}, expected_outputs=None
    )
    assert not created_again and again.id == job.id and again.metadata == {"k": "v"}


async def test_registration_first_then_completion(store: SQLiteStore) -> None:
    job, created = await store.register_job(
        provider="pixazo", provider_job_id="r2", callback_url=None, metadata={}, expected_outputs=None
    )
    assert created and job.status is JobStatus.PENDING
    result = await store.apply(receipt(), [done("r2", "https://a/2.jpg")])
    assert result.job_ids == [job.id]
    got = await store.get_job(job.id)
    assert got is not None and got.status is JobStatus.SUCCEEDED and got.completed_at is not None
    assert [o.url for o in got.outputs] == ["https://a/2.jpg"]


async def test_duplicate_changes_nothing_and_terminal_never_reverts(store: SQLiteStore) -> None:
    first = await store.apply(receipt(), [done("r3", "https://a/3.jpg")])
    dup = await store.apply(receipt(), [done("r3", "https://a/3.jpg")])
    late_failure = await store.apply(receipt(), [Completion("pixazo", "r3", JobStatus.FAILED, error="late")])
    progress = await store.apply(receipt(), [Completion("pixazo", "r3", JobStatus.PENDING)])
    assert (dup.outcome, late_failure.outcome, progress.outcome) == (Outcome.DUPLICATE, Outcome.DUPLICATE, Outcome.IGNORED)
    job = await store.get_job(first.job_ids[0])
    assert job is not None and job.status is JobStatus.SUCCEEDED and job.error is None
    assert len(await store.events_after(0, 10)) == 1


async def test_progress_for_unknown_job_creates_nothing(store: SQLiteStore) -> None:
    result = await store.apply(receipt("apiframe"), [Completion("apiframe", "a1", JobStatus.PENDING)])
    assert result.outcome is Outcome.IGNORED and result.job_ids == []
    assert (await store.list_jobs(provider=None, status=None, limit=10, cursor=None)).items == []
    receipts = (await store.list_receipts(provider=None, outcome=None, limit=10, cursor=None)).items
    assert receipts[0].outcome is Outcome.IGNORED and receipts[0].provider_job_ids == ["a1"]


async def test_runware_collects_expected_images(store: SQLiteStore) -> None:
    job, _ = await store.register_job(
        provider="runware", provider_job_id="t1", callback_url=None, metadata={}, expected_outputs=3
    )
    outcomes = []
    for key in ("i1", "i2", "i2", "i3"):
        outcomes.append((await store.apply(receipt("runware"), [image("t1", key)])).outcome)
    assert outcomes == [Outcome.APPLIED, Outcome.APPLIED, Outcome.DUPLICATE, Outcome.APPLIED]
    got = await store.get_job(job.id)
    assert got is not None and got.status is JobStatus.SUCCEEDED
    assert [o.url for o in got.outputs] == ["https://im/i1.jpg", "https://im/i2.jpg", "https://im/i3.jpg"]


async def test_runware_pending_until_count_then_registration_completes(store: SQLiteStore) -> None:
    # Images for an unregistered task complete it at one image; a task registered with a count waits.
    job, _ = await store.register_job(
        provider="runware", provider_job_id="t2", callback_url=None, metadata={}, expected_outputs=2
    )
    await store.apply(receipt("runware"), [image("t2", "a")])
    mid = await store.get_job(job.id)
    assert mid is not None and mid.status is JobStatus.PENDING and len(mid.outputs) == 1
    await store.apply(receipt("runware"), [image("t2", "b")])
    end = await store.get_job(job.id)
    assert end is not None and end.status is JobStatus.SUCCEEDED


async def test_runware_late_image_after_early_completion_is_kept(store: SQLiteStore) -> None:
    first = await store.apply(receipt("runware"), [image("t3", "a")])
    late = await store.apply(receipt("runware"), [image("t3", "b")])
    assert late.outcome is Outcome.APPLIED and late.terminal_job_ids == []
    job = await store.get_job(first.job_ids[0])
    assert job is not None and len(job.outputs) == 2 and job.status is JobStatus.SUCCEEDED


async def test_failure_keeps_message_and_is_one_event(store: SQLiteStore) -> None:
    result = await store.apply(receipt(), [Completion("pixazo", "r4", JobStatus.FAILED, error="Insufficient Balance")])
    job = await store.get_job(result.job_ids[0])
    assert job is not None and job.status is JobStatus.FAILED and job.error == "Insufficient Balance"
    (event,) = await store.events_after(0, 10)
    assert event.type == "job.failed" and job.id in event.data


async def test_invalid_receipt_keeps_raw_bytes(store: SQLiteStore) -> None:
    raw = b"\xff\x00 not json"
    rid = await store.record_invalid(receipt(body=raw), "body is not valid UTF-8")
    (stored,) = (await store.list_receipts(provider="pixazo", outcome=Outcome.INVALID, limit=5, cursor=None)).items
    assert stored.id == rid and stored.body == raw and stored.error == "body is not valid UTF-8"
    assert "body_base64" in stored.to_json()


async def test_pagination_newest_first(store: SQLiteStore) -> None:
    for i in range(7):
        await store.apply(receipt(), [done(f"p{i}", f"https://a/{i}.jpg")])
    seen, cursor = [], None
    while True:
        page = await store.list_jobs(provider="pixazo", status="succeeded", limit=3, cursor=cursor)
        seen += [j.provider_job_id for j in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"p{i}" for i in reversed(range(7))]
    assert (await store.list_jobs(provider="oxen", status=None, limit=3, cursor=None)).items == []


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
