"""The store suite: every test runs unchanged on SQLite and on PostgreSQL (see `store_url`).

"Several connections at once" means several store instances on one database, as replicas are.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from receiver.models import Completion, JobStatus, Outcome, Output, Receipt
from receiver.store import FinishedFilter, JobFilter, Store, open_store
from receiver.store import base as store_base
from receiver.tuning import REPLICAS

Opener = Callable[..., Awaitable[Store]]


@pytest.fixture
async def open_stores(store_url: str) -> AsyncIterator[Opener]:
    """`await open_stores(**options)`: another store on the same database (a replica), closed after the test."""
    opened: list[Store] = []

    async def opener(**options: object) -> Store:
        # Without `exclusive` (which `receiver serve` sets) SQLite too lets several stores share a file:
        # each a writer of its own, as replicas are on PostgreSQL.
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
    return Completion(
        "runware",
        task,
        JobStatus.SUCCEEDED,
        outputs=(Output(f"https://im/{key}.jpg", "image/jpeg", key),),
        partial=True,
    )


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
    assert (dup.outcome, late_failure.outcome, progress.outcome) == (
        Outcome.DUPLICATE,
        Outcome.DUPLICATE,
        Outcome.IGNORED,
    )
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


# -- several replicas at once ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_same_delivery_on_several_replicas_changes_the_job_once(open_stores: Opener) -> None:
    stores = [await open_stores(default_callback_url="http://127.0.0.1:9/cb") for _ in range(4)]
    results = await asyncio.gather(
        *(s.apply(receipt(), [done("dup1", "https://a/d.jpg")]) for s in stores for _ in range(3))
    )
    assert sorted(r.outcome.value for r in results) == ["applied"] + ["duplicate"] * 11
    assert len({r.job_ids[0] for r in results}) == 1
    assert len(await stores[0].events_after(0, 10)) == 1
    claimed = (await stores[1].claim_due(limit=10, lease_s=30)).messages
    assert len(claimed) == 1  # one callback queued, not one per replica


async def test_runware_images_at_once_on_several_replicas(open_stores: Opener) -> None:
    stores = [await open_stores() for _ in range(3)]
    job, _ = await stores[0].register_job(
        provider="runware", provider_job_id="par", callback_url=None, metadata={}, expected_outputs=6
    )
    await asyncio.gather(*(stores[i % 3].apply(receipt("runware"), [image("par", f"k{i}")]) for i in range(6)))
    got = await stores[2].get_job(job.id)
    assert got is not None and got.status is JobStatus.SUCCEEDED
    assert sorted(o.key or "" for o in got.outputs) == [f"k{i}" for i in range(6)]
    assert len(await stores[0].events_after(0, 10)) == 1


async def test_message_claims_are_exclusive(open_stores: Opener) -> None:
    stores = [await open_stores(default_callback_url="http://127.0.0.1:9/cb") for _ in range(3)]
    await asyncio.gather(*(stores[0].apply(receipt(), [done(f"c{i}", f"https://a/{i}.jpg")]) for i in range(30)))
    claims = await asyncio.gather(*(s.claim_due(limit=7, lease_s=30) for s in stores for _ in range(3)))
    seqs = [m.seq for claim in claims for m in claim.messages]
    assert len(seqs) == len(set(seqs)) == 30  # every message once, none twice
    assert (await stores[1].claim_due(limit=50, lease_s=30)).messages == []


async def test_poll_claims_are_exclusive_and_leased(open_stores: Opener) -> None:
    clock = FakeClock()
    stores = [await open_stores(reconcile_after_s=10, clock=clock) for _ in range(3)]
    for i in range(12):
        await stores[0].register_job(
            provider="pixazo", provider_job_id=f"poll{i}", callback_url=None, metadata={}, expected_outputs=None
        )
    assert await stores[1].claim_due_polls(providers=["pixazo"], limit=50, lease_s=60) == []  # not due yet
    clock.now += 11
    claims = await asyncio.gather(*(s.claim_due_polls(providers=["pixazo"], limit=5, lease_s=60) for s in stores))
    ids = [j.id for claim in claims for j in claim]
    assert len(ids) == len(set(ids)) == 12
    clock.now += 30
    assert await stores[2].claim_due_polls(providers=["pixazo"], limit=50, lease_s=60) == []  # leased
    clock.now += 31
    assert len(await stores[2].claim_due_polls(providers=["pixazo"], limit=50, lease_s=60)) == 12  # lease ran out


async def test_lease_hand_over_with_fencing_terms(open_stores: Opener) -> None:
    clock = FakeClock()
    a, b = await open_stores(clock=clock), await open_stores(clock=clock)
    assert await a.acquire_lease("oxen_stream", ttl_s=15) == 1
    assert await b.acquire_lease("oxen_stream", ttl_s=15) is None
    clock.now += 10
    assert await a.acquire_lease("oxen_stream", ttl_s=15) == 1  # renewed, same term
    clock.now += 14
    assert await b.acquire_lease("oxen_stream", ttl_s=15) is None  # still a's
    clock.now += 2
    assert await b.acquire_lease("oxen_stream", ttl_s=15) == 2  # a stopped renewing: b takes over
    assert await a.acquire_lease("oxen_stream", ttl_s=15) is None
    await b.release_lease("oxen_stream")
    assert await a.acquire_lease("oxen_stream", ttl_s=15) == 3  # released: no wait


async def test_secrets_are_the_same_on_replicas_starting_at_once(open_stores: Opener) -> None:
    stores = await asyncio.gather(*(open_stores() for _ in range(4)))

    def candidate(i: int) -> Callable[[], str]:
        return lambda: f"candidate-{i}"

    values = await asyncio.gather(*(s.secret("api_token", candidate(i)) for i, s in enumerate(stores)))
    assert len(set(values)) == 1


async def test_a_resumed_reader_never_skips_an_event(open_stores: Opener) -> None:
    writers = [await open_stores() for _ in range(8)]
    reader = await open_stores()
    seen: list[int] = []
    stop = asyncio.Event()

    async def follow() -> None:
        after = 0
        while True:
            finished = stop.is_set()
            for event in await reader.events_after(after, 1000):
                seen.append(event.seq)
                after = event.seq
            if finished:
                return
            await asyncio.sleep(0)

    follower = asyncio.create_task(follow())
    await asyncio.gather(*(writers[i % 8].apply(receipt(), [done(f"ev{i}", f"https://a/{i}.jpg")]) for i in range(400)))
    stop.set()
    await follower
    everything = [e.seq for e in await reader.events_after(0, 1000)]
    assert len(everything) == 400
    assert seen == everything  # in order, and nothing the follower passed turned up behind it later


async def test_calls_of_a_gone_replica_are_orphans(open_stores: Opener) -> None:
    clock = FakeClock()
    a, b = await open_stores(clock=clock), await open_stores(clock=clock)
    await a.heartbeat()
    await b.heartbeat()
    job, _ = await a.register_job(
        provider="lumenfall",
        provider_job_id="lf_x",
        callback_url=None,
        metadata={},
        expected_outputs=None,
        owner=a.replica_id,
    )
    assert await b.orphaned_jobs("lumenfall") == []  # its replica is alive
    clock.now += REPLICAS.ttl_s + 1
    await b.heartbeat()  # b lives on, a has stopped
    assert [j.id for j in await b.orphaned_jobs("lumenfall")] == [job.id]


async def test_receipts_know_their_jobs_and_filter_by_job(store: Store) -> None:
    first = await store.apply(receipt(), [done("rj1", "https://a/1.jpg")])
    await store.apply(receipt(), [done("rj2", "https://a/2.jpg")])
    again = await store.apply(receipt(), [done("rj1", "https://a/1.jpg")])
    page = await store.list_receipts(provider=None, outcome=None, limit=10, cursor=None, job_id=first.job_ids[0])
    assert [r.id for r in page.items] == [again.receipt_id, first.receipt_id]
    assert all(r.job_ids == first.job_ids for r in page.items)


async def test_job_filters(store: Store) -> None:
    clock_jobs = []
    for i in range(3):
        clock_jobs.append(
            (
                await store.register_job(
                    provider="runware", provider_job_id=f"f{i}", callback_url=None, metadata={}, expected_outputs=None
                )
            )[0]
        )
    await store.apply(receipt("runware"), [image("f1", "x")])
    assert [
        j.provider_job_id
        for j in (await store.list_jobs(filters=JobFilter(provider_job_id="f2"), limit=10, cursor=None)).items
    ] == ["f2"]
    assert [
        j.provider_job_id
        for j in (await store.list_jobs(filters=JobFilter(status="succeeded"), limit=10, cursor=None)).items
    ] == ["f1"]
    assert [
        j.provider_job_id
        for j in (
            await store.list_jobs(filters=JobFilter(delivery_status="none", status="pending"), limit=10, cursor=None)
        ).items
    ] == ["f2", "f0"]
    assert (await store.list_jobs(filters=JobFilter(since=4_000_000_000), limit=10, cursor=None)).items == []
    assert len((await store.list_jobs(filters=JobFilter(until=4_000_000_000), limit=10, cursor=None)).items) == 3


async def test_pages_stop_at_the_byte_budget(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    big = b'{"x": "' + b"a" * 300_000 + b'"}'
    ids = [await store.record_invalid(receipt(body=big), "too big to list whole") for _ in range(40)]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = await store.list_receipts(provider=None, outcome=None, limit=500, cursor=cursor)
        assert sum(len(r.body) for r in page.items) <= store_base.PAGE_BUDGET_BYTES + len(big)
        seen += [r.id for r in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True) and pages > 1


# -- media mirroring: mirror tasks hold a succeeded job's event and callback back -------------------


async def test_mirroring_defers_event_and_callback_until_outputs_are_done(open_stores: Opener) -> None:
    from receiver.store.rules import MirrorResult

    store = await open_stores(mirroring=True, default_callback_url="http://127.0.0.1:9/cb")
    result = await store.apply(receipt(), [done("m1", "https://a/1.jpg", "https://a/2.jpg")])
    job = await store.get_job(result.job_ids[0])
    assert job is not None and job.status is JobStatus.SUCCEEDED  # at once: long-poll and status unaffected
    assert [o.stored_url for o in job.outputs] == [None, None]
    assert await store.events_after(0, 10) == []
    assert (await store.claim_due(limit=10, lease_s=30)).messages == []

    tasks = await store.claim_mirror_tasks(limit=10, lease_s=60)
    assert sorted((t.job_id, t.index, t.url, t.attempts) for t in tasks) == [
        (job.id, 0, "https://a/1.jpg", 1),
        (job.id, 1, "https://a/2.jpg", 1),
    ]
    assert await store.claim_mirror_tasks(limit=10, lease_s=60) == []  # leased: nobody else takes them
    first, second = sorted(tasks, key=lambda t: t.index)
    await store.finish_mirror_task(first, MirrorResult("http://r/media/x", "ab" * 32, 5, "image/jpeg"))
    assert await store.events_after(0, 10) == []  # one output still waits
    await store.finish_mirror_task(second, MirrorResult(error="the origin answered 404"))
    await store.finish_mirror_task(second, MirrorResult(error="again"))  # finished already: no-op
    events = await store.events_after(0, 10)
    assert len(events) == 1 and '"stored_url":"http://r/media/x"' in events[0].data
    messages = (await store.claim_due(limit=10, lease_s=30)).messages
    assert len(messages) == 1 and b'"mirror_error":"the origin answered 404"' in messages[0].body
    job = await store.get_job(job.id)
    assert job is not None and job.outputs[0].sha256 == "ab" * 32 and job.outputs[0].size == 5
    assert job.outputs[1].mirror_error == "the origin answered 404" and job.outputs[1].stored_url is None
    media = await store.media_object("ab" * 32)
    assert media is not None and media.size == 5 and media.content_type == "image/jpeg" and media.deleted_at is None


async def test_mirror_task_retry_lease_and_expiry(open_stores: Opener) -> None:
    from receiver.store.rules import MirrorResult

    store = await open_stores(mirroring=True)
    await store.apply(receipt(), [done("m2", "https://a/3.jpg")])
    (task,) = await store.claim_mirror_tasks(limit=10, lease_s=0.01)
    import asyncio

    await asyncio.sleep(0.05)
    (again,) = await store.claim_mirror_tasks(limit=10, lease_s=60)  # the lease ran out: claimed anew
    assert again.seq == task.seq and again.attempts == 2
    await store.retry_mirror_task(again, next_attempt_at=store.clock() + 3600, error="timeout")
    assert await store.claim_mirror_tasks(limit=10, lease_s=60) == []  # not due yet
    await store.finish_mirror_task(again, MirrorResult("u", "cd" * 32, 1, "image/png"))
    assert len(await store.events_after(0, 10)) == 1
    expired = await store.expire_media(before=store.clock() + 1, limit=10)
    assert [m.sha256 for m in expired] == ["cd" * 32]
    gone = await store.media_object("cd" * 32)
    assert gone is not None and gone.deleted_at is not None
    assert await store.expire_media(before=store.clock() + 1, limit=10) == []


async def test_mirroring_off_and_failed_jobs_are_announced_at_once(open_stores: Opener) -> None:
    plain = await open_stores()
    await plain.apply(receipt(), [done("m3", "https://a/4.jpg")])
    assert len(await plain.events_after(0, 10)) == 1 and await plain.claim_mirror_tasks(limit=10, lease_s=5) == []
    mirroring = await open_stores(mirroring=True)
    await mirroring.apply(receipt(), [Completion("pixazo", "m4", JobStatus.FAILED, error="no")])
    assert (
        len(await mirroring.events_after(0, 10)) == 2 and await mirroring.claim_mirror_tasks(limit=10, lease_s=5) == []
    )


async def test_registration_of_a_job_awaiting_its_mirror_calls_back_once(open_stores: Opener) -> None:
    from receiver.store.rules import MirrorResult

    store = await open_stores(mirroring=True)
    result = await store.apply(receipt(), [done("m5", "https://a/5.jpg")])
    await store.register_job(
        provider="pixazo",
        provider_job_id="m5",
        callback_url="http://127.0.0.1:9/mine",
        metadata={},
        expected_outputs=None,
    )
    assert (await store.claim_due(limit=10, lease_s=30)).messages == []  # not before its mirror
    (task,) = await store.claim_mirror_tasks(limit=10, lease_s=60)
    await store.finish_mirror_task(task, MirrorResult(error="refused"))
    messages = (await store.claim_due(limit=10, lease_s=30)).messages
    assert [m.url for m in messages] == ["http://127.0.0.1:9/mine"] and messages[0].job_id == result.job_ids[0]


async def test_replicas_claim_disjoint_mirror_tasks(open_stores: Opener) -> None:
    import asyncio

    first = await open_stores(mirroring=True)
    second = await open_stores(mirroring=True)
    await first.apply(receipt(), [done("m6", *[f"https://a/6-{i}.jpg" for i in range(12)])])
    a, b = await asyncio.gather(
        first.claim_mirror_tasks(limit=8, lease_s=60), second.claim_mirror_tasks(limit=8, lease_s=60)
    )
    claimed = [t.index for t in a] + [t.index for t in b]
    assert sorted(claimed) == list(range(12))  # each output once, by one replica
    assert await second.claim_mirror_tasks(limit=8, lease_s=60) == []


# -- what the jobs API asks of the store: patch, cancel, timeouts, redelivery, idempotency ----------


async def register(
    store: Store,
    pid: str,
    *,
    provider: str = "pixazo",
    callback_url: str | None = None,
    expected_outputs: int | None = None,
) -> str:
    job, _ = await store.register_job(
        provider=provider,
        provider_job_id=pid,
        callback_url=callback_url,
        metadata={"m": 1},
        expected_outputs=expected_outputs,
    )
    return job.id


async def pending_message_urls(store: Store) -> list[str]:
    return sorted(m.url for m in (await store.claim_due(limit=100, lease_s=0.0)).messages)


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
    (message,) = (await store.claim_due(limit=10, lease_s=30)).messages
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

    a, b = await asyncio.gather(
        *(s.expire_jobs(created_before=cutoff, error="late", limit=50) for s in (first, second))
    )
    assert sorted(a + b) == sorted(ids)
    assert len(await first.events_after(0, 100)) == 20


async def test_redeliver_finished_in_batches(store: Store) -> None:
    since = store.clock() - 1
    for i in range(7):
        await register(store, f"f{i}", callback_url="http://127.0.0.1:1/cb")
        await store.apply(receipt(), [done(f"f{i}", f"https://a/{i}.jpg")])
    await store.apply(receipt(), [done("nocb", "https://a/n.jpg")])  # no destination: not sent
    await register(store, "still")  # pending: not sent
    await store.claim_due(limit=100, lease_s=3600)  # the first messages, out of the way
    total = 0
    after: int | None = 0
    batches = 0
    while after is not None:
        queued, after = await store.redeliver_finished(FinishedFilter(since=since), after_seq=after, limit=3)
        total += queued
        batches += 1
    assert total == 7 and batches == 3
    assert len((await store.claim_due(limit=100, lease_s=30)).messages) == 7
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
    claims = await asyncio.gather(
        *(s.claim_idempotency_key("k1", fingerprint="f", ttl_s=60, stale_s=30) for s in (first, second, first, second))
    )
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


async def test_progress_names_its_job_without_changing_it(store: Store) -> None:
    job, _ = await store.register_job(
        provider="apiframe", provider_job_id="prog1", callback_url=None, metadata={}, expected_outputs=None
    )
    result = await store.apply(receipt("apiframe"), [Completion("apiframe", "prog1", JobStatus.PENDING)])
    assert result.outcome is Outcome.IGNORED and result.job_ids == [job.id] and result.terminal_job_ids == []
    (stored,) = (await store.list_receipts(provider=None, outcome=None, limit=5, cursor=None, job_id=job.id)).items
    assert stored.id == result.receipt_id and stored.job_ids == [job.id]
    still = await store.get_job(job.id)
    assert still is not None and still.status is JobStatus.PENDING and still.outputs == []


# -- a message's destination, its retries and its claims (v0.3) ------------------------------------------

OLD, NEW = "http://127.0.0.1:1/old", "http://127.0.0.1:1/new"


async def test_an_attempt_answered_after_a_patch_is_logged_where_it_went_and_sent_again(open_stores: Opener) -> None:
    """The worker's replica claimed the message and sent it to the old URL; the PATCH (on another replica)
    is acknowledged before the answer comes. The attempt is logged under the old URL, and the message is
    not taken for delivered: it is due again, to the new URL."""
    worker, api = await open_stores(), await open_stores()
    job_id = await register(api, "race1", callback_url=OLD)
    await api.apply(receipt(), [done("race1", "https://a/race1.jpg")])
    (claimed,) = (await worker.claim_due(limit=10, lease_s=30)).messages
    assert claimed.url == OLD
    assert await api.update_job(job_id, {"callback_url": NEW}) is not None
    await worker.record_attempt(claimed, status_code=200, error=None, outcome="delivered", next_attempt_at=None)
    (attempt,) = await api.list_deliveries(job_id)
    assert (attempt.url, attempt.status_code, attempt.message_id) == (OLD, 200, claimed.id)
    job = await api.get_job(job_id)
    assert job is not None and job.delivery_status.value == "pending"
    (again,) = (await worker.claim_due(limit=10, lease_s=30)).messages
    assert (again.id, again.url, again.attempts) == (claimed.id, NEW, 1)
    await worker.record_attempt(again, status_code=200, error=None, outcome="delivered", next_attempt_at=None)
    assert [(a.url, a.attempt) for a in await api.list_deliveries(job_id)] == [(OLD, 1), (NEW, 2)]
    job = await api.get_job(job_id)
    assert job is not None and job.delivery_status.value == "delivered"


async def test_a_failed_attempt_to_the_old_url_after_a_patch_does_not_fail_the_message(store: Store) -> None:
    job_id = await register(store, "race2", callback_url=OLD)
    await store.apply(receipt(), [done("race2", "https://a/race2.jpg")])
    (claimed,) = (await store.claim_due(limit=10, lease_s=30)).messages
    await store.update_job(job_id, {"callback_url": NEW})
    await store.record_attempt(claimed, status_code=410, error="HTTP 410", outcome="failed", next_attempt_at=None)
    (again,) = (await store.claim_due(limit=10, lease_s=30)).messages
    assert again.url == NEW and again.status == "pending"


async def test_redeliver_makes_the_waiting_message_due_instead_of_adding_one(store: Store) -> None:
    job_id = await register(store, "wait1", callback_url=OLD)
    await store.apply(receipt(), [done("wait1", "https://a/wait1.jpg")])
    (claimed,) = (await store.claim_due(limit=10, lease_s=30)).messages
    later = store.clock() + 3600
    await store.record_attempt(claimed, status_code=503, error="HTTP 503", outcome="retry", next_attempt_at=later)
    assert (await store.claim_due(limit=10, lease_s=30)).messages == []  # waiting for its retry, an hour away
    (waiting,) = await store.waiting_messages(job_id)
    assert (waiting.id, waiting.attempts, waiting.next_attempt_at) == (claimed.id, 1, later)
    found = await store.redeliver(job_id)
    assert found is not None
    message, retried = found
    assert retried and message.id == claimed.id and message.next_attempt_at <= store.clock()
    (due,) = (await store.claim_due(limit=10, lease_s=30)).messages
    assert due.id == claimed.id  # the same webhook-id, due now: no second message
    await store.record_attempt(due, status_code=200, error=None, outcome="delivered", next_attempt_at=None)
    assert await store.waiting_messages(job_id) == []
    found = await store.redeliver(job_id)  # nothing waits any more: a new message
    assert found is not None and not found[1] and found[0].id != claimed.id


async def test_a_patch_makes_waiting_messages_due_now_to_the_new_url(store: Store) -> None:
    job_id = await register(store, "wait2", callback_url=OLD)
    await store.apply(receipt(), [done("wait2", "https://a/wait2.jpg")])
    (claimed,) = (await store.claim_due(limit=10, lease_s=30)).messages
    await store.record_attempt(
        claimed, status_code=None, error="timeout", outcome="retry", next_attempt_at=store.clock() + 3600
    )
    await store.update_job(job_id, {"callback_url": NEW})
    (due,) = (await store.claim_due(limit=10, lease_s=30)).messages
    assert (due.id, due.url) == (claimed.id, NEW)


async def test_messages_handed_back_are_due_for_another_replica_at_once(open_stores: Opener) -> None:
    leaving, staying = await open_stores(), await open_stores()
    job_id = await register(staying, "back1", callback_url=OLD)
    await staying.apply(receipt(), [done("back1", "https://a/back1.jpg")])
    (claimed,) = (await leaving.claim_due(limit=10, lease_s=300)).messages
    assert (await staying.claim_due(limit=10, lease_s=30)).messages == []  # leased to `leaving`
    await leaving.hand_back_messages([claimed.seq])
    (taken,) = (await staying.claim_due(limit=10, lease_s=30)).messages
    assert taken.id == claimed.id
    # A message no longer leased (its attempt recorded, a retry an hour away) is not made due by a hand-back.
    await staying.record_attempt(
        taken, status_code=503, error="HTTP 503", outcome="retry", next_attempt_at=staying.clock() + 3600
    )
    await leaving.hand_back_messages([claimed.seq])
    assert (await staying.claim_due(limit=10, lease_s=30)).messages == []
    assert (await staying.waiting_messages(job_id))[0].attempts == 1


async def test_redeliveries_by_time_make_waiting_messages_due_instead_of_doubling_them(store: Store) -> None:
    since = store.clock() - 1
    for i in range(4):
        await register(store, f"rw{i}", callback_url=OLD)
        await store.apply(receipt(), [done(f"rw{i}", f"https://a/rw{i}.jpg")])
    claimed = (await store.claim_due(limit=100, lease_s=30)).messages
    for message in claimed[:2]:  # two wait for a retry an hour away; two are being sent (leased)
        await store.record_attempt(
            message, status_code=503, error="HTTP 503", outcome="retry", next_attempt_at=store.clock() + 3600
        )
    queued, _ = await store.redeliver_finished(FinishedFilter(since=since), after_seq=0, limit=10)
    assert queued == 4
    due = (await store.claim_due(limit=100, lease_s=30)).messages
    # The waiting two, due now under their own ids; the two in flight get a new message each.
    assert sorted(m.id for m in due if m.attempts == 1) == sorted(m.id for m in claimed[:2])
    assert len(due) == 4 and not {m.id for m in due} & {m.id for m in claimed[2:]}


async def test_a_media_chunk_written_again_keeps_the_new_bytes_and_its_first_time(open_stores: Opener) -> None:
    clock = FakeClock()
    store = await open_stores(clock=clock)
    first = clock.now
    await store.put_media_chunk("again", 0, b"old")
    clock.now += 100
    await store.put_media_chunk("again", 0, b"new")  # a retried write of the same chunk
    await store.name_media_upload("again", "objects/again")
    assert await store.media_chunk("objects/again", 0) == b"new"
    # Unnamed, the upload is as old as its first write on either backend (one upsert, written once).
    await store.put_media_chunk("cut", 0, b"x")
    clock.now += 100
    await store.put_media_chunk("cut", 0, b"y")
    assert await store.forget_media_uploads(older_than=first + 150) == 1
    assert await store.forget_media_uploads(older_than=clock.now + 1) == 0


async def test_a_media_object_is_known_by_name_alone(open_stores: Opener) -> None:
    store = await open_stores()
    assert not await store.has_media_object("objects/none")
    await store.put_media_chunk("up", 0, b"bytes")
    assert not await store.has_media_object("objects/up")  # an unnamed upload is not an object yet
    await store.name_media_upload("up", "objects/up")
    assert await store.has_media_object("objects/up")
    await store.delete_media_object("objects/up")
    assert not await store.has_media_object("objects/up")


async def test_a_claim_says_when_the_first_message_it_leaves_is_due(open_stores: Opener) -> None:
    """What the delivery worker sleeps on: the next attempt of a message not leased, the end of another
    claim's lease; never the messages this claim took."""
    clock = FakeClock()
    store, other = await open_stores(clock=clock), await open_stores(clock=clock)
    assert await store.claim_due(limit=10, lease_s=30) == store_base.Claim([], None)
    for pid in ("due1", "due2", "due3"):
        await register(store, pid, callback_url=OLD)
        await store.apply(receipt(), [done(pid, f"https://a/{pid}.jpg")])
    first = await store.claim_due(limit=1, lease_s=30)
    assert len(first.messages) == 1 and first.next_due_at == clock.now  # two more are due now
    clock.now += 5
    taken = await other.claim_due(limit=1, lease_s=20)  # another replica's, leased until now + 20
    assert len(taken.messages) == 1 and taken.next_due_at == clock.now - 5  # the last one, due since
    clock.now += 1
    last = await store.claim_due(limit=10, lease_s=30)
    assert len(last.messages) == 1
    assert last.next_due_at == clock.now - 1 + 20  # `other`'s lease ends first; the claim's own do not count
    await other.record_attempt(
        taken.messages[0], status_code=503, error="HTTP 503", outcome="retry", next_attempt_at=clock.now + 10
    )
    after = await store.claim_due(limit=10, lease_s=30)
    assert after == store_base.Claim([], clock.now + 10)  # its retry, before this store's leases end
    for message in (*first.messages, *last.messages):
        await store.record_attempt(message, status_code=200, error=None, outcome="delivered", next_attempt_at=None)
    assert (await store.claim_due(limit=10, lease_s=30)).next_due_at == clock.now + 10


