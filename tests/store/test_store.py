"""The store suite: every test runs unchanged on SQLite and on PostgreSQL (see `store_url`).

"Several connections at once" means several store instances on one database for PostgreSQL (as
replicas are) and concurrent calls on the one instance for SQLite (one process owns its file).
"""

from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable

import pytest

from receiver.models import Completion, JobStatus, Outcome, Output, Receipt
from receiver.store import JobFilter, Store, open_store

Opener = Callable[..., Awaitable[Store]]


@pytest.fixture
async def open_stores(store_url: str) -> AsyncIterator[Opener]:
    """`await open_stores(**options)`: another store on the same database (a replica), closed after the test."""
    opened: list[Store] = []

    async def opener(**options: object) -> Store:
        if store_url.startswith("sqlite") and opened and not options:
            return opened[0]  # one process owns a SQLite file: "another replica" is the same store
        store = await open_store(store_url, **options)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield opener
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def store(open_stores: Opener) -> Store:
    return await open_stores()


def receipt(provider: str = "pixazo", body: bytes = b"{}") -> Receipt:
    return Receipt(provider=provider, source="webhook", body=body)


def done(pid: str, *urls: str, provider: str = "pixazo") -> Completion:
    return Completion(provider, pid, JobStatus.SUCCEEDED, outputs=tuple(Output(u, "image/jpeg") for u in urls))


def image(task: str, key: str) -> Completion:
    return Completion("runware", task, JobStatus.SUCCEEDED, outputs=(Output(f"https://im/{key}.jpg", "image/jpeg", key),), partial=True)


async def test_completion_before_registration_is_claimed(store: Store) -> None:
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


async def test_registration_first_then_completion(store: Store) -> None:
    job, created = await store.register_job(
        provider="pixazo", provider_job_id="r2", callback_url=None, metadata={}, expected_outputs=None
    )
    assert created and job.status is JobStatus.PENDING
    result = await store.apply(receipt(), [done("r2", "https://a/2.jpg")])
    assert result.job_ids == [job.id]
    got = await store.get_job(job.id)
    assert got is not None and got.status is JobStatus.SUCCEEDED and got.completed_at is not None
    assert [o.url for o in got.outputs] == ["https://a/2.jpg"]


async def test_duplicate_changes_nothing_and_terminal_never_reverts(store: Store) -> None:
    first = await store.apply(receipt(), [done("r3", "https://a/3.jpg")])
    dup = await store.apply(receipt(), [done("r3", "https://a/3.jpg")])
    late_failure = await store.apply(receipt(), [Completion("pixazo", "r3", JobStatus.FAILED, error="late")])
    progress = await store.apply(receipt(), [Completion("pixazo", "r3", JobStatus.PENDING)])
    assert (dup.outcome, late_failure.outcome, progress.outcome) == (Outcome.DUPLICATE, Outcome.DUPLICATE, Outcome.IGNORED)
    job = await store.get_job(first.job_ids[0])
    assert job is not None and job.status is JobStatus.SUCCEEDED and job.error is None
    assert len(await store.events_after(0, 10)) == 1


async def test_progress_for_unknown_job_creates_nothing(store: Store) -> None:
    result = await store.apply(receipt("apiframe"), [Completion("apiframe", "a1", JobStatus.PENDING)])
    assert result.outcome is Outcome.IGNORED and result.job_ids == []
    assert (await store.list_jobs(filters=JobFilter(), limit=10, cursor=None)).items == []
    receipts = (await store.list_receipts(provider=None, outcome=None, limit=10, cursor=None)).items
    assert receipts[0].outcome is Outcome.IGNORED and receipts[0].provider_job_ids == ["a1"]


async def test_runware_collects_expected_images(store: Store) -> None:
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


async def test_runware_pending_until_count_then_registration_completes(store: Store) -> None:
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


async def test_runware_late_image_after_early_completion_is_kept(store: Store) -> None:
    first = await store.apply(receipt("runware"), [image("t3", "a")])
    late = await store.apply(receipt("runware"), [image("t3", "b")])
    assert late.outcome is Outcome.APPLIED and late.terminal_job_ids == []
    job = await store.get_job(first.job_ids[0])
    assert job is not None and len(job.outputs) == 2 and job.status is JobStatus.SUCCEEDED


async def test_failure_keeps_message_and_is_one_event(store: Store) -> None:
    result = await store.apply(receipt(), [Completion("pixazo", "r4", JobStatus.FAILED, error="Insufficient Balance")])
    job = await store.get_job(result.job_ids[0])
    assert job is not None and job.status is JobStatus.FAILED and job.error == "Insufficient Balance"
    (event,) = await store.events_after(0, 10)
    assert event.type == "job.failed" and job.id in event.data


async def test_invalid_receipt_keeps_raw_bytes(store: Store) -> None:
    raw = b"\xff\x00 not json"
    rid = await store.record_invalid(receipt(body=raw), "body is not valid UTF-8")
    (stored,) = (await store.list_receipts(provider="pixazo", outcome=Outcome.INVALID, limit=5, cursor=None)).items
    assert stored.id == rid and stored.body == raw and stored.error == "body is not valid UTF-8"
    assert "body_base64" in stored.to_json()


async def test_pagination_newest_first(store: Store) -> None:
    for i in range(7):
        await store.apply(receipt(), [done(f"p{i}", f"https://a/{i}.jpg")])
    seen, cursor = [], None
    while True:
        page = await store.list_jobs(filters=JobFilter(provider="pixazo", status="succeeded"), limit=3, cursor=cursor)
        seen += [j.provider_job_id for j in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"p{i}" for i in reversed(range(7))]
    assert (await store.list_jobs(filters=JobFilter(provider="oxen"), limit=3, cursor=None)).items == []


