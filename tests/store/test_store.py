"""The store suite: every test runs unchanged on SQLite and on PostgreSQL (see `store_url`).

"Several connections at once" means several store instances on one database for PostgreSQL (as
replicas are) and concurrent calls on the one instance for SQLite (one process owns its file).
"""

from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable

import pytest

from receiver.models import Completion, JobStatus, Outcome, Output, Receipt
from receiver.store import FinishedFilter, JobFilter, Store, open_store

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




# -- the jobs API (v0.2) ---------------------------------------------------------------------------

async def register(store: Store, pid: str, *, provider: str = "pixazo", callback_url: str | None = None,
                   expected_outputs: int | None = None) -> str:
    job, _ = await store.register_job(provider=provider, provider_job_id=pid, callback_url=callback_url,
                                      metadata={"m": 1}, expected_outputs=expected_outputs)
    return job.id


async def pending_message_urls(store: Store) -> list[str]:
    return sorted(m.url for m in await store.claim_due_messages(limit=100, lease_s=0.0))


async def test_update_job_changes_destination_metadata_and_pending_messages(store: Store) -> None:
    job_id = await register(store, "u1", callback_url="http://127.0.0.1:1/old")
    await store.apply(receipt(), [done("u1", "https://a/u1.jpg")])
    other = await store.redeliver_to(job_id, "http://127.0.0.1:1/elsewhere")
    assert other is not None
    job = await store.update_job(job_id, {"callback_url": "http://127.0.0.1:1/new", "metadata": {"x": 2}})
    assert job is not None and job.callback_url == "http://127.0.0.1:1/new" and job.metadata == {"x": 2}
    got = await store.get_job(job_id)
    assert got is not None and got.callback_url == "http://127.0.0.1:1/new" and got.metadata == {"x": 2}
    # The message to the old callback URL follows the job; one sent elsewhere on purpose stays.
    assert await pending_message_urls(store) == ["http://127.0.0.1:1/elsewhere", "http://127.0.0.1:1/new"]
    only_metadata = await store.update_job(job_id, {"metadata": {}})
    assert only_metadata is not None and only_metadata.callback_url == "http://127.0.0.1:1/new"
    assert await store.update_job("job_nope", {"metadata": {}}) is None


async def test_patched_metadata_is_what_the_result_carries(store: Store) -> None:
    job_id = await register(store, "u2", callback_url="http://127.0.0.1:1/cb")
    await store.update_job(job_id, {"metadata": {"v": 2}})
    await store.apply(receipt(), [done("u2", "https://a/u2.jpg")])
    (message,) = await store.claim_due_messages(limit=10, lease_s=30)
    assert b'"metadata":{"v":2}' in message.body
    (event,) = await store.events_after(0, 10)
    assert '"metadata":{"v":2}' in event.data


async def test_cancel_pending_job_then_result_changes_nothing(store: Store) -> None:
    job_id = await register(store, "c1", callback_url="http://127.0.0.1:1/cb")
    job, changed = await store.end_job(job_id, status=JobStatus.CANCELLED, error=None)
    assert changed and job is not None and job.status is JobStatus.CANCELLED and job.completed_at
    (event,) = await store.events_after(0, 10)
    assert event.type == "job.cancelled"
    assert await pending_message_urls(store) == ["http://127.0.0.1:1/cb"]
    late = await store.apply(receipt(), [done("c1", "https://a/late.jpg")])
    assert late.outcome is Outcome.DUPLICATE
    got = await store.get_job(job_id)
    assert got is not None and got.status is JobStatus.CANCELLED and got.outputs == []
    again, changed_again = await store.end_job(job_id, status=JobStatus.CANCELLED, error=None)
    assert not changed_again and again is not None and again.status is JobStatus.CANCELLED
    assert await store.end_job("job_nope", status=JobStatus.CANCELLED, error=None) == (None, False)
    assert len(await store.events_after(0, 10)) == 1


