"""Lists for the inspector on both stores: paging past the newest page, totals, prefix search, refusals."""

from __future__ import annotations

import pytest

from receiver.store import JobFilter, Store, open_store
from receiver.store.base import COUNT_CAP
from receiver.store.refusal_rows import Refusal
from receiver.store.rows import prefix_end


@pytest.fixture
async def store(store_url: str) -> Store:  # type: ignore[misc]
    opened = await open_store(store_url)
    yield opened  # type: ignore[misc]
    await opened.close()


async def _register(store: Store, n: int, provider: str = "pixazo") -> list[str]:
    ids = []
    for i in range(n):
        job, _ = await store.register_job(
            provider=provider, provider_job_id=f"px-{i:04d}", callback_url=None, metadata={}, expected_outputs=None
        )
        ids.append(job.id)
    return ids


def test_prefix_end_is_the_least_string_above_the_prefix() -> None:
    assert prefix_end("job_01") == "job_02"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff") is None
    assert prefix_end("\ud7ff") == "\ue000"


async def test_jobs_page_past_the_first_page_with_a_total(store: Store) -> None:
    ids = await _register(store, 120)
    first = await store.list_jobs(filters=JobFilter(), limit=50, cursor=None, count=True)
    assert (first.total, first.total_exact) == (120, True)
    assert [j.id for j in first.items] == ids[::-1][:50]
    seen = [j.id for j in first.items]
    cursor = first.next_cursor
    while cursor:
        page = await store.list_jobs(filters=JobFilter(), limit=50, cursor=cursor)
        assert page.total is None  # counted once, on the first page
        seen += [j.id for j in page.items]
        cursor = page.next_cursor
    assert seen == ids[::-1]
    pending = await store.list_jobs(
        filters=JobFilter(status="pending", provider="pixazo"), limit=5, cursor=None, count=True
    )
    assert pending.total == 120 and len(pending.items) == 5
    none = await store.list_jobs(filters=JobFilter(status="failed"), limit=5, cursor=None, count=True)
    assert (none.items, none.total) == ([], 0)


async def test_a_total_over_the_cap_says_it_is_not_exact(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import receiver.store.postgres.store as pg
    import receiver.store.sqlite.store as lite

    monkeypatch.setattr(lite, "COUNT_CAP", 7)
    monkeypatch.setattr(pg, "COUNT_CAP", 7)
    await _register(store, 9)
    page = await store.list_jobs(filters=JobFilter(), limit=3, cursor=None, count=True)
    assert (page.total, page.total_exact) == (7, False)
    assert COUNT_CAP == 10_000


async def test_prefix_search_finds_jobs_by_the_start_of_either_id(store: Store) -> None:
    ids = await _register(store, 30)
    await _register(store, 3, provider="runware")  # same provider job ids, another provider
    found = await store.list_jobs(filters=JobFilter(prefix="px-002"), limit=50, cursor=None, count=True)
    assert sorted(j.provider_job_id for j in found.items) == sorted([f"px-{i:04d}" for i in range(20, 30)])
    assert found.total == 10
    both = await store.list_jobs(filters=JobFilter(prefix="px-000"), limit=50, cursor=None, count=True)
    assert both.total == 13  # pixazo's ten and runware's three
    one = await store.list_jobs(filters=JobFilter(prefix=ids[17]), limit=50, cursor=None)
    assert [j.id for j in one.items] == [ids[17]]
    # The start of an id: every id shares its time prefix, so only the tail tells them apart.
    head = ids[17][:-3]
    by_head = await store.list_jobs(filters=JobFilter(prefix=head), limit=50, cursor=None)
    assert ids[17] in [j.id for j in by_head.items]
    assert all(j.id.startswith(head) for j in by_head.items)
    narrowed = await store.list_jobs(filters=JobFilter(prefix="px-002", provider="runware"), limit=50, cursor=None)
    assert narrowed.items == []
    # Characters that mean something to LIKE are plain characters in a range.
    assert (await store.list_jobs(filters=JobFilter(prefix="px-00_"), limit=5, cursor=None)).items == []
    assert (await store.list_jobs(filters=JobFilter(prefix="%"), limit=5, cursor=None)).items == []


def _refusal(i: int, reason: str = "unauthorized", provider: str = "pixazo") -> Refusal:
    return Refusal(
        provider=provider,
        reason=reason,
        status=401,
        detail="missing or wrong ?token=",
        method="POST",
        path=f"/webhooks/{provider}",
        query="token=***",
        headers={"content-type": "application/json"},
        body=b'{"n": %d}' % i,
        body_bytes=9,
        received_at=1_800_000_000.0 + i,
    )


async def test_refusals_are_kept_newest_first_and_trimmed_to_the_bound(store: Store) -> None:
    for start in range(0, 25, 5):
        await store.record_refusals([_refusal(i) for i in range(start, start + 5)], keep=12)
    first = await store.list_refusals(provider=None, reason=None, limit=5, cursor=None, count=True)
    assert first.total == 12
    assert [r.body for r in first.items] == [b'{"n": %d}' % i for i in range(24, 19, -1)]
    bodies = [r.body for r in first.items]
    cursor = first.next_cursor
    while cursor:
        page = await store.list_refusals(provider=None, reason=None, limit=5, cursor=cursor)
        bodies += [r.body for r in page.items]
        cursor = page.next_cursor
    assert bodies == [b'{"n": %d}' % i for i in range(24, 12, -1)]
    await store.record_refusals([_refusal(99, "too_large", "runware")], keep=12)
    large = await store.list_refusals(provider=None, reason="too_large", limit=5, cursor=None, count=True)
    assert (
        large.total == 1 and large.items[0].provider == "runware" and large.items[0].to_json()["query"] == "token=***"
    )
