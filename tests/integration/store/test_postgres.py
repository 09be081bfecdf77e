"""What only the PostgreSQL store has: its URL, its server's refusals, schema creation by many at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from receiver.models import Completion, JobStatus, Output, Receipt
from receiver.store import JobFilter, open_store
from receiver.store.postgres.store import READ_JOBS_SQL, PostgresStore
from receiver.store.schema import POSTGRES


def serve(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_") and k != "DATABASE_URL"}
    env.update(RECEIVER_DATABASE_URL=url, RECEIVER_TUNNEL_DISCOVERY="off")
    return subprocess.run(
        [sys.executable, "-m", "receiver", "serve", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "suffix, why",
    [
        ("@127.0.0.1:1/receiver", "unreachable server"),
        ("@127.0.0.1:5432/no_such_database_here", "database does not exist"),
        ("@[not-a-host/receiver", "malformed URL"),
    ],
)
def test_a_bad_database_url_is_one_clear_line(suffix: str, why: str, tmp_path: Path, postgres_url: str) -> None:
    result = serve(f"postgresql://postgres:s3cret-pw{suffix}", tmp_path)
    assert result.returncode != 0, why
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("receiver:"), result.stderr
    assert "Traceback" not in result.stderr and "s3cret-pw" not in result.stderr  # never the password


def test_wrong_credentials_and_missing_rights(tmp_path: Path, postgres_url: str) -> None:
    async def make_role() -> None:
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute("DROP ROLE IF EXISTS receiver_no_rights")
            await admin.execute("CREATE ROLE receiver_no_rights LOGIN")
            await admin.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        finally:
            await admin.close()

    asyncio.run(make_role())
    base, db = postgres_url.rsplit("/", 1)
    for url in (
        f"postgresql://no_such_role_here@127.0.0.1:5432/{db}",
        f"postgresql://receiver_no_rights@127.0.0.1:5432/{db}",
    ):
        result = serve(url, tmp_path)
        assert result.returncode != 0
        assert result.stderr.strip().startswith("receiver: cannot use PostgreSQL"), result.stderr
        assert "Traceback" not in result.stderr

    async def drop_role() -> None:
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute("DROP ROLE IF EXISTS receiver_no_rights")
        finally:
            await admin.close()

    asyncio.run(drop_role())


async def test_replicas_starting_at_once_create_the_schema_once(postgres_url: str) -> None:
    stores = await asyncio.gather(*(open_store(postgres_url) for _ in range(5)))
    try:
        conn = await asyncpg.connect(postgres_url)
        try:
            version = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
        finally:
            await conn.close()
        assert int(version) == len(POSTGRES)
    finally:
        for store in stores:
            await store.close()


async def test_info_reads_without_creating(postgres_url: str) -> None:
    from receiver.errors import StoreError

    with pytest.raises(StoreError, match="no receiver store"):
        await open_store(postgres_url, create=False)
    store = await open_store(postgres_url)
    await store.secret("api_token", lambda: "made-by-serve")
    reader = await open_store(postgres_url, create=False)
    try:
        assert await reader.secret("api_token", lambda: "never") == "made-by-serve"
    finally:
        await reader.close()
        await store.close()


async def test_the_job_lookup_keeps_a_plan_that_reads_by_key_as_the_table_grows(postgres_url: str) -> None:
    """The group commit's read (`receiver_read_jobs`) keeps the plan it made while the jobs table was tiny;
    at 30,000 jobs that plan still reads the two jobs asked for by the unique index, and scans nothing.
    (The write call's plans are held to the same by test_pg_group_commit.py.)"""
    store = await open_store(postgres_url)
    assert isinstance(store, PostgresStore)
    counts = "SELECT seq_scan, idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'jobs'"
    keys = (["pixazo", "pixazo"], ["p_1", "p_2"])
    try:
        async with store._connection() as conn:
            await conn.execute(
                "INSERT INTO jobs (id, provider, provider_job_id, status, created_at) "
                "SELECT 'job_' || g, 'pixazo', 'p_' || g, 'succeeded', 0 FROM generate_series(1, 50) g"
            )
            for _ in range(6):  # its plan is made on the first call and kept
                assert len(await conn.fetch(READ_JOBS_SQL, *keys)) == 2
            await conn.execute(
                "INSERT INTO jobs (id, provider, provider_job_id, status, created_at) "
                "SELECT 'job_' || g, 'pixazo', 'p_' || g, 'succeeded', 0 "
                "FROM generate_series(51, 30000) g"
            )
            async with conn.transaction():
                before = await conn.fetchrow(counts)
                found = await conn.fetch(READ_JOBS_SQL, *keys)
                after = await conn.fetchrow(counts)
    finally:
        await store.close()
    assert sorted(r["job"]["id"] for r in found) == ["job_1", "job_2"]
    assert before is not None and after is not None
    assert (after["seq_scan"] - before["seq_scan"], after["idx_tup_fetch"] - before["idx_tup_fetch"]) == (0, 2)


async def test_a_provider_job_id_alone_is_searched_not_scanned(postgres_url: str) -> None:
    """`GET /v1/jobs?provider_job_id=` without a provider uses the unique (provider, provider_job_id)
    index, every provider listed, on a table grown past where a scan could be cheaper."""
    store = await open_store(postgres_url)
    reads: list[tuple[str, tuple[object, ...]]] = []
    try:
        async with store._connection() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                "INSERT INTO jobs (id, provider, provider_job_id, status, created_at) "
                "SELECT 'job_' || g, 'pixazo', 'p' || g, 'succeeded', 0 FROM generate_series(1, 30000) g"
            )
            await conn.execute(
                "INSERT INTO jobs (id, provider, provider_job_id, status, created_at) "
                "VALUES ('job_oxen_7', 'oxen', 'p7', 'succeeded', 0)"
            )
            await conn.execute("ANALYZE jobs")
        fetch = store._fetch  # type: ignore[attr-defined]

        async def recording(sql: str, *params: object) -> list[object]:
            reads.append((sql, params))
            return await fetch(sql, *params)  # type: ignore[no-any-return]

        store._fetch = recording  # type: ignore[attr-defined]
        page = await store.list_jobs(filters=JobFilter(provider_job_id="p7"), limit=10, cursor=None)
        sql, params = next((sql, params) for sql, params in reads if "provider_job_id" in sql)
        async with store._connection() as conn:  # type: ignore[attr-defined]
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *params))
    finally:
        await store.close()
    assert sorted(j.provider for j in page.items) == ["oxen", "pixazo"]
    assert "jobs_provider_provider_job_id_key" in plan and "Seq Scan on jobs" not in plan, plan


