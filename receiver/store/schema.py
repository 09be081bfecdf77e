"""The schema: ordered SQL files per dialect, `sql/sqlite/NNNN_name.sql` and `sql/postgres/NNNN_name.sql`,
with the same numbers and names in both (a test holds the two dialects to the same tables, columns and
indexes). Each file runs once, in order; the number reached is kept in the `meta` table.

A schema change is a new pair of files with the next number, never an edit of one that has shipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

Dialect = Literal["sqlite", "postgres"]

_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_COMMENT = re.compile(r"^\s*--.*$", re.M)


@dataclass(frozen=True, slots=True)
class Migration:
    number: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file's statements, comments dropped (SQLite runs one statement per call)."""
        return [s.strip() for s in _COMMENT.sub("", self.sql).split(";") if s.strip()]


def migrations(dialect: Dialect) -> list[Migration]:
    """Every migration of `dialect`, in order; their numbers run 1, 2, 3… with no gap."""
    found: list[Migration] = []
    for entry in resources.files("receiver.store").joinpath("sql", dialect).iterdir():
        match = _FILE.fullmatch(entry.name)
        if match is not None:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.number)
    if [m.number for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..{len(found)}: {[m.number for m in found]}")
    return found


SQLITE = migrations("sqlite")
POSTGRES = migrations("postgres")
