"""How receipts, completions and registrations change jobs: pure Python, no SQL.

A `UnitOfWork` holds the jobs one write touches (loaded by the backend), changes them in memory by
the rules below, and hands the backend a `Writes` to persist in the same transaction. Both stores
(SQLite and PostgreSQL) run exactly these rules; each owns only its SQL and its connections.
One unit can carry many webhooks (the group commit), so a burst costs a handful of statements.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from receiver.models import (
    Completion,
    DeliveryStatus,
    Job,
    JobStatus,
    Outcome,
    Output,
    Receipt,
    callback_body,
    dumps,
    event_type,
    iso_time,
)


def outputs_json(outputs: list[Output]) -> str:
    return dumps([_output_json(o) for o in outputs])


def _output_json(o: Output) -> dict[str, Any]:
    out: dict[str, Any] = {"url": o.url, "media_type": o.media_type, "key": o.key}
    if o.sha256 is None and o.mirror_error is None and o.stored_url is None and o.size is None and not o.awaiting:
        return out  # not mirrored (yet): most outputs, on the path of every webhook
    for name, value in (
        ("stored_url", o.stored_url),
        ("sha256", o.sha256),
        ("bytes", o.size),
        ("mirror_error", o.mirror_error),
        ("awaiting", o.awaiting or None),
    ):
        if value is not None:
            out[name] = value
    return out


def merge_outputs(existing: list[Output], new: Iterable[Output]) -> list[Output]:
    """Existing outputs plus the new ones not seen yet (by provider key, else URL), in arrival order."""
    seen = {o.identity for o in existing}
    merged = list(existing)
    for output in new:
        if output.identity not in seen:
            seen.add(output.identity)
            merged.append(output)
    return merged


_SECRET_HEADERS = frozenset({"authorization", "cookie", "x-api-key", "ocp-apim-subscription-key"})


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A receipt's headers without credentials."""
    return {k: v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS}


def sortable_id(prefix: str, now: float, entropy: bytes) -> str:
    """`prefix_` + 32 hex digits: milliseconds, then 80 random bits (as UUIDv7; `entropy`: 10 bytes of
    os.urandom, from `Entropy`). Ids made in turn sort together, so their unique index grows at its end
    instead of writing a random page per insert."""
    return f"{prefix}_{int(now * 1000) & 0xFFFF_FFFF_FFFF:012x}{entropy.hex()}"


class Entropy:
    """os.urandom drawn in blocks: one system call per block of ids, not one per id (a call costs
    microseconds in a VM, per job and per message under load)."""

    BLOCK = 640  # 64 ids

    def __init__(self) -> None:
        self._pool = b""

    def take(self, n: int) -> bytes:
        if len(self._pool) < n:
            self._pool = os.urandom(max(self.BLOCK, n))
        taken, self._pool = self._pool[:n], self._pool[n:]
        return taken


@dataclass(slots=True)
class Tracked:
    """A job as loaded (or created) by this unit, with the timestamps its row needs."""

    job: Job
    new: bool
    created_ts: float
    completed_ts: float | None = None
    next_poll_at: float | None = None
    dirty: bool = False
    owner: str | None = None  # the replica running a receiver-made call for it (Lumenfall)


# The unit's own records below are plain (not frozen) slotted dataclasses: each is made once per
# webhook and only read after, and a frozen dataclass's __init__ costs several times as much.
@dataclass(slots=True)
class Applied:
    job: Job
    changed: bool
    became_terminal: bool


@dataclass(slots=True)
class NewMessage:
    id: str
    job_id: str
    url: str
    body: bytes
    created_at: float


@dataclass(slots=True)
class NewEvent:
    job_id: str
    type: str
    data: str
    created_at: float


@dataclass(slots=True)
class NewReceipt:
    provider: str
    source: str
    outcome: Outcome
    provider_job_ids: list[str]
    job_ids: list[str]
    error: str | None
    headers: dict[str, str]
    body: bytes
    received_at: float


