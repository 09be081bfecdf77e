"""Reading rows and pages: pure helpers shared by both backends."""

from __future__ import annotations

from typing import Any, Mapping

import orjson

from receiver.models import DeliveryStatus, Job, JobStatus, Outcome, Output, StoredReceipt, iso_time
from receiver.store.base import PAGE_BUDGET_BYTES, Event, FinishedFilter, JobFilter, Message

# The job columns every backend reads, by name (see `job_from_row`).
JOB_COLUMNS = (
    "seq, id, provider, provider_job_id, status, outputs, error, metadata, callback_url, registered, "
    "expected_outputs, delivery_status, created_at, completed_at, poll_count"
)


def output_from_json(o: Mapping[str, Any]) -> Output:
    """An output as `rules.outputs_json` stores it (mirror fields only once set)."""
    return Output(o["url"], o.get("media_type"), o.get("key"), stored_url=o.get("stored_url"), sha256=o.get("sha256"),
                  size=o.get("bytes"), mirror_error=o.get("mirror_error"), awaiting=bool(o.get("awaiting")))


def job_from_row(row: Mapping[str, Any]) -> Job:
    """A job from a row read by name (sqlite3.Row and asyncpg.Record both are mappings)."""
    outputs = [output_from_json(o) for o in orjson.loads(row["outputs"])]
    completed = row["completed_at"]
    return Job(
        seq=row["seq"], id=row["id"], provider=row["provider"], provider_job_id=row["provider_job_id"],
        status=JobStatus(row["status"]), outputs=outputs, error=row["error"], metadata=orjson.loads(row["metadata"]),
        callback_url=row["callback_url"], registered=bool(row["registered"]), expected_outputs=row["expected_outputs"],
        delivery_status=DeliveryStatus(row["delivery_status"]), created_at=iso_time(row["created_at"]),
        completed_at=iso_time(completed) if completed is not None else None, poll_count=row["poll_count"],
    )


RECEIPT_COLUMNS = "id, provider, source, outcome, provider_job_ids, job_ids, error, body, received_at"


def receipt_from_row(r: Any) -> StoredReceipt:
    return StoredReceipt(
        r["id"], r["provider"], r["source"], Outcome(r["outcome"]), orjson.loads(r["provider_job_ids"]),
        r["error"], bytes(r["body"]), iso_time(r["received_at"]), job_ids=orjson.loads(r["job_ids"]),
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


def job_filter_sql(f: JobFilter, mark: str) -> tuple[list[str], list[Any]]:
    """WHERE clauses and parameters for a JobFilter; `mark` makes the n-th placeholder (`?` or `$n`)."""
    where: list[str] = []
    params: list[Any] = []
    for column, op, value in (("provider", "=", f.provider), ("status", "=", f.status),
                              ("delivery_status", "=", f.delivery_status),
                              ("provider_job_id", "=", f.provider_job_id),
                              ("created_at", ">=", f.since), ("created_at", "<", f.until)):
        if value is not None:
            params.append(value)
            where.append(f"{column} {op} {mark if mark == '?' else f'${len(params)}'}")
    return where, params




def finished_filter_sql(f: FinishedFilter, mark: str, *, has_default: bool) -> tuple[list[str], list[Any]]:
    """WHERE clauses for terminal jobs with a destination matching a FinishedFilter (see `job_filter_sql`)."""
    where = ["status <> 'pending'", "completed_at IS NOT NULL"]
    if not has_default:
        where.append("callback_url IS NOT NULL")
    params: list[Any] = []
    for column, op, value in (("completed_at", ">=", f.since), ("completed_at", "<", f.until),
                              ("provider", "=", f.provider), ("delivery_status", "=", f.delivery_status)):
        if value is not None:
            params.append(value)
            where.append(f"{column} {op} {mark if mark == '?' else f'${len(params)}'}")
    return where, params


MESSAGE_COLUMNS = "seq, id, job_id, url, body, attempts, status, next_attempt_at"


def message_from_row(r: Any) -> Message:
    return Message(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6], r[7])
