"""The one interface every store implements: SQLite (one process) and PostgreSQL (any number of replicas)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from receiver.models import ApplyResult, AttemptOutcome, Completion, Job, JobStatus, MessageStatus, Outcome, Receipt
from receiver.store.rules import MirrorResult

Clock = Callable[[], float]
T = TypeVar("T")

# Pages stop at `limit` rows or at about this many bytes of bodies, whichever comes first, so a page of
# large receipts is never built whole in memory; `next_cursor` goes on from where it stopped.
PAGE_BUDGET_BYTES = 4 * 1024 * 1024
# A list's `total` is an exact count up to this many rows, else this number with `total_exact` false: the
# count reads at most this many index entries, so asking for it on every poll stays cheap on any store.
COUNT_CAP = 10_000


@dataclass(frozen=True, slots=True)
class Changes:
    """What a committed write changed, for wake-ups (long-poll, SSE, outbox); `everything` when unknown."""

    terminal_job_ids: tuple[str, ...] = ()
    new_messages: bool = False
    everything: bool = False


ChangeListener = Callable[[Changes], None]


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    job_id: str
    type: str
    data: str  # the job JSON, one line


@dataclass(frozen=True, slots=True)
class Message:
    """One outbound callback message; `id` is its `webhook-id`, stable across attempts."""

    seq: int
    id: str
    job_id: str
    url: str
    body: bytes
    attempts: int
    status: MessageStatus
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class Claim:
    """Messages just claimed, and when the next of the others is due (None: no other is pending)."""

    messages: list[Message]
    next_due_at: float | None


@dataclass(frozen=True, slots=True)
class MirrorTask:
    """Copy output `index` of a job to the media store; `attempts` counts claims, this one included."""

    seq: int
    job_id: str
    index: int
    url: str
    attempts: int
    created_at: float
    last_error: str | None = None  # why the previous attempt failed


@dataclass(frozen=True, slots=True)
class MediaObject:
    """A mirrored object, kept by its SHA-256; `deleted_at` once the retention sweep removed it."""

    sha256: str
    size: int
    content_type: str
    created_at: float
    deleted_at: float | None


@dataclass(frozen=True, slots=True)
class Exchange:
    """What one delivery attempt sent (headers; the body is its message's) and what came back (headers and
    the first bytes of the body; None without an answer). The signature header is kept: a per-message HMAC,
    not the secret that made it."""

    request_headers: dict[str, str]
    response_headers: dict[str, str] | None = None
    response_body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    message_id: str
    url: str
    attempt: int
    status_code: int | None
    error: str | None
    at: str
    request_headers: dict[str, str] | None = None
    request_body: bytes | None = None
    response_headers: dict[str, str] | None = None
    response_body: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message_id": self.message_id,
            "url": self.url,
            "attempt": self.attempt,
            "status_code": self.status_code,
            "error": self.error,
            "at": self.at,
        }
        if self.request_headers is not None:  # attempts recorded before the receiver kept them have none
            out["request"] = {"headers": self.request_headers, "body": _text(self.request_body)}
            out["response"] = (
                None
                if self.response_headers is None
                else {
                    "status_code": self.status_code,
                    "headers": self.response_headers,
                    "body": _text(self.response_body),
                }
            )
        return out


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T] = field(default_factory=list)
    next_cursor: str | None = None
    total: int | None = None  # rows matching (capped at COUNT_CAP), when counted
    total_exact: bool = True


@dataclass(frozen=True, slots=True)
class JobFilter:
    """The filters of `GET /v1/jobs`; None means any. Times are epoch seconds on `created_at`."""

    provider: str | None = None
    status: str | None = None
    delivery_status: str | None = None
    provider_job_id: str | None = None
    since: float | None = None
    until: float | None = None
    prefix: str | None = None  # the start of the job's id or of its provider job id


@dataclass(frozen=True, slots=True)
class KeyClaim:
    """What `claim_idempotency_key` found: `new` (ours now: submit), `pending` (another request is
    submitting under it), `done` (its `job_ids` answer) or `unknown` (its submit was cut short before the
    provider answered; `job_ids` are those registered before it); `fingerprint` is of the request that took it."""

    state: Literal["new", "pending", "done", "unknown"]
    fingerprint: str
    job_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FinishedFilter:
    """Which terminal jobs `POST /v1/redeliveries` sends again; times are epoch seconds on `completed_at`."""

    since: float
    until: float | None = None
    provider: str | None = None
    delivery_status: str | None = None


@dataclass(frozen=True, slots=True)
class SinkRow:
    """A sink's stored state: `position` is the last event id its broker acknowledged; `epoch` grows with
    each rewind or resume, so a publisher's advance made before one is ignored."""

    name: str
    position: int = 0
    epoch: int = 0
    paused: bool = False
    last_error: str | None = None
    last_published_at: float | None = None


