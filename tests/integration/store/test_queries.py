"""Every statement written once (`receiver.store.queries`) is valid in both dialects, against the schema as
the migrations leave it, and binds as many parameters in each; a literal holding `?` and `$1` reads back
as written on both."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg

from receiver.store import open_store, queries
from receiver.store.queries import Statement, shared

STATEMENTS = {name: value for name, value in vars(queries).items() if isinstance(value, Statement)}


async def test_each_shared_statement_compiles_in_both_dialects(tmp_path: Path, postgres_url: str) -> None:
    path = tmp_path / "receiver.db"
    await (await open_store(f"sqlite:///{path}")).close()  # the schema, as the store migrates it
    await (await open_store(postgres_url)).close()
    db = sqlite3.connect(path)
    conn = await asyncpg.connect(postgres_url)
    try:
        for name, statement in STATEMENTS.items():
            marks = statement.sqlite.count("?")
            # EXPLAIN compiles the statement (tables, columns, syntax) without running it.
            db.execute(f"EXPLAIN {statement.sqlite}", [None] * marks)
            prepared = await conn.prepare(statement.postgres)
            assert len(prepared.get_parameters()) == marks, name
    finally:
        db.close()
        await conn.close()


async def test_marks_inside_literals_stay_text_on_both(tmp_path: Path, postgres_url: str) -> None:
    statement = shared("SELECT 'why?', CAST(? AS TEXT), 'it''s $1', CAST(? AS TEXT)")
    db = sqlite3.connect(tmp_path / "x.db")
    conn = await asyncpg.connect(postgres_url)
    try:
        expected = ("why?", "a", "it's $1", "b")
        assert tuple(db.execute(statement.sqlite, ("a", "b")).fetchone()) == expected
        row = await conn.fetchrow(statement.postgres, "a", "b")
        assert row is not None and tuple(row) == expected

    finally:
        db.close()
        await conn.close()