async def test_expire_fails_only_old_pending_jobs(store: Store) -> None:
    old = await register(store, "e1")
    finished = (await store.apply(receipt(), [done("e2", "https://a/e2.jpg")])).job_ids[0]
    cutoff = store.clock() + 1
    ids = await store.expire_jobs(created_before=cutoff, error="timed out", limit=10)
    assert ids == [old]
    got = await store.get_job(old)
    assert got is not None and got.status is JobStatus.FAILED and got.error == "timed out"
    assert (await store.get_job(finished)).status is JobStatus.SUCCEEDED  # type: ignore[union-attr]
    young = await register(store, "e3")
    assert await store.expire_jobs(created_before=cutoff - 3600, error="timed out", limit=10) == []
    assert (await store.get_job(young)).status is JobStatus.PENDING  # type: ignore[union-attr]


async def test_expire_from_two_replicas_fails_each_job_once(open_stores: Opener) -> None:
    first, second = await open_stores(), await open_stores()
    ids = [await register(first, f"x{i}") for i in range(20)]
    cutoff = first.clock() + 1
    import asyncio
    a, b = await asyncio.gather(*(s.expire_jobs(created_before=cutoff, error="late", limit=50) for s in (first, second)))
    assert sorted(a + b) == sorted(ids)
    assert len(await first.events_after(0, 100)) == 20


async def test_redeliver_finished_in_batches(store: Store) -> None:
    since = store.clock() - 1
    for i in range(7):
        await register(store, f"f{i}", callback_url="http://127.0.0.1:1/cb")
        await store.apply(receipt(), [done(f"f{i}", f"https://a/{i}.jpg")])
    await store.apply(receipt(), [done("nocb", "https://a/n.jpg")])  # no destination: not sent
    await register(store, "still")  # pending: not sent
    await store.claim_due_messages(limit=100, lease_s=3600)  # the first messages, out of the way
    total, after = 0, 0
    batches = 0
    while after is not None:
        queued, after = await store.redeliver_finished(FinishedFilter(since=since), after_seq=after, limit=3)
        total += queued
        batches += 1
    assert total == 7 and batches == 3
    assert len(await store.claim_due_messages(limit=100, lease_s=30)) == 7
    none, _ = await store.redeliver_finished(FinishedFilter(since=store.clock() + 10), after_seq=0, limit=10)
    other, _ = await store.redeliver_finished(FinishedFilter(since=since, provider="runware"), after_seq=0, limit=10)
    assert (none, other) == (0, 0)


async def test_discard_only_untouched_jobs(store: Store) -> None:
    untouched = await register(store, "d1", provider="runware", expected_outputs=2)
    touched = await register(store, "d2", provider="runware", expected_outputs=2)
    await store.apply(receipt("runware"), [image("d2", "a")])
    assert await store.discard_job(untouched) and await store.get_job(untouched) is None
    assert not await store.discard_job(touched) and await store.get_job(touched) is not None
    assert not await store.discard_job("job_nope")


async def test_idempotency_key_claims(open_stores: Opener) -> None:
    import asyncio
    first, second = await open_stores(), await open_stores()
    claims = await asyncio.gather(*(s.claim_idempotency_key("k1", fingerprint="f", ttl_s=60, stale_s=30)
                                    for s in (first, second, first, second)))
    assert sorted(c.state for c in claims) == ["new", "pending", "pending", "pending"]
    await first.finish_idempotency_key("k1", ["job_a", "job_b"])
    done_claim = await second.claim_idempotency_key("k1", fingerprint="g", ttl_s=60, stale_s=30)
    assert (done_claim.state, done_claim.fingerprint, done_claim.job_ids) == ("done", "f", ("job_a", "job_b"))
    # Past its time the key is free again; a refused submission's claim is released at once.
    assert (await first.claim_idempotency_key("k1", fingerprint="h", ttl_s=0, stale_s=0)).state == "new"
    await first.release_idempotency_key("k1")
    assert (await second.claim_idempotency_key("k1", fingerprint="i", ttl_s=60, stale_s=30)).state == "new"
    await first.prune_idempotency_keys(older_than=first.clock() + 1)
    assert (await second.claim_idempotency_key("k1", fingerprint="j", ttl_s=60, stale_s=30)).state == "new"
