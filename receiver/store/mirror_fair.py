"""Which due mirror tasks a claim takes: at most a share per origin, so one slow origin cannot take
every fetch slot of a replica (pure; used by both stores' `claim_mirror_tasks`).

An origin is the URL's authority (`host:port`, lower-cased), what lies between `://` and the next
`/`; a `data:` URI has none (''), and is never held back (decoding it waits on no one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# The same key in SQL, to leave out origins with no room before the rows are read.
SQLITE_ORIGIN = (
    "lower(CASE WHEN instr(url, '://') = 0 THEN '' ELSE substr(url, instr(url, '://') + 3, "
    "CASE WHEN instr(substr(url, instr(url, '://') + 3), '/') = 0 THEN length(url) "
    "ELSE instr(substr(url, instr(url, '://') + 3), '/') - 1 END) END)"
)
POSTGRES_ORIGIN = "lower(coalesce(substring(url from '://([^/]*)'), ''))"
SCAN = 500  # due rows read per claim at most: what origins with room can choose from


def origin_of(url: str) -> str:
    if "://" not in url:
        return ""
    return url.partition("://")[2].split("/", 1)[0].lower()


def full_origins(room: Mapping[str, int] | None) -> list[str]:
    return sorted(origin for origin, left in (room or {}).items() if left <= 0 and origin)


def pick(
    rows: Iterable[Any], *, limit: int, room: Mapping[str, int] | None, per_origin: int | None, url_at: int
) -> list[Any]:
    """The first `limit` rows (in their order) that keep each origin within its room: `room[origin]`
    when given, else `per_origin` (None: no bound)."""
    taken: dict[str, int] = {}
    chosen: list[Any] = []
    for row in rows:
        origin = origin_of(row[url_at])
        if origin:
            left = (room or {}).get(origin, per_origin)
            if left is not None and taken.get(origin, 0) >= left:
                continue
            taken[origin] = taken.get(origin, 0) + 1
        chosen.append(row)
        if len(chosen) >= limit:
            break
    return chosen
