"""Reading rows and pages: pure helpers shared by both backends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson

from receiver.models import DeliveryStatus, Job, JobStatus, Outcome, Output, StoredReceipt, dumps, iso_time
from receiver.providers import PROVIDER_NAMES
from receiver.store.base import (
    PAGE_BUDGET_BYTES,
    Attempt,
    Event,
    FinishedFilter,
    JobFilter,
    MediaObject,
    Message,
    MirrorTask,
    SinkRow,
)
from receiver.store.rules import NewReceipt

# The job columns every backend reads, by name (see `job_from_row`).
JOB_COLUMNS = (
    "seq, id, provider, provider_job_id, status, outputs, error, metadata, callback_url, registered, "
    "expected_outputs, delivery_status, created_at, completed_at, poll_count"
)


def output_from_json(o: Mapping[str, Any]) -> Output:
    """An output as `rules.outputs_json` stores it (mirror fields only once set)."""
    return Output(
        o["url"],
        o.get("media_type"),
        o.get("key"),
        stored_url=o.get("stored_url"),
        sha256=o.get("sha256"),
        size=o.get("bytes"),
        mirror_error=o.get("mirror_error"),
        awaiting=bool(o.get("awaiting")),
    )


class Row(Protocol):
    """A row read by column name: sqlite3.Row and asyncpg.Record both."""

    def __getitem__(self, key: str, /) -> Any: ...


def job_from_row(row: Row) -> Job:
    """A job from a row read by name."""
    outputs = [output_from_json(o) for o in orjson.loads(row["outputs"])]
    completed = row["completed_at"]
    return Job(
        seq=row["seq"],
        id=row["id"],
        provider=row["provider"],
        provider_job_id=row["provider_job_id"],
        status=JobStatus(row["status"]),
        outputs=outputs,
        error=row["error"],
        metadata=orjson.loads(row["metadata"]),
        callback_url=row["callback_url"],
        registered=bool(row["registered"]),
        expected_outputs=row["expected_outputs"],
        delivery_status=DeliveryStatus(row["delivery_status"]),
        created_at=iso_time(row["created_at"]),
        completed_at=iso_time(completed) if completed is not None else None,
        poll_count=row["poll_count"],
    )


RECEIPT_COLUMNS = "id, provider, source, outcome, provider_job_ids, job_ids, error, body, received_at, headers"


def receipt_rows(ids: list[int], receipts: list[NewReceipt]) -> tuple[list[tuple[Any, ...]], list[tuple[str, int]]]:
    """The rows to insert for new receipts given their ids (RECEIPT_INSERT_COLUMNS), and their links to jobs."""
    rows = [
        (
            rid,
            r.provider,
            r.source,
            r.outcome._value_,
            dumps(r.provider_job_ids),
            dumps(r.job_ids),
            r.error,
            dumps(r.headers),
            r.body,
            r.received_at,
        )
        for rid, r in zip(ids, receipts)
    ]
    links = [(job_id, rid) for rid, r in zip(ids, receipts) for job_id in r.job_ids]
    return rows, links


RECEIPT_INSERT_COLUMNS = "id, provider, source, outcome, provider_job_ids, job_ids, error, headers, body, received_at"


def receipt_from_row(r: Any) -> StoredReceipt:
    return StoredReceipt(
        r["id"],
        r["provider"],
        r["source"],
        Outcome(r["outcome"]),
        orjson.loads(r["provider_job_ids"]),
        r["error"],
        bytes(r["body"]),
        iso_time(r["received_at"]),
        job_ids=orjson.loads(r["job_ids"]),
        headers=orjson.loads(r["headers"]),
    )


def budget_page(rows: list[tuple[int, int]], limit: int) -> tuple[list[int], bool]:
    """Of (key, size) rows newest first (limit + 1 of them), the keys that fit in `limit` and the byte
    budget (always at least one), and whether more follow."""
    keys: list[int] = []
    spent = 0
    for key, size in rows[:limit]:
        if keys and spent + size > PAGE_BUDGET_BYTES:
            return keys, True
        keys.append(key)
        spent += size
    return keys, len(rows) > limit


def budget_events(events: list[Event]) -> list[Event]:
    """The leading events that fit in PAGE_BUDGET_BYTES (at least one): a replay is sent in slices."""
    spent = 0
    for i, event in enumerate(events):
        spent += len(event.data)
        if i and spent > PAGE_BUDGET_BYTES:
            return events[:i]
    return events


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` in code-point order (which is
    UTF-8 byte order: SQLite's BINARY, PostgreSQL's "C"), so `>= prefix AND < end` is an index range."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1 if last + 1 != 0xD800 else 0xE000  # surrogates are not characters
            return "".join(chars) + chr(nxt)
    return None


def job_filter_sql(f: JobFilter, mark: str, *, collate: str = "") -> tuple[list[str], list[Any]]:
    """WHERE clauses and parameters for a JobFilter; `mark` makes the n-th placeholder (`?` or `$n`);
    `collate` makes a prefix range compare in code-point order (PostgreSQL: ` COLLATE "C"`)."""
    where: list[str] = []
    params: list[Any] = []

    def place(value: Any) -> str:
        params.append(value)
        return mark if mark == "?" else f"${len(params)}"

    if f.prefix is not None:
        end = prefix_end(f.prefix)
        ranges = []
        for column, extra in (("id", ""), ("provider_job_id", _ANY_PROVIDER + " AND ")):
            lower = f"{column}{collate} >= {place(f.prefix)}"  # placed first: `?` marks bind in order
            upper = f" AND {column}{collate} < {place(end)}" if end is not None else ""
            ranges.append(f"({extra}{lower}{upper})")
        where.append("(" + " OR ".join(ranges) + ")")
    for column, op, value in (
        ("provider", "=", f.provider),
        ("status", "=", f.status),
        ("delivery_status", "=", f.delivery_status),
        ("provider_job_id", "=", f.provider_job_id),
        ("created_at", ">=", f.since),
        ("created_at", "<", f.until),
    ):
        if value is not None:
            where.append(f"{column} {op} {place(value)}")
    if f.provider_job_id is not None and f.provider is None:
        where.append(_ANY_PROVIDER)  # so the unique (provider, provider_job_id) index finds it
    return where, params


_ANY_PROVIDER = f"provider IN ({', '.join(repr(p) for p in PROVIDER_NAMES)})"


def finished_filter_sql(f: FinishedFilter, mark: str, *, has_default: bool) -> tuple[list[str], list[Any]]:
    """WHERE clauses for terminal jobs with a destination matching a FinishedFilter (see `job_filter_sql`)."""
    where = ["status <> 'pending'", "completed_at IS NOT NULL"]
    if not has_default:
        where.append("callback_url IS NOT NULL")
    params: list[Any] = []
    for column, op, value in (
        ("completed_at", ">=", f.since),
        ("completed_at", "<", f.until),
        ("provider", "=", f.provider),
        ("delivery_status", "=", f.delivery_status),
    ):
        if value is not None:
            params.append(value)
            where.append(f"{column} {op} {mark if mark == '?' else f'${len(params)}'}")
    return where, params


MESSAGE_COLUMNS = "seq, id, job_id, url, body, attempts, status, next_attempt_at"


def message_from_row(r: Any) -> Message:
    return Message(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6], r[7])


# The body sent is the message's (the same bytes on every attempt), read along by a subquery.
ATTEMPT_COLUMNS = (
    "message_id, url, attempt, status_code, error, at, request_headers, "
    "(SELECT m.body FROM messages m WHERE m.id = attempts.message_id) AS request_body, "
    "response_headers, response_body"
)


def attempt_from_row(r: Any) -> Attempt:
    return Attempt(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        iso_time(r[5]),
        orjson.loads(r[6]) if r[6] is not None else None,
        bytes(r[7]) if r[7] is not None else None,
        orjson.loads(r[8]) if r[8] is not None else None,
        bytes(r[9]) if r[9] is not None else None,
    )


def backlog_from_rows(rows: list[Any]) -> tuple[int, float | None]:
    """(pending messages, created_at of the oldest) from the rows of `queries.BACKLOG`."""
    return int(rows[0][0]), (float(rows[0][1]) if rows[0][1] is not None else None)


TASK_COLUMNS = "seq, job_id, output_index, url, attempts, created_at, last_error"
MEDIA_COLUMNS = "sha256, size, content_type, created_at, deleted_at"


def task_from_row(r: Any, *, claimed: int = 0) -> MirrorTask:
    """A mirror task; `claimed` adds the claim being made when the row was read before its UPDATE."""
    return MirrorTask(r[0], r[1], r[2], r[3], r[4] + claimed, r[5], r[6])


def media_from_row(r: Any) -> MediaObject:
    return MediaObject(r[0], int(r[1]), r[2], float(r[3]), float(r[4]) if r[4] is not None else None)


def columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as `width` column lists, for `INSERT … SELECT * FROM unnest($1::type[], …)`."""
    return [list(column) for column in zip(*rows)] if rows else [[] for _ in range(width)]


SINK_COLUMNS = "name, position, epoch, paused, last_error, last_published_at"


def sink_from_row(row: Sequence[Any]) -> SinkRow:
    name, position, epoch, paused, last_error, published_at = row
    return SinkRow(
        str(name),
        int(position),
        int(epoch),
        bool(paused),
        None if last_error is None else str(last_error),
        None if published_at is None else float(published_at),
    )


def new_epoch(paused: bool | None, position: int | None) -> int:
    """How much a sink change moves its epoch: 1 for a rewind or a resume, whose position must win over a
    publisher's older one; 0 for a pause, so the publisher still saves what its broker acknowledged."""
    return 0 if paused is True and position is None else 1
