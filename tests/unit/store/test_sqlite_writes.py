"""Multi-row INSERTs in fixed-size chunks (`receiver.store.sqlite.writes.insert_rows`)."""

from __future__ import annotations

import sqlite3

import pytest

from receiver.store.sqlite.writes import CHUNKS, insert_rows


def _table() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, word TEXT NOT NULL, blob BLOB)")
    return db


@pytest.mark.parametrize("count", [0, 1, 2, 7, 31, 32, 33, 63, 64, 100, 257])
def test_every_row_goes_in_once_in_order(count: int) -> None:
    db = _table()
    db.isolation_level = None  # no implicit BEGIN in the trace
    rows = [(i, f"w{i}", bytes([i % 256]) * 3) for i in range(count)]
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    insert_rows(db, "INSERT INTO t (n, word, blob)", rows)
    db.set_trace_callback(None)
    assert db.execute("SELECT n, word, blob FROM t ORDER BY rowid").fetchall() == rows
    # As many full chunks as fit, then at most one statement of each smaller size.
    full, rest = divmod(count, CHUNKS[0])
    assert len(statements) == full + bin(rest).count("1")


def test_the_tail_ends_each_statement() -> None:
    db = _table()
    insert_rows(db, "INSERT INTO t (n, word, blob)", [(1, "first", None)])
    rows = [(n, f"again{n}", None) for n in range(40)]  # n = 1 is there already
    insert_rows(db, "INSERT INTO t (n, word, blob)", rows, " ON CONFLICT (n) DO NOTHING")
    assert db.execute("SELECT word FROM t WHERE n = 1").fetchone() == ("first",)
    assert db.execute("SELECT COUNT(*) FROM t").fetchone() == (40,)


def test_a_failing_row_fails_its_statement() -> None:
    db = _table()
    with pytest.raises(sqlite3.IntegrityError):
        insert_rows(db, "INSERT INTO t (n, word, blob)", [(1, "a", None), (2, None, None)])


def test_or_rollback_takes_the_whole_transaction_back() -> None:
    """What the store's INSERTs rely on: no statement journal, the transaction goes instead."""
    db = _table()
    db.isolation_level = None
    db.execute("BEGIN IMMEDIATE")
    insert_rows(db, "INSERT INTO t (n, word, blob)", [(1, "before", None)])
    with pytest.raises(sqlite3.IntegrityError):
        insert_rows(db, "INSERT OR ROLLBACK INTO t (n, word, blob)", [(2, "a", None), (3, None, None)])
    assert not db.in_transaction
    assert db.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
