"""Statements written once (`receiver.store.queries`): `?` marks numbered for PostgreSQL, text left alone."""

from __future__ import annotations

import re

import pytest

from receiver.store import queries
from receiver.store.queries import Statement, shared, to_postgres


@pytest.mark.parametrize(
    ("sqlite", "postgres"),
    [
        ("SELECT 1", "SELECT 1"),
        ("SELECT a FROM t WHERE b = ? AND c > ? LIMIT ?", "SELECT a FROM t WHERE b = $1 AND c > $2 LIMIT $3"),
        ("VALUES (?,?)", "VALUES ($1,$2)"),
        # Inside a string literal a `?` or a `$` is text, whatever follows it.
        ("SELECT '?', ? WHERE x = 'why?'", "SELECT '?', $1 WHERE x = 'why?'"),
        ("SELECT '$1', ?", "SELECT '$1', $1"),
        ("SELECT 'costs $5 or ?', ?", "SELECT 'costs $5 or ?', $1"),
        # '' is one quote inside a literal: the literal goes on past it.
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1"),
        ("SELECT '', ?, ''''", "SELECT '', $1, ''''"),
        # Quoted identifiers and comments, the same.
        ('SELECT "odd?name" FROM t WHERE a = ?', 'SELECT "odd?name" FROM t WHERE a = $1'),
        ('SELECT "a""?" , ?', 'SELECT "a""?" , $1'),
        ("SELECT ? -- why?\n, ?", "SELECT $1 -- why?\n, $2"),
        ("SELECT ? -- to the end?", "SELECT $1 -- to the end?"),
        ("SELECT /* ? $1 */ ?", "SELECT /* ? $1 */ $1"),
        # A cast after a mark stays a cast; a `$` not followed by a digit is not a placeholder.
        ("SELECT * FROM unnest(?::text[], ?::float8[])", "SELECT * FROM unnest($1::text[], $2::float8[])"),
        ("SELECT a$b FROM t WHERE x = ?", "SELECT a$b FROM t WHERE x = $1"),
        ("SELECT a$1, b_$2 FROM t WHERE x = ?", "SELECT a$1, b_$2 FROM t WHERE x = $1"),
        # Ten marks and more: `$10` after `$9`.
        ("SELECT " + ", ".join("?" * 11), "SELECT " + ", ".join(f"${n}" for n in range(1, 12))),
    ],
)
def test_marks_are_numbered_in_order_outside_literals(sqlite: str, postgres: str) -> None:
    assert to_postgres(sqlite) == postgres


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'unterminated ?",
        "SELECT 'it''s ?",
        'SELECT "unterminated',
        "SELECT /* open ?",
    ],
)
def test_an_unterminated_literal_or_comment_is_refused(sql: str) -> None:
    with pytest.raises(ValueError, match="unterminated"):
        to_postgres(sql)


def test_a_statement_mixing_placeholder_styles_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\$n placeholder"):
        to_postgres("SELECT a FROM t WHERE b = ? AND c = $2")


def test_shared_keeps_the_sqlite_text_as_written() -> None:
    sql = "UPDATE t SET a = ? WHERE b = 'x?' AND c = ?"
    assert shared(sql) == Statement(sql, "UPDATE t SET a = $1 WHERE b = 'x?' AND c = $2")


def _statements() -> dict[str, Statement]:
    return {name: value for name, value in vars(queries).items() if isinstance(value, Statement)}


def test_every_shared_statement_numbers_each_of_its_marks_once() -> None:
    statements = _statements()
    assert len(statements) >= 25
    for name, statement in statements.items():
        marks = statement.sqlite.count("?")  # none of them has a `?` in a literal
        assert "$" not in statement.sqlite, name
        assert re.findall(r"\$(\d+)", statement.postgres) == [str(n) for n in range(1, marks + 1)], name
        assert re.sub(r"\$\d+", "?", statement.postgres) == statement.sqlite, name
