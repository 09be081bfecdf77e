"""The schema's two dialects: the same numbered files, and after all of them the same tables, columns and
indexes; a PostgreSQL database numbered the old way is upgraded without running a step twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg

from receiver.store import open_store
from receiver.store.schema import POSTGRES, SQLITE

# Indexes one dialect needs and the other does not, each with its reason. A prefix search is a range in
# code-point order: SQLite's BINARY indexes serve it, PostgreSQL's follow the database's collation and
# need "C"-collated ones.
POSTGRES_ONLY_INDEXES = {"jobs_by_id_prefix", "jobs_by_provider_job_id_prefix"}

Shape = dict[str, tuple[frozenset[str], frozenset[tuple[str, tuple[str, ...], bool]]]]


def sqlite_shape(path: Path) -> Shape:
    db = sqlite3.connect(path)
    try:
        for migration in SQLITE:
            for statement in migration.statements():
                db.execute(statement)
        shape: Shape = {}
        tables = [
            r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        ]
        for table in tables:
            columns = frozenset(r[1] for r in db.execute(f"PRAGMA table_info({table})"))
            indexes = set()
            for _, name, _unique, origin, partial in db.execute(f"PRAGMA index_list({table})"):
                if origin != "c":  # implicit indexes of PRIMARY KEY and UNIQUE constraints differ by dialect
                    continue
                cols = tuple(r[2] for r in db.execute(f"PRAGMA index_info({name})"))
                indexes.add((name, cols, bool(partial)))
            shape[table] = (columns, frozenset(indexes))
        return shape
    finally:
        db.close()


async def postgres_shape(url: str) -> Shape:
    conn = await asyncpg.connect(url)
    try:
        for migration in POSTGRES:
            await conn.execute(migration.sql)
        shape: Shape = {}
        for table in [
            r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]:
            columns = frozenset(
                r["column_name"]
                for r in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table
                )
            )
            rows = await conn.fetch(
                """SELECT i.relname AS name, ix.indpred IS NOT NULL AS partial,
                          array(SELECT a.attname FROM unnest(ix.indkey) WITH ORDINALITY k(n, o)
                                JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.n
                                ORDER BY k.o) AS cols
                   FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class t ON t.oid = ix.indrelid
                   WHERE t.relname = $1 AND NOT ix.indisprimary
                     AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid)""",
                table,
            )
            shape[table] = (
                columns,
                frozenset(
                    (r["name"], tuple(r["cols"]), r["partial"]) for r in rows if r["name"] not in POSTGRES_ONLY_INDEXES
                ),
            )
        return shape
    finally:
        await conn.close()


def test_both_dialects_have_the_same_numbered_files() -> None:
    assert [(m.number, m.name) for m in SQLITE] == [(m.number, m.name) for m in POSTGRES]


async def test_both_dialects_build_the_same_tables_columns_and_indexes(tmp_path: Path, postgres_url: str) -> None:
    lite = sqlite_shape(tmp_path / "schema.db")
    pg = await postgres_shape(postgres_url)
    assert set(lite) == set(pg)
    for table in lite:
        assert lite[table][0] == pg[table][0], f"columns of {table}"
        assert lite[table][1] == pg[table][1], f"indexes of {table}"


async def test_postgres_numbered_before_the_shared_numbers_is_upgraded_once(postgres_url: str) -> None:
    # A database made when PostgreSQL's first step held what are now 0001 and 0002, and that had
    # reached the media step (then its number 2, now 3).
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        for migration in POSTGRES[:3]:
            await conn.execute(migration.sql)
        await conn.execute("INSERT INTO meta VALUES ('schema_version', '2')")
        await conn.execute("CREATE TABLE was_here_before (x INT)")  # nothing may be dropped or redone
    finally:
        await conn.close()
    store = await open_store(postgres_url)
    await store.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        assert int(await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")) == len(POSTGRES)
        assert await conn.fetchval("SELECT to_regclass('idempotency_keys')") is not None
        assert await conn.fetchval("SELECT to_regclass('was_here_before')") is not None
    finally:
        await conn.close()
