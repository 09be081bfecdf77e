"""A unit of work: the jobs one write touches, loaded once, changed in memory, written back in bulk.

How a completion or a registration changes a job is plain Python here; SQL is only in `load*`
and `flush`. One unit can carry many webhooks (the store's group commit), so a burst costs a
handful of statements instead of a handful per webhook.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

from receiver.models import (
    Completion, DeliveryStatus, Job, JobStatus, Outcome, Output, Receipt, callback_body, dumps, event_type, iso_time,
)

JOB_COLUMNS = (
    "seq, id, provider, provider_job_id, status, outputs, error, metadata, callback_url, registered, "
    "expected_outputs, delivery_status, created_at, completed_at, poll_count"
)
_SECRET_HEADERS = frozenset({"authorization", "cookie", "x-api-key", "ocp-apim-subscription-key"})
_CHUNK = 400  # keys per IN (...) lookup, well under SQLite's bound-parameter limit
_LAST_RECEIPT_ID = "SELECT COALESCE(MAX(id), 0) FROM receipts"


def job_from_row(row: Any) -> Job:
    outputs = [Output(o["url"], o.get("media_type"), o.get("key")) for o in json.loads(row[5])]
    return Job(
        seq=row[0], id=row[1], provider=row[2], provider_job_id=row[3], status=JobStatus(row[4]),
        outputs=outputs, error=row[6], metadata=json.loads(row[7]), callback_url=row[8],
        registered=bool(row[9]), expected_outputs=row[10], delivery_status=DeliveryStatus(row[11]),
        created_at=iso_time(row[12]), completed_at=iso_time(row[13]) if row[13] is not None else None,
        poll_count=row[14],
    )


def _outputs_json(outputs: list[Output]) -> str:
    return dumps([{"url": o.url, "media_type": o.media_type, "key": o.key} for o in outputs])


def merge_outputs(existing: list[Output], new: tuple[Output, ...]) -> list[Output]:
    """Existing outputs plus the new ones not seen yet (by provider key, else URL), in arrival order."""
    seen = {o.identity for o in existing}
    merged = list(existing)
    for output in new:
        if output.identity not in seen:
            seen.add(output.identity)
            merged.append(output)
    return merged


@dataclass
class _Tracked:
    job: Job
    new: bool
    created_ts: float
    completed_ts: float | None = None
    next_poll_at: float | None = None
    dirty: bool = False


@dataclass(frozen=True, slots=True)
class Applied:
    job: Job
    changed: bool
    became_terminal: bool


class UnitOfWork:
    def __init__(self, *, now: float, reconcile_after_s: float, default_callback_url: str | None) -> None:
        self.now = now
        self.reconcile_after_s = reconcile_after_s
        self.default_callback_url = default_callback_url
        self._jobs: dict[tuple[str, str], _Tracked] = {}
        self._events: list[tuple[str, str, str, float]] = []
        self._messages: list[tuple[str, str, str, bytes, float, float]] = []
        self._receipts: list[tuple[Any, ...]] = []
        self.receipt_ids: list[int] = []
        self._next_receipt_id: int | None = None
        self.terminal_job_ids: list[str] = []

    # -- loading ---------------------------------------------------------------------------------

    def _lookups(self, keys: set[tuple[str, str]]) -> list[tuple[str, tuple[str, ...]]]:
        """The queries that fetch the jobs with these (provider, provider_job_id) keys not tracked yet."""
        by_provider: dict[str, list[str]] = {}
        for provider, provider_job_id in keys:
            if (provider, provider_job_id) not in self._jobs:
                by_provider.setdefault(provider, []).append(provider_job_id)
        # One `provider = ? AND provider_job_id IN (…)` per provider: it searches the unique index,
        # where a row-value IN over (provider, provider_job_id) would scan the whole table.
        return [
            (f"SELECT {JOB_COLUMNS} FROM jobs WHERE provider = ? AND provider_job_id IN ({','.join('?' * len(chunk))})",
             (provider, *chunk))
            for provider, ids in by_provider.items()
            for chunk in (ids[i:i + _CHUNK] for i in range(0, len(ids), _CHUNK))
        ]

    def _loaded(self, found: list[Any], last_receipt: Any) -> None:
        # This store has one writer, so receipt ids can be handed out here, known before the COMMIT.
        self._next_receipt_id = int(list(last_receipt)[0][0]) + 1
        for rows in found:
            for row in rows:
                self._track(job_from_row(row))

    def load(self, db: sqlite3.Connection, keys: set[tuple[str, str]]) -> None:
        """Fetch the jobs with these (provider, provider_job_id) keys, and the last receipt id."""
        found = [db.execute(sql, params).fetchall() for sql, params in self._lookups(keys)]
        self._loaded(found, db.execute(_LAST_RECEIPT_ID).fetchall())

    def load_id(self, db: sqlite3.Connection, job_id: str) -> Job | None:
        rows = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchall()
        return self._track(job_from_row(rows[0])).job if rows else None

    def _track(self, job: Job) -> _Tracked:
        key = (job.provider, job.provider_job_id)
        if key not in self._jobs:
            self._jobs[key] = _Tracked(job, new=False, created_ts=0.0)
        return self._jobs[key]

    def get(self, provider: str, provider_job_id: str) -> Job | None:
        tracked = self._jobs.get((provider, provider_job_id))
        return tracked.job if tracked else None

    # -- the rules -------------------------------------------------------------------------------

    def _create(
        self, provider: str, provider_job_id: str, *, registered: bool, callback_url: str | None = None,
        metadata: dict[str, Any] | None = None, expected_outputs: int | None = None,
    ) -> _Tracked:
        job = Job(
            id=f"job_{uuid.uuid4().hex}", provider=provider, provider_job_id=provider_job_id,
            status=JobStatus.PENDING, outputs=[], error=None, metadata=metadata or {}, callback_url=callback_url,
            delivery_status=DeliveryStatus.NONE, created_at=iso_time(self.now), completed_at=None,
            registered=registered, expected_outputs=expected_outputs,
        )
        tracked = _Tracked(job, new=True, created_ts=self.now, next_poll_at=self.now + self.reconcile_after_s)
        self._jobs[(provider, provider_job_id)] = tracked
        return tracked

    def apply(self, completion: Completion) -> Applied | None:
        """Apply one completion; None for progress, which changes no job (and creates none)."""
        if completion.status is JobStatus.PENDING:
            return None
        tracked = self._jobs.get((completion.provider, completion.provider_job_id))
        if tracked is None:
            tracked = self._create(completion.provider, completion.provider_job_id, registered=False)
        job = tracked.job
        if job.status.terminal:
            # A terminal job never changes state. Late extra images of a Runware task (it completed at
            # one image before a registration told us to expect more) are still added to its outputs.
            if completion.partial and job.status is JobStatus.SUCCEEDED:
                merged = merge_outputs(job.outputs, completion.outputs)
                if len(merged) > len(job.outputs):
                    job.outputs, tracked.dirty = merged, True
                    return Applied(job, True, False)
            return Applied(job, False, False)
        outputs = merge_outputs(job.outputs, completion.outputs)
        if completion.partial and completion.status is JobStatus.SUCCEEDED:
            if len(outputs) == len(job.outputs):
                return Applied(job, False, False)
            if len(outputs) < (job.expected_outputs or 1):
                job.outputs, tracked.dirty = outputs, True
                return Applied(job, True, False)
        job.outputs, job.status, job.error = outputs, completion.status, completion.error
        self._finish(tracked)
        return Applied(job, True, True)

    def register(
        self, provider: str, provider_job_id: str, *, callback_url: str | None, metadata: dict[str, Any],
        expected_outputs: int | None,
    ) -> tuple[Job, bool]:
        """Create the job, or claim one whose completion came first; a registered job is returned as is."""
        tracked = self._jobs.get((provider, provider_job_id))
        if tracked is None:
            tracked = self._create(provider, provider_job_id, registered=True, callback_url=callback_url,
                                   metadata=metadata, expected_outputs=expected_outputs)
            return tracked.job, True
        job = tracked.job
        if job.registered:
            return job, False
        job.registered, job.callback_url, job.metadata, job.expected_outputs = True, callback_url, metadata, expected_outputs
        tracked.dirty = True
        if job.status.terminal:
            url = job.callback_url or self.default_callback_url
            # Registering a job whose result already arrived delivers it at once, unless it already went there.
            if url and not (url == self.default_callback_url and job.delivery_status is not DeliveryStatus.NONE):
                self.enqueue(job, url)
        elif job.outputs and len(job.outputs) >= (expected_outputs or 1):
            job.status = JobStatus.SUCCEEDED  # Runware images that were waiting for their count
            self._finish(tracked)
        return job, False

    def _finish(self, tracked: _Tracked) -> None:
        """Make the job terminal: its event, and its outbox message if it has a destination."""
        job = tracked.job
        tracked.completed_ts, tracked.next_poll_at, tracked.dirty = self.now, None, True
        job.completed_at = iso_time(self.now)
        url = job.callback_url or self.default_callback_url
        if url:
            job.delivery_status = DeliveryStatus.PENDING
        self._events.append((job.id, event_type(job.status), dumps(job.to_json()), self.now))
        self.terminal_job_ids.append(job.id)
        if url:
            self.enqueue(job, url)

    def enqueue(self, job: Job, url: str) -> str:
        """Queue a new callback message (a new `webhook-id`) for a terminal job."""
        job.delivery_status = DeliveryStatus.PENDING
        self._track(job).dirty = True
        message_id = f"msg_{uuid.uuid4().hex}"
        self._messages.append((message_id, job.id, url, callback_body(job, self.now), self.now, self.now))
        return message_id

    @property
    def queued_messages(self) -> bool:
        return bool(self._messages)

    def add_receipt(self, receipt: Receipt, outcome: Outcome, provider_job_ids: list[str], error: str | None) -> int:
        """Keep a receipt; returns its index into `receipt_ids` (filled by `flush`)."""
        headers = {k: v for k, v in receipt.headers.items() if k.lower() not in _SECRET_HEADERS}
        self._receipts.append(
            (receipt.provider, receipt.source, outcome.value, dumps(provider_job_ids), error, dumps(headers),
             receipt.body, self.now)
        )
        return len(self._receipts) - 1

    # -- writing ---------------------------------------------------------------------------------

    def _statements(self) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """Everything to write, as (statement, rows) pairs for `executemany`, in order."""
        new = [t for t in self._jobs.values() if t.new]
        changed = [t for t in self._jobs.values() if t.dirty and not t.new]
        statements: list[tuple[str, list[tuple[Any, ...]]]] = []
        if new:
            statements.append((
                "INSERT INTO jobs (id, provider, provider_job_id, status, outputs, error, metadata, callback_url, "
                "registered, expected_outputs, delivery_status, created_at, completed_at, next_poll_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(j.id, j.provider, j.provider_job_id, j.status.value, _outputs_json(j.outputs), j.error,
                  dumps(j.metadata), j.callback_url, int(j.registered), j.expected_outputs, j.delivery_status.value,
                  t.created_ts, t.completed_ts, t.next_poll_at) for t in new for j in (t.job,)],
            ))
        if changed:
            statements.append((
                "UPDATE jobs SET status = ?, outputs = ?, error = ?, metadata = ?, callback_url = ?, registered = ?, "
                "expected_outputs = ?, delivery_status = ?, completed_at = COALESCE(?, completed_at), "
                "next_poll_at = CASE WHEN ? = 'pending' THEN next_poll_at END WHERE id = ?",
                [(j.status.value, _outputs_json(j.outputs), j.error, dumps(j.metadata), j.callback_url,
                  int(j.registered), j.expected_outputs, j.delivery_status.value, t.completed_ts, j.status.value, j.id)
                 for t in changed for j in (t.job,)],
            ))
        if self._events:
            statements.append(("INSERT INTO events (job_id, type, data, created_at) VALUES (?, ?, ?, ?)", self._events))
        if self._messages:
            statements.append((
                "INSERT INTO messages (id, job_id, url, body, status, next_attempt_at, created_at) "
                "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                self._messages,
            ))
        if self._receipts:
            if self._next_receipt_id is None:
                raise RuntimeError("receipts need load() first")
            self.receipt_ids = list(range(self._next_receipt_id, self._next_receipt_id + len(self._receipts)))
            statements.append((
                "INSERT INTO receipts (id, provider, source, outcome, provider_job_ids, error, headers, body, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(rid, *values) for rid, values in zip(self.receipt_ids, self._receipts)],
            ))
        return statements

    def flush(self, db: sqlite3.Connection) -> None:
        """Write everything in bulk, inside the caller's transaction."""
        for sql, rows in self._statements():
            db.executemany(sql, rows)