@dataclass(slots=True)
class NewMirrorTask:
    """Copy output `index` of a job to the media store (see receiver.media.mirror)."""

    job_id: str
    index: int
    url: str
    created_at: float


@dataclass(frozen=True, slots=True)
class MirrorResult:
    """How mirroring one output ended: its stored copy, or `error` (why it gave up)."""

    stored_url: str | None = None
    sha256: str | None = None
    size: int | None = None
    content_type: str | None = None
    error: str | None = None


@dataclass
class Writes:
    """Everything one unit leaves to persist, in the order it must be written."""

    new_jobs: list[Tracked] = field(default_factory=list)
    changed_jobs: list[Tracked] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)
    messages: list[NewMessage] = field(default_factory=list)
    receipts: list[NewReceipt] = field(default_factory=list)
    mirror_tasks: list[NewMirrorTask] = field(default_factory=list)


class UnitOfWork:
    def __init__(
        self, *, now: float, reconcile_after_s: float, default_callback_url: str | None, mirroring: bool = False
    ) -> None:
        self.now = now
        self.reconcile_after_s = reconcile_after_s
        self.default_callback_url = default_callback_url
        # Mirroring on: a succeeded job's event and callback wait until its outputs are mirrored.
        self.mirroring = mirroring
        self._mirror_tasks: list[NewMirrorTask] = []
        self._jobs: dict[tuple[str, str], Tracked] = {}
        self._events: list[NewEvent] = []
        self._messages: list[NewMessage] = []
        self._receipts: list[NewReceipt] = []
        self.terminal_job_ids: list[str] = []
        self._entropy = Entropy()
        self._now_iso: str | None = None

    @property
    def now_iso(self) -> str:
        """`now` as an ISO time, made once per unit (every job a unit touches shares its clock)."""
        if self._now_iso is None:
            self._now_iso = iso_time(self.now)
        return self._now_iso

    def new_id(self, prefix: str) -> str:
        return sortable_id(prefix, self.now, self._entropy.take(10))

    # -- what the backend loads ------------------------------------------------------------------

    def missing(self, keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
        """Of these (provider, provider_job_id) keys, those not tracked yet, grouped by provider."""
        by_provider: dict[str, list[str]] = {}
        for provider, provider_job_id in sorted(set(keys)):
            if (provider, provider_job_id) not in self._jobs:
                by_provider.setdefault(provider, []).append(provider_job_id)
        return by_provider

    def track(self, job: Job) -> Tracked:
        key = (job.provider, job.provider_job_id)
        if key not in self._jobs:
            self._jobs[key] = Tracked(job, new=False, created_ts=0.0)
        return self._jobs[key]

    def job(self, provider: str, provider_job_id: str) -> Job | None:
        tracked = self._jobs.get((provider, provider_job_id))
        return tracked.job if tracked else None

    # -- the rules -------------------------------------------------------------------------------

    def _create(
        self,
        provider: str,
        provider_job_id: str,
        *,
        registered: bool,
        callback_url: str | None = None,
        metadata: dict[str, Any] | None = None,
        expected_outputs: int | None = None,
        owner: str | None = None,
    ) -> Tracked:
        job = Job(
            id=self.new_id("job"),
            provider=provider,
            provider_job_id=provider_job_id,
            status=JobStatus.PENDING,
            outputs=[],
            error=None,
            metadata=metadata or {},
            callback_url=callback_url,
            delivery_status=DeliveryStatus.NONE,
            created_at=self.now_iso,
            completed_at=None,
            registered=registered,
            expected_outputs=expected_outputs,
        )
        tracked = Tracked(
            job, new=True, created_ts=self.now, next_poll_at=self.now + self.reconcile_after_s, owner=owner
        )
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
                    if self.mirroring:  # mirrored too, but its job's event went out already
                        self._mirror(job, range(len(job.outputs), len(merged)), merged)
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
        self,
        provider: str,
        provider_job_id: str,
        *,
        callback_url: str | None,
        metadata: dict[str, Any],
        expected_outputs: int | None,
        owner: str | None = None,
    ) -> tuple[Job, bool]:
        """Create the job, or claim one whose completion came first; a registered job is returned as is."""
        tracked = self._jobs.get((provider, provider_job_id))
        if tracked is None:
            tracked = self._create(
                provider,
                provider_job_id,
                registered=True,
                callback_url=callback_url,
                metadata=metadata,
                expected_outputs=expected_outputs,
                owner=owner,
            )
            return tracked.job, True
        job = tracked.job
        if job.registered:
            return job, False
        job.registered, job.callback_url, job.metadata, job.expected_outputs = (
            True,
            callback_url,
            metadata,
            expected_outputs,
        )
        tracked.dirty = True
        if job.status.terminal and not any(o.awaiting for o in job.outputs):  # else it goes once mirrored
            url = job.callback_url or self.default_callback_url
            # Registering a job whose result already arrived delivers it at once, unless it already went there.
            if url and not (url == self.default_callback_url and job.delivery_status is not DeliveryStatus.NONE):
                self.enqueue(job, url)
        elif job.outputs and len(job.outputs) >= (expected_outputs or 1):
            job.status = JobStatus.SUCCEEDED  # Runware images that were waiting for their count
            self._finish(tracked)
        return job, False

    def end(self, job: Job, status: JobStatus, error: str | None) -> bool:
        """End a pending job as `status` (cancelled by its user, failed by the timeout): its event and
        callback like any terminal change; a terminal job never changes (False)."""
        if job.status.terminal:
            return False
        job.status, job.error = status, error
        self._finish(self.track(job))
        return True

    def patch(self, job: Job, changes: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """Change `callback_url` and/or `metadata` (the keys present in `changes`); returns the job's
        destination before and after, so the backend can re-point its messages not yet delivered."""
        before = job.callback_url or self.default_callback_url
        if "callback_url" in changes:
            job.callback_url = changes["callback_url"]
        if "metadata" in changes:
            job.metadata = changes["metadata"]
        self.track(job).dirty = True
        return before, job.callback_url or self.default_callback_url

    def _finish(self, tracked: Tracked) -> None:
        """Make the job terminal: its event, and its outbox message if it has a destination.
        With mirroring, a succeeded job's outputs are queued for mirroring first (see `mirrored`)."""
        job = tracked.job
        tracked.completed_ts, tracked.next_poll_at, tracked.dirty = self.now, None, True
        job.completed_at = self.now_iso
        url = job.callback_url or self.default_callback_url
        if url:
            job.delivery_status = DeliveryStatus.PENDING
        self.terminal_job_ids.append(job.id)
        if self.mirroring and job.status is JobStatus.SUCCEEDED:
            waiting = [i for i, o in enumerate(job.outputs) if o.sha256 is None and o.mirror_error is None]
            if waiting:
                job.outputs = [replace(o, awaiting=True) if i in waiting else o for i, o in enumerate(job.outputs)]
                self._mirror(job, waiting, job.outputs)
                return
        self._announce(job)

    def _announce(self, job: Job) -> None:
        """A terminal job's event, and its outbox message if it has a destination."""
        url = job.callback_url or self.default_callback_url
        self._events.append(NewEvent(job.id, event_type(job.status), dumps(job.to_json()), self.now))
        if url:
            self.enqueue(job, url)

    def _mirror(self, job: Job, indexes: Iterable[int], outputs: list[Output]) -> None:
        for i in indexes:
            self._mirror_tasks.append(NewMirrorTask(job.id, i, outputs[i].url, self.now))

    def mirrored(self, job: Job, index: int, result: MirrorResult) -> bool:
        """Record the mirror of output `index` (its stored copy, or why not); once the last output the
        job's event waits for is done, the event and callback go out (True)."""
        if index >= len(job.outputs):
            return False
        was_awaiting = job.outputs[index].awaiting
        outputs = list(job.outputs)
        outputs[index] = replace(
            outputs[index],
            stored_url=result.stored_url,
            sha256=result.sha256,
            size=result.size,
            mirror_error=result.error,
            awaiting=False,
        )
        job.outputs = outputs
        self.track(job).dirty = True
        if was_awaiting and not any(o.awaiting for o in outputs) and job.status.terminal:
            self.terminal_job_ids.append(job.id)
            self._announce(job)
            return True
        return False

    def mirror_retrying(self, job: Job, index: int, shown: str) -> None:
        """Output `index` is still being mirrored after a failure: its mirror_error says so meanwhile."""
        if index < len(job.outputs) and job.outputs[index].awaiting:
            outputs = list(job.outputs)
            outputs[index] = replace(outputs[index], mirror_error=shown)
            job.outputs = outputs
            self.track(job).dirty = True

    def enqueue(self, job: Job, url: str) -> str:
        """Queue a new callback message (a new `webhook-id`) for a terminal job."""
        job.delivery_status = DeliveryStatus.PENDING
        self.track(job).dirty = True
        message_id = self.new_id("msg")
        self._messages.append(NewMessage(message_id, job.id, url, callback_body(job, self.now_iso), self.now))
        return message_id

    def redeliver(self, job: Job, url: str | None = None) -> str | None:
        """Queue a terminal job's result again, to `url` or else to its own destination: the message's id,
        or None when the job has not ended or has nowhere to go."""
        destination = url or job.callback_url or self.default_callback_url
        if not job.status.terminal or not destination:
            return None
        return self.enqueue(job, destination)

    @property
    def queued_messages(self) -> bool:
        return bool(self._messages)

    def add_receipt(
        self,
        receipt: Receipt,
        outcome: Outcome,
        provider_job_ids: list[str],
        job_ids: list[str],
        error: str | None,
    ) -> int:
        """Keep a receipt; returns its index among this unit's receipts (the backend assigns ids)."""
        self._receipts.append(
            NewReceipt(
                receipt.provider,
                receipt.source,
                outcome,
                provider_job_ids,
                job_ids,
                error,
                kept_headers(receipt.headers),
                receipt.body,
                self.now,
            )
        )
        return len(self._receipts) - 1

    def apply_receipt(self, receipt: Receipt, completions: list[Completion] | None, error: str | None) -> Ingested:
        """One inbound message: its completions applied, and its receipt kept with the outcome."""
        if completions is None:
            return Ingested(self.add_receipt(receipt, Outcome.INVALID, [], [], error), Outcome.INVALID, [], [], error)
        job_ids: list[str] = []
        terminal: list[str] = []
        applied = duplicate = False
        for completion in completions:
            result = self.apply(completion)
            if result is None:  # progress: it changes nothing, but it is about its job, when that exists
                known = self.job(completion.provider, completion.provider_job_id)
                if known is not None and known.id not in job_ids:
                    job_ids.append(known.id)
                continue
            if result.job.id not in job_ids:
                job_ids.append(result.job.id)
            applied |= result.changed
            duplicate |= not result.changed
            if result.became_terminal:
                terminal.append(result.job.id)
        outcome = Outcome.APPLIED if applied else Outcome.DUPLICATE if duplicate else Outcome.IGNORED
        pids = (
            [completions[0].provider_job_id]
            if len(completions) == 1
            else sorted({c.provider_job_id for c in completions})
        )
        return Ingested(self.add_receipt(receipt, outcome, pids, job_ids, None), outcome, job_ids, terminal, None)

    # -- what the backend writes -----------------------------------------------------------------

    def writes(self) -> Writes:
        return Writes(
            new_jobs=[t for t in self._jobs.values() if t.new],
            changed_jobs=[t for t in self._jobs.values() if t.dirty and not t.new],
            events=list(self._events),
            messages=list(self._messages),
            receipts=list(self._receipts),
            mirror_tasks=list(self._mirror_tasks),
        )


@dataclass(slots=True)
class Ingested:
    """What `apply_receipt` made of one message; `index` finds its receipt id once written."""

    index: int
    outcome: Outcome
    job_ids: list[str]
    terminal_job_ids: list[str]
    error: str | None