class Store(Protocol):
    clock: Clock
    replica_id: str
    # How often waiters re-read the store even without a wake-up: None when every commit wakes them
    # (one process); a second or so when other replicas' commits arrive by NOTIFY, as a backstop.
    backstop_s: float | None

    def add_listener(self, listener: ChangeListener) -> None:
        """Call `listener` after each commit (here or, for PostgreSQL, on another replica) that
        finished jobs or queued messages."""

    async def close(self) -> None: ...
    async def ping(self) -> None:
        """Raise StoreError when the store cannot take writes."""

    async def secret(self, name: str, generate: Callable[[], str]) -> str:
        """The stored value of `name`, generated and stored on first use (the same on every replica)."""

    async def apply(self, receipt: Receipt, completions: list[Completion]) -> ApplyResult:
        """Store the receipt and apply its completions in one transaction."""

    async def record_invalid(self, receipt: Receipt, error: str) -> int: ...

    async def register_job(
        self,
        *,
        provider: str,
        provider_job_id: str,
        callback_url: str | None,
        metadata: dict[str, Any],
        expected_outputs: int | None,
        owner: str | None = None,
    ) -> tuple[Job, bool]:
        """Create or claim a job; returns (job, created). `owner`: the replica running its call."""

    async def get_job(self, job_id: str) -> Job | None: ...
    async def list_jobs(self, *, filters: JobFilter, limit: int, cursor: str | None, count: bool = False) -> Page[Job]:
        """A page newest first; `count`: also how many match (see COUNT_CAP)."""

    async def list_receipts(
        self,
        *,
        provider: str | None,
        outcome: Outcome | None,
        limit: int,
        cursor: str | None,
        job_id: str | None = None,
        count: bool = False,
    ) -> Page[Any]: ...

    async def record_refusals(self, refusals: list[Any], *, keep: int = ...) -> None:
        """Keep refused requests (`refusal_rows.Refusal`), then trim to the newest `keep`."""

    async def list_refusals(
        self, *, provider: str | None, reason: str | None, limit: int, cursor: str | None, count: bool = False
    ) -> Page[Any]: ...

    async def events_after(self, seq: int, limit: int, *, completed_from: float | None = None) -> list[Event]:
        """Committed events after `seq`, in order; never one whose transaction may still commit below it.
        With `completed_from`, only the events of jobs completed at or after it (epoch seconds)."""

    async def last_event_seq(self) -> int: ...
    async def first_event_seq(self, created_from: float) -> int | None:
        """The lowest id of an event written at or after `created_from` (None if none): where a replay by
        completion time starts, since a job's event is written when or after it completes."""

    async def release_leases(self) -> None:
        """Forget this process's earlier claims (SQLite: one process owns the file); a no-op with replicas."""

    async def claim_due(self, *, limit: int, lease_s: float) -> Claim:
        """Up to `limit` due messages, leased to this replica (kept leased while held, up to `lease_s`), and in
        the same transaction the time the first message not claimed by it is due (its next attempt, or the
        end of another claim's lease): the delivery worker's two questions on every wake-up in one round trip."""

    async def claim_listed(self, seqs: list[int], *, lease_s: float) -> list[Message]:
        """Those of these messages still pending and not leased to another claim, due or not, leased to this
        replica as `claim_due` leases them; in the order given."""

    async def record_attempt(
        self,
        message: Message,
        *,
        status_code: int | None,
        error: str | None,
        outcome: AttemptOutcome,
        next_attempt_at: float | None,
        exchange: Exchange | None = None,
    ) -> None:
        """Record one attempt at a claimed message, made to `message.url`; a retry leaves it pending, due at
        `next_attempt_at`. A message whose URL changed since it was claimed (a PATCH of callback_url) stays
        pending, due now, whatever the answer: its result is sent again, to the new URL."""

    async def postpone_messages(self, seqs: list[int], *, until: float) -> None:
        """Hand claimed messages back without an attempt, due again at `until`: those leased to this replica
        or to none (one another replica has claimed meanwhile stays its own)."""

    async def redeliver(self, job_id: str) -> tuple[Message, bool] | None:
        """A terminal job's result again, to its destination: (message, retried). A message of the job to
        that destination still waiting to be sent (pending, not being sent right now) is made due now
        (retried: True, no second message); else a new message (False). None when the job has not ended
        or has nowhere to go."""

    async def list_deliveries(self, job_id: str) -> list[Attempt]: ...
    async def waiting_messages(self, job_id: str) -> list[Message]:
        """The job's messages still to be sent (pending: not yet tried, or waiting for a retry), oldest first."""

    async def hand_back_messages(self, seqs: list[int]) -> None:
        """Give up this replica's claims on these messages (shutting down): due at once, for any replica."""

    # -- the jobs API: each change under the job's key lock, through the rules ----------------
    async def update_job(self, job_id: str, changes: dict[str, Any]) -> Job | None:
        """Set `callback_url` and/or `metadata`; messages not yet delivered to the job's old destination
        go to the new one, due now. None for an unknown job."""

    async def end_job(self, job_id: str, *, status: JobStatus, error: str | None) -> tuple[Job | None, bool]:
        """End a pending job (cancel); (job, False) when it was terminal already, (None, False) unknown."""

    async def expire_jobs(self, *, created_before: float, error: str, limit: int) -> list[str]:
        """Fail up to `limit` jobs still pending that were created before `created_before`; their ids."""

    async def redeliver_to(self, job_id: str, url: str) -> Message | None:
        """A new message of a terminal job's result to `url` (not its callback URL)."""

    async def redeliver_finished(
        self, filters: FinishedFilter, *, after_seq: int, limit: int
    ) -> tuple[int, int | None]:
        """For each terminal job with a destination matching `filters`, up to `limit` jobs after `after_seq`,
        what `redeliver` does (a waiting message due now, else a new one): (messages sent again, the seq
        to go on after, or None when no more)."""

    async def discard_job(self, job_id: str) -> bool:
        """Delete a pending job nothing has touched yet (no output, no receipt); False if it was touched."""

    async def claim_idempotency_key(self, key: str, *, fingerprint: str, ttl_s: float, stale_s: float) -> KeyClaim:
        """Take `key` for a submission unless a live one holds it (within `ttl_s`; an unfinished claim only
        within `stale_s`). Concurrent claims of one key: exactly one gets `new`."""

    async def finish_idempotency_key(self, key: str, job_ids: list[str], *, outcome_unknown: bool = False) -> None:
        """Settle a claim with its jobs; `outcome_unknown`: the submit was cut before the provider answered."""

    async def release_idempotency_key(self, key: str) -> None:
        """Forget an unfinished claim (the submission was refused: a retry may submit)."""

    async def prune_idempotency_keys(self, *, older_than: float) -> None: ...
    async def delivery_backlog(self) -> tuple[int, float | None]:
        """(pending message count, created_at of the oldest pending)."""

    async def pending_jobs(self, provider: str) -> list[Job]: ...
    async def claim_due_polls(self, *, providers: list[str], limit: int, lease_s: float) -> list[Job]:
        """Pending jobs due for a status poll, each pushed `lease_s` ahead so no other replica polls it meanwhile."""

    async def schedule_poll(self, job_id: str, *, next_poll_at: float) -> None: ...
    async def job_counts(self) -> dict[str, int]: ...

    async def acquire_lease(self, name: str, *, ttl_s: float) -> int | None:
        """Take or renew the named lease for this replica: its term (a fencing number that grows with each
        new holder) while held, None while another replica holds it."""

    async def release_lease(self, name: str) -> None: ...
    async def heartbeat(self) -> None:
        """Say this replica is alive (see REPLICA_TTL_S)."""

    async def orphaned_jobs(self, provider: str) -> list[Job]:
        """Pending jobs of `provider` owned by a replica that is gone."""

    # -- media mirroring (receiver.media.mirror) -------------------------------------------------------

    async def claim_mirror_tasks(
        self, *, limit: int, lease_s: float, room: Mapping[str, int] | None = None, per_origin: int | None = None
    ) -> list[MirrorTask]:
        """Due mirror tasks, leased to this replica for `lease_s` (one replica at a time mirrors an output);
        at most `room[origin]` (else `per_origin`) of one origin (see receiver.store.mirror_fair)."""

    async def retry_mirror_task(
        self, task: MirrorTask, *, next_attempt_at: float, error: str, shown: str | None = None
    ) -> None:
        """Hand a task back after a transient failure, due again at `next_attempt_at`; `shown`, when
        given, is the output's mirror_error meanwhile (the job says it is being retried)."""

    async def finish_mirror_task(self, task: MirrorTask, result: MirrorResult) -> None:
        """Record how the output's mirror ended (and its media object); when it was the job's last,
        the job's event and callback go out in the same transaction. A task already finished is a no-op."""

    async def media_object(self, sha256: str) -> MediaObject | None: ...
    async def expire_media(self, *, before: float, limit: int) -> list[MediaObject]:
        """Mark up to `limit` objects created before `before` deleted, and return them (to remove)."""

    # -- media objects kept in the database (receiver.media.db) ----------------------------------

    async def put_media_chunk(self, upload: str, seq: int, data: bytes) -> None: ...
    async def has_media_object(self, key: str) -> bool:
        """Whether an object named `key` is stored (without reading its bytes: HEAD and 304 ask this)."""

    async def media_chunk(self, key: str, seq: int) -> bytes | None:
        """Chunk `seq` of the object named `key`; None when there is none."""

    async def name_media_upload(self, upload: str, key: str) -> None:
        """Give a finished upload its name; when `key` names one already (the same bytes), drop this one."""

    async def drop_media_upload(self, upload: str) -> None: ...
    async def delete_media_object(self, key: str) -> None: ...
    async def forget_media_uploads(self, *, older_than: float) -> int:
        """Delete unnamed uploads (cut short by a crash) written before `older_than`; how many chunks went."""

    # -- pipelines (receiver.sinks) ----------------------------------------------------------------

    async def sink_rows(self, names: list[str]) -> dict[str, SinkRow]:
        """The stored state of each named sink, created (position 0: every event) when missing."""

    async def advance_sink(self, name: str, *, epoch: int, position: int) -> bool:
        """Move the sink's position up to `position` and clear its error, unless a rewind or resume
        changed its epoch since `epoch` was read; whether it moved."""

    async def set_sink_error(self, name: str, *, epoch: int, error: str | None) -> None: ...
    async def change_sink(self, name: str, *, paused: bool | None = None, position: int | None = None) -> SinkRow:
        """Pause, resume or rewind (to `position`) a sink: a new epoch, its error cleared."""

    async def event_seq_before(self, since: float) -> int:
        """The position from which every event of a job that completed at or after `since` is published."""
