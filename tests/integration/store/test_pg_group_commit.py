"""The PostgreSQL group commit as the server sees it: round trips counted on the wire, its functions'
plans as the tables grow, its optimistic read checked at the write, and the next due message found
without reading the backlog."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from receiver.models import Completion, JobStatus, Output, Receipt
from receiver.store.batching import Item
from receiver.store.postgres.store import PostgresStore
from receiver.store.postgres.work import CLAIM_SQL
from tests.fakes.pg_round_trips import round_trip_proxy
from tests.fakes.tcp_proxy import through
from tests.support import eventually

CALLBACK = "http://127.0.0.1:9/callback"


def webhook(pid: str) -> tuple[Receipt, list[Completion]]:
    return (
        Receipt(provider="pixazo", source="webhook", body=b'{"x": 1}'),
        [Completion("pixazo", pid, JobStatus.SUCCEEDED, outputs=(Output(f"https://im/{pid}.jpg", "image/jpeg"),))],
    )


async def test_a_group_commit_is_two_round_trips(postgres_url: str) -> None:
    """The jobs' read, then every write with its check of what was read: counted on the wire, for batches of
    new jobs, of jobs finished (events, callbacks, receipts) and of delivery attempts with webhooks; a
    batch of attempts alone, and a claim of due callbacks, are one round trip each."""
    target = urlsplit(postgres_url)
    async with round_trip_proxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        store = await PostgresStore(through(proxy, postgres_url), default_callback_url=CALLBACK, pool_size=1).open()
        try:
            commits = store._commits
            assert commits is not None
            commit = commits._commit
            batches: list[int] = []

            async def counted(batch: list[Item]) -> list[Any]:
                batches.append(len(batch))
                return await commit(batch)

            commits._commit = counted

            async def per_commit(*writes: Any) -> float:
                before, done = proxy.round_trips, len(batches)
                await asyncio.gather(*writes)
                assert len(batches) > done
                return (proxy.round_trips - before) / (len(batches) - done)

            # Each statement is prepared once per connection (a round trip of its own): shapes seen first.
            await asyncio.gather(*(store.apply(*webhook(f"warm{i}")) for i in range(3)))
            for i in range(3):
                await store.register_job(
                    provider="pixazo",
                    provider_job_id=f"warm-reg{i}",
                    callback_url=None,
                    metadata={},
                    expected_outputs=None,
                )
            await asyncio.gather(*(store.apply(*webhook(f"warm-reg{i}")) for i in range(3)))
            claimed = (await store.claim_due(limit=10, lease_s=30)).messages
            await asyncio.gather(
                store.record_attempt(claimed[0], status_code=500, error=None, outcome="retry", next_attempt_at=0),
                store.apply(*webhook("warm-mixed")),
            )

            new_jobs = await per_commit(*(store.apply(*webhook(f"new{i}")) for i in range(16)))
            for i in range(16):
                await store.register_job(
                    provider="pixazo", provider_job_id=f"reg{i}", callback_url=None, metadata={}, expected_outputs=None
                )
            finished = await per_commit(*(store.apply(*webhook(f"reg{i}")) for i in range(16)))
            before = proxy.round_trips
            claimed = (await store.claim_due(limit=50, lease_s=30)).messages
            claim = proxy.round_trips - before
            assert len(claimed) >= 8
            mixed = await per_commit(
                *(
                    store.record_attempt(m, status_code=200, error=None, outcome="delivered", next_attempt_at=None)
                    for m in claimed[:8]
                ),
                *(store.apply(*webhook(f"mixed{i}")) for i in range(8)),
            )
            attempts_only = await per_commit(
                *(
                    store.record_attempt(m, status_code=200, error=None, outcome="delivered", next_attempt_at=None)
                    for m in claimed[8:]
                )
            )
            assert max(batches[-4:]) > 1  # batches, not one write per commit
        finally:
            await store.close()
    # Attempts alone read no job: one statement, its own transaction; so is a claim of due callbacks.
    assert max(new_jobs, finished, mixed) <= 2 and attempts_only == 1 and claim == 1, (
        new_jobs,
        finished,
        mixed,
        attempts_only,
        claim,
    )
    deliveries = await store_rows(postgres_url, "SELECT count(*) FROM attempts")
    assert deliveries == len(claimed) + 1  # the writes of every batch were made


async def store_rows(url: str, sql: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def test_the_key_lock_function_is_planned_for_the_table_as_it_grows(postgres_url: str) -> None:
    """The jobs' read inside `receiver_lock_jobs` is planned on every call even in a session that lets
    PostgreSQL keep a generic plan: one made while the table held 50 rows would scan it whole at 30,000."""
    store = await PostgresStore(postgres_url).open()
    await store.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("SET plan_cache_mode = auto")
        await conn.execute(
            "INSERT INTO jobs (id, provider, provider_job_id, status, created_at) "
            "SELECT 'job_' || g, 'pixazo', 'p_' || g, 'succeeded', 0 FROM generate_series(1, 50) g"
        )
        await conn.execute("ANALYZE jobs")
        keys = (["pixazo", "pixazo"], ["p_1", "p_2"])
        for _ in range(8):  # past the runs after which PostgreSQL may settle on one generic plan
            async with conn.transaction():
                assert len(await conn.fetch("SELECT * FROM receiver_lock_jobs($1, $2)", *keys)) == 2
        await conn.execute(
            "INSERT INTO jobs (id, provider, provider_job_id, status, created_at) "
            "SELECT 'job_' || g, 'pixazo', 'p_' || g, 'succeeded', 0 FROM generate_series(51, 30000) g"
        )
        counts = "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'jobs'"
        async with conn.transaction():
            before = await conn.fetchrow(counts)
            assert len(await conn.fetch("SELECT * FROM receiver_lock_jobs($1, $2)", *keys)) == 2
            after = await conn.fetchrow(counts)
    finally:
        await conn.close()
    assert before is not None and after is not None
    scans = {key: after[key] - before[key] for key in ("seq_scan", "idx_scan")}
    assert scans["seq_scan"] == 0 and scans["idx_scan"] > 0, scans


async def test_the_write_call_keeps_plans_that_read_a_grown_table_by_key(postgres_url: str) -> None:
    """`receiver_write` keeps its plans for the session; made while the tables were empty, they must still
    read 30,000 jobs and messages by key alone: a group commit that finishes registered jobs, creates new
    ones and records delivery attempts reads a few index entries and scans no table."""
    store = await PostgresStore(postgres_url, default_callback_url=CALLBACK, pool_size=1).open()
    tables = ("jobs", "messages")
    counts = "SELECT relname, seq_scan, idx_tup_fetch FROM pg_stat_user_tables WHERE relname = ANY($1)"

    async def read_counts(conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
        # The store's backend sends what it counted once it is idle, when told to send it at once.
        await store._fetch("SELECT pg_stat_force_next_flush()")
        return {r["relname"]: (r["seq_scan"], r["idx_tup_fetch"] or 0) for r in await conn.fetch(counts, tables)}

    async def commit_of_each_kind(tag: str) -> int:
        for i in range(2):
            await store.register_job(
                provider="pixazo",
                provider_job_id=f"{tag}-reg{i}",
                callback_url=None,
                metadata={},
                expected_outputs=None,
            )
        claimed = (await store.claim_due(limit=10, lease_s=30)).messages
        await asyncio.gather(
            *(store.apply(*webhook(f"{tag}-reg{i}")) for i in range(2)),
            *(store.apply(*webhook(f"{tag}-new{i}")) for i in range(2)),
            *(
                store.record_attempt(m, status_code=200, error=None, outcome="delivered", next_attempt_at=None)
                for m in claimed
            ),
        )
        return len(claimed)

    other = await asyncpg.connect(postgres_url)
    try:
        for r in range(8):  # past the runs after which PostgreSQL may settle on one generic plan
            await commit_of_each_kind(f"small{r}")
        await other.execute(
            "INSERT INTO jobs (id, provider, provider_job_id, status, created_at) "
            "SELECT 'job_' || g, 'pixazo', 'p_' || g, 'pending', 0 FROM generate_series(1, 30000) g"
        )
        await other.execute(
            "INSERT INTO messages (id, job_id, url, body, status, next_attempt_at, created_at) "
            "SELECT 'm_' || g, 'job_' || g, 'http://x/', '', 'delivered', 0, 0 FROM generate_series(1, 30000) g"
        )
        before = await read_counts(other)
        attempted = await commit_of_each_kind("large")
        after = await read_counts(other)
    finally:
        await other.close()
        await store.close()
    assert attempted > 0
    reads = {t: (after[t][0] - before[t][0], after[t][1] - before[t][1]) for t in tables}
    # A handful of keys each: a plan that scanned a table, or an index whole, reads thousands.
    assert all(scans == 0 and fetched < 100 for scans, fetched in reads.values()), reads


async def test_the_write_call_sees_any_change_to_the_jobs_read(postgres_url: str) -> None:
    """`receiver_jobs_changed`, the write call's check of the unlocked read: the same jobs at the same row
    versions pass; a job changed, created, deleted, or deleted and another created in its place, does not."""
    store = await PostgresStore(postgres_url).open()
    await store.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(
            "INSERT INTO jobs (id, provider, provider_job_id, status, created_at) "
            "SELECT 'job_' || g, 'pixazo', 'p' || g, 'pending', 0 FROM generate_series(1, 2) g"
        )
        keys = (["pixazo"] * 3, ["p1", "p2", "p3"])  # no job for p3 yet

        async def seen() -> tuple[list[str], list[str]]:
            rows = await conn.fetch(
                "SELECT id, xmin::text AS v FROM jobs WHERE provider_job_id = ANY($1) ORDER BY id", keys[1]
            )
            return [r["id"] for r in rows], [r["v"] for r in rows]

        async def changed(ids: list[str], versions: list[str]) -> bool:
            return bool(await conn.fetchval("SELECT receiver_jobs_changed($1, $2, $3, $4)", *keys, ids, versions))

        read = await seen()
        verdicts = {"unchanged": await changed(*read)}
        await conn.execute("UPDATE jobs SET metadata = '{\"v\": 2}' WHERE id = 'job_2'")
        verdicts["changed"] = await changed(*read)
        read = await seen()
        await conn.execute(
            "INSERT INTO jobs (id, provider, provider_job_id, status, created_at) "
            "VALUES ('job_3', 'pixazo', 'p3', 'pending', 0)"
        )
        verdicts["created"] = await changed(*read)
        await conn.execute("DELETE FROM jobs WHERE id = 'job_3'")
        verdicts["as read again"] = await changed(*read)
        await conn.execute("DELETE FROM jobs WHERE id = 'job_1'")
        verdicts["deleted"] = await changed(*read)
        await conn.execute(
            "INSERT INTO jobs (id, provider, provider_job_id, status, created_at) "
            "VALUES ('job_3', 'pixazo', 'p3', 'pending', 0)"
        )
        verdicts["deleted, another created"] = await changed(*read)
    finally:
        await conn.close()
    assert verdicts == {
        "unchanged": False,
        "changed": True,
        "created": True,
        "as read again": False,
        "deleted": True,
        "deleted, another created": True,
    }, verdicts


async def test_the_next_due_message_does_not_read_the_backlog(postgres_url: str) -> None:
    """20,000 messages waiting for a retry and a few leased: the claim's next due time is right (a leased one
    counts from its lease's end, one it claims does not count) and found by index probes, not by reading
    every pending message."""
    store = await PostgresStore(postgres_url, clock=lambda: 1000.0).open()
    try:
        async with store._connection() as conn:
            await conn.execute(
                "INSERT INTO messages (id, job_id, url, body, status, next_attempt_at, created_at) "
                "SELECT 'm' || g, 'j' || g, 'http://x/', '', 'pending', 5000 + g, 0 FROM generate_series(1, 20000) g"
            )
            await conn.execute(
                "INSERT INTO messages (id, job_id, url, body, status, next_attempt_at, lease_until, created_at) "
                "SELECT 'l' || g, 'j' || g, 'http://x/', '', 'pending', 10, 4000 + g, 0 FROM generate_series(1, 5) g"
            )
            await conn.execute("ANALYZE messages")
        claim = await store.claim_due(limit=10, lease_s=30)
        assert (claim.messages, claim.next_due_at) == ([], 4001)
        async with store._connection() as conn:
            await conn.execute("UPDATE messages SET lease_until = NULL WHERE id LIKE 'l%'")
        claim = await store.claim_due(limit=2, lease_s=30)
        assert (len(claim.messages), claim.next_due_at) == (2, 10)  # three more due at 10
        claim = await store.claim_due(limit=10, lease_s=30)
        # The last three claimed: the two claimed before are due again at their lease's end.
        assert (len(claim.messages), claim.next_due_at) == (3, 1030)
        async with store._connection() as conn, conn.transaction():
            counts = "SELECT seq_scan, idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'messages'"
            before = await conn.fetchrow(counts)
            await conn.fetch(CLAIM_SQL, 1000, 1030, "r", 10)
            after = await conn.fetchrow(counts)
    finally:
        await store.close()
    assert before is not None and after is not None
    # The five leased messages, and the first of the 20,000 waiting: no scan of the backlog.
    assert after["seq_scan"] == before["seq_scan"] and after["idx_tup_fetch"] - before["idx_tup_fetch"] < 50


async def test_a_claim_steps_over_delivered_messages_without_reading_them_again(postgres_url: str) -> None:
    """20,000 messages delivered since the last vacuum leave their old entries in the due index: the
    first claim reads their rows and marks the entries dead; the next claims do not read them again (a
    bitmap scan, which the planner chose on such a table, read every one of their pages on each claim)."""
    store = await PostgresStore(postgres_url, clock=lambda: 1000.0, pool_size=1).open()
    reads = "SELECT heap_blks_hit + coalesce(heap_blks_read, 0) FROM pg_statio_user_tables WHERE relname = 'messages'"
    other = await asyncpg.connect(postgres_url)
    try:
        async with store._connection() as conn:
            # No statistics yet, as in a database in its first minutes (before autovacuum's first ANALYZE).
            await conn.execute(
                "INSERT INTO messages (id, job_id, url, body, status, next_attempt_at, created_at) "
                "SELECT 'm' || g, 'j' || g, 'http://x/', '', 'pending', g / 100.0, 0 FROM generate_series(1, 20000) g"
            )
            await conn.execute("UPDATE messages SET status = 'delivered' WHERE status = 'pending'")

        async def blocks_read_by_a_claim() -> int:
            # The store's backend sends what it counted once it is idle, when told to send it at once.
            await store._fetch("SELECT pg_stat_force_next_flush()")
            before = int(await other.fetchval(reads))
            claim = await store.claim_due(limit=512, lease_s=30)  # a worker's room
            assert claim.messages == [] and claim.next_due_at is None
            await store._fetch("SELECT pg_stat_force_next_flush()")
            return int(await other.fetchval(reads)) - before

        first = await blocks_read_by_a_claim()

        async def a_claim_reads_almost_nothing() -> bool:
            return await blocks_read_by_a_claim() < 10

        # Entries are marked once their rows are dead to every transaction that might still see them,
        # which other work on the server can hold back for a while (seen with other tests beside this one).
        await eventually(a_claim_reads_almost_nothing, timeout=60, what="a claim that skips the delivered rows")
        later = [await blocks_read_by_a_claim() for _ in range(3)]
    finally:
        await other.close()
        await store.close()
    assert first > 100, first  # the delivered rows' pages were there to be read (~250 of them)
    assert max(later) < 10, (first, later)


async def test_a_conflict_inside_the_write_call_is_retried(postgres_url: str) -> None:
    """A writer that does not take the key lock inserts the job a webhook is about to create: the group
    commit's insert inside `receiver_write` waits for it, fails with a unique violation once it commits,
    and the whole transaction is tried again, which then finds the job and finishes it: within the one
    group commit, not by the fallback that commits each write of a failed batch alone."""
    store = await PostgresStore(postgres_url).open()
    other = await asyncpg.connect(postgres_url)
    try:
        commits = store._commits
        assert commits is not None
        commit, calls = commits._commit, []

        async def counted(batch: list[Item]) -> list[Any]:
            calls.append(len(batch))
            return await commit(batch)

        commits._commit = counted
        insert = other.transaction()
        await insert.start()
        await other.execute(
            "INSERT INTO jobs (id, provider, provider_job_id, status, created_at) "
            "VALUES ('job_theirs', 'pixazo', 'dup', 'pending', 0)"
        )
        applying = asyncio.create_task(store.apply(*webhook("dup")))
        for _ in range(400):  # until the store's insert waits for ours
            if await other.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the store's write never waited for the other insert")
        assert not applying.done()
        await insert.commit()
        result = await asyncio.wait_for(applying, 30)
        job = await store.get_job("job_theirs")
    finally:
        await other.close()
        await store.close()
    assert result.job_ids == ["job_theirs"] and calls == [1]
    assert job is not None and job.status is JobStatus.SUCCEEDED


async def test_a_job_changed_between_the_read_and_the_write_is_read_again(postgres_url: str) -> None:
    """The group commit reads its jobs unlocked; another writer changes one (a PATCH of its metadata) before
    the write: `receiver_write` sees the row version moved, fails the whole call, and the commit is made
    again from what is committed now. The webhook's result and the other writer's change both stand, and
    nothing of the first try is left (one receipt, one event)."""
    store = await PostgresStore(postgres_url).open()
    try:
        job, _ = await store.register_job(
            provider="pixazo", provider_job_id="raced", callback_url=None, metadata={"v": 1}, expected_outputs=None
        )
        read, reads = store._read, []

        async def read_then_patch(conn: Any, unit: Any, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
            seen = await read(conn, unit, keys)
            reads.append(seen)
            if len(reads) == 1:
                await store.update_job(job.id, {"metadata": {"v": 2}})
            return seen

        store._read = read_then_patch  # type: ignore[method-assign]
        result = await store.apply(*webhook("raced"))
        after = await store.get_job(job.id)
        receipts = await store_rows(postgres_url, "SELECT count(*) FROM receipts")
        events = await store_rows(postgres_url, f"SELECT count(*) FROM events WHERE job_id = '{job.id}'")
    finally:
        await store.close()
    assert len(reads) == 2 and reads[0][0][1] != reads[1][0][1], reads  # read again, at a new row version
    assert result.job_ids == [job.id] and after is not None
    assert after.status is JobStatus.SUCCEEDED and after.metadata == {"v": 2}
    assert receipts == 1 and events == 1


async def test_a_job_created_between_the_read_and_the_write_is_found_on_the_second_read(postgres_url: str) -> None:
    """The read finds no job for a key; another replica creates it before the write: the write sees a job
    it was not shown and the commit is made again, finishing that job instead of inserting a second one."""
    store = await PostgresStore(postgres_url).open()
    other = await PostgresStore(postgres_url).open()
    try:
        read, reads = store._read, []
        created: list[str] = []

        async def read_then_register(conn: Any, unit: Any, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
            seen = await read(conn, unit, keys)
            reads.append(seen)
            if len(reads) == 1:
                job, _ = await other.register_job(
                    provider="pixazo", provider_job_id="late", callback_url=None, metadata={}, expected_outputs=None
                )
                created.append(job.id)
            return seen

        store._read = read_then_register  # type: ignore[method-assign]
        result = await store.apply(*webhook("late"))
        jobs = await store_rows(postgres_url, "SELECT count(*) FROM jobs WHERE provider_job_id = 'late'")
        job = await store.get_job(created[0])
    finally:
        await other.close()
        await store.close()
    assert reads[0] == [] and [i for i, _ in reads[1]] == created
    assert result.job_ids == created and jobs == 1
    assert job is not None and job.status is JobStatus.SUCCEEDED