async def test_listed_messages_are_claimed_due_or_not_unless_another_holds_them(open_stores: Opener) -> None:
    clock = FakeClock()
    store, other = await open_stores(clock=clock), await open_stores(clock=clock)
    for pid in ("list1", "list2", "list3"):
        await register(store, pid, callback_url=OLD)
        await store.apply(receipt(), [done(pid, f"https://a/{pid}.jpg")])
    a, b, c = (await store.claim_due(limit=10, lease_s=30)).messages
    await store.postpone_messages([a.seq, b.seq], until=clock.now + 3600)  # not due for an hour, not leased
    taken = await other.claim_listed([b.seq, c.seq, a.seq], lease_s=30)
    assert [m.seq for m in taken] == [b.seq, a.seq]  # in the order asked; `c` is still leased to `store`
    assert await store.claim_listed([a.seq, b.seq], lease_s=30) == []  # leased to `other` now
    await other.record_attempt(taken[0], status_code=200, error=None, outcome="delivered", next_attempt_at=None)
    clock.now += 31  # `other`'s lease on `a` ran out; `b` is delivered
    assert [m.seq for m in await store.claim_listed([a.seq, b.seq], lease_s=30)] == [a.seq]
    assert await store.claim_listed([], lease_s=30) == []


async def test_postponing_leaves_a_message_another_replica_has_claimed_alone(open_stores: Opener) -> None:
    clock = FakeClock()
    store, other = await open_stores(clock=clock), await open_stores(clock=clock)
    for pid in ("mine1", "theirs1"):
        await register(store, pid, callback_url=OLD)
        await store.apply(receipt(), [done(pid, f"https://a/{pid}.jpg")])
    mine = (await store.claim_due(limit=1, lease_s=30)).messages[0]
    theirs = (await other.claim_due(limit=1, lease_s=30)).messages[0]
    await store.postpone_messages([mine.seq, theirs.seq], until=clock.now)  # due at once, if it were ours
    assert [m.seq for m in (await store.claim_due(limit=10, lease_s=30)).messages] == [mine.seq]
