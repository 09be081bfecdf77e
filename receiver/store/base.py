"""The one interface every store implements (SQLite now, PostgreSQL later)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from receiver.models import ApplyResult, Completion, Job, Outcome, Receipt

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Changes:
    """What a committed write changed, for in-process wake-ups (long-poll, SSE, outbox)."""

    terminal_job_ids: tuple[str, ...] = ()
    new_messages: bool = False


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
    status: str
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class Attempt:
    url: str
    attempt: int
    status_code: int | None
    error: str | None
    at: str

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "attempt": self.attempt, "status_code": self.status_code,
                "error": self.error, "at": self.at}


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any] = field(default_factory=list)
    next_cursor: str | None = None


class Store(Protocol):
    clock: Clock

    def add_listener(self, listener: ChangeListener) -> None:
        """Call `listener` after each commit that finished jobs or queued messages."""

    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def secret(self, name: str, generate: Callable[[], str]) -> str:
        """The stored value of `name`, generated and stored on first use."""

    async def apply(self, receipt: Receipt, completions: list[Completion]) -> ApplyResult:
        """Store the receipt and apply its completions in one transaction."""

    async def record_invalid(self, receipt: Receipt, error: str) -> int: ...

    async def register_job(
        self, *, provider: str, provider_job_id: str, callback_url: str | None,
        metadata: dict[str, Any], expected_outputs: int | None,
    ) -> tuple[Job, bool]:
        """Create or claim a job; returns (job, created)."""

    async def get_job(self, job_id: str) -> Job | None: ...
    async def list_jobs(self, *, provider: str | None, status: str | None, limit: int, cursor: str | None) -> Page: ...
    async def list_receipts(self, *, provider: str | None, outcome: Outcome | None, limit: int, cursor: str | None) -> Page: ...

    async def events_after(self, seq: int, limit: int) -> list[Event]: ...
    async def last_event_seq(self) -> int: ...

    async def release_leases(self) -> None: ...
    async def claim_due_messages(self, *, limit: int, lease_s: float) -> list[Message]: ...
    async def next_message_due_at(self) -> float | None: ...
    async def record_attempt(
        self, message: Message, *, status_code: int | None, error: str | None,
        outcome: str, next_attempt_at: float | None,
    ) -> None:
        """outcome: delivered | retry | failed."""

    async def redeliver(self, job_id: str) -> Message | None: ...
    async def list_deliveries(self, job_id: str) -> list[Attempt]: ...
    async def delivery_backlog(self) -> tuple[int, float | None]:
        """(pending message count, created_at of the oldest pending)."""

    async def pending_jobs(self, provider: str) -> list[Job]: ...
    async def jobs_due_for_poll(self, *, providers: list[str], limit: int) -> list[Job]: ...
    async def schedule_poll(self, job_id: str, *, next_poll_at: float) -> None: ...
    async def job_counts(self) -> dict[str, int]: ...
    async def postpone_messages(self, seqs: list[int], *, until: float) -> None:
        """Hand claimed messages back without an attempt, due again at `until`."""