async def test_a_renewal_on_its_way_does_not_take_back_a_handed_back_message(postgres_url: str) -> None:
    leaving = await open_store(postgres_url, default_callback_url="http://127.0.0.1:9/cb")
    staying = await open_store(postgres_url, default_callback_url="http://127.0.0.1:9/cb")
    try:
        assert isinstance(leaving, PostgresStore)
        await staying.apply(
            Receipt(provider="pixazo", source="webhook", body=b"{}"),
            [Completion("pixazo", "renew1", JobStatus.SUCCEEDED, outputs=(Output("https://a/r.jpg", "image/jpeg"),))],
        )
        (claimed,) = (await leaving.claim_due(limit=10, lease_s=300)).messages
        held = [claimed.seq]  # what the renewal loop read before the hand-back
        await leaving.hand_back_messages(held)
        await leaving._renew(held, until=leaving.clock() + 300)
        assert [m.id for m in (await staying.claim_due(limit=10, lease_s=30)).messages] == [claimed.id]
    finally:
        await leaving.close()
        await staying.close()


async def test_libpq_query_parameters_in_the_url_are_honoured(postgres_url: str) -> None:
    name = f"receiver-{os.getpid()}"
    store = await open_store(f"{postgres_url}?sslmode=disable&application_name={name}")
    try:
        admin = await asyncpg.connect(postgres_url)
        try:
            names = {
                r[0]
                for r in await admin.fetch(
                    "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
                )
            }
        finally:
            await admin.close()
        assert name in names
    finally:
        await store.close()
