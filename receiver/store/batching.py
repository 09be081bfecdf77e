"""Group commit: writes queue while one transaction runs, and the next transaction takes them all.

Each caller still gets its answer only after the COMMIT that holds its write. Both backends use it;
each supplies `commit(batch) -> results`, one transaction for the whole batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from receiver.errors import StoreError, StoreUnavailable
from receiver.models import ApplyResult, AttemptOutcome, Completion, MessageStatus, Receipt, dumps
from receiver.store.base import ChangeListener, Changes, Clock, Exchange, Message
from receiver.store.rows import message_from_row
from receiver.store.rules import UnitOfWork

log = logging.getLogger("receiver.store")

MAX_BATCH = 256
# A message's status after an attempt with this outcome: a retry leaves it pending.
STATUS_AFTER: dict[AttemptOutcome, MessageStatus] = {"delivered": "delivered", "failed": "failed", "retry": "pending"}


@dataclass
class Write:
    """One inbound message waiting for the group commit."""

    receipt: Receipt
    completions: list[Completion] | None  # None: an invalid receipt, kept with `error`
    error: str | None


@dataclass
class AttemptRecord:
    """One delivery attempt waiting for the group commit."""

    message: Message
    status_code: int | None
    error: str | None
    status: MessageStatus  # the message's status after it
    next_attempt_at: float
    at: float
    exchange: Exchange | None = None  # what was sent and what came back, for the inspector

    def exchange_columns(self) -> tuple[str | None, str | None, bytes | None]:
        """(request_headers, response_headers, response_body) as the attempts table keeps them."""
        x = self.exchange
        if x is None:
            return None, None, None
        return (
            dumps(x.request_headers),
            dumps(x.response_headers) if x.response_headers is not None else None,
            x.response_body,
        )


Item = Write | AttemptRecord
Commit = Callable[[list[Item]], Awaitable[list[Any]]]
Queued = tuple[Item, "asyncio.Future[Any]"]  # a write and the future its caller awaits


class GroupCommit:
    """One commit at a time, each taking everything queued meanwhile. Two at once on PostgreSQL carry more
    webhooks on one replica, but two replicas on shared cores then carry less than one (docs/store.md)."""

    def __init__(self, commit: Commit, *, name: str) -> None:
        self._commit = commit
        self._loop = asyncio.get_running_loop()  # futures made from it directly: get_running_loop() is a syscall
        # A list and an event rather than an asyncio.Queue: the writer takes everything queued at once,
        # so a queue's per-item bookkeeping buys nothing.
        self._queued: list[Queued] = []
        self._arrived = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = asyncio.create_task(self._run(), name=name)

    async def submit(self, item: Item) -> Any:
        return await self.queue(item)

    def queue(self, item: Item) -> asyncio.Future[Any]:
        """`submit` without a coroutine of its own (on the path of every webhook): the future to await."""
        if self._task is None or self._closing:
            raise StoreError("store is closed")
        done = self._loop.create_future()
        self._queued.append((item, done))
        self._arrived.set()
        # A caller that goes away (its task cancelled, and `done` with it) does not undo the write: the
        # writer commits what is queued and only skips answering a future already done.
        return done

    async def close(self) -> None:
        """Commit what is queued, then stop (refusing new writes meanwhile)."""
        if self._task is not None:
            self._closing = True
            self._arrived.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            if not self._queued:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            # Turns of the loop first, while they bring more: requests already read but not yet parsed
            # reach the queue and share this commit (a commit blocks the loop, so the fewer the better).
            waiting = -1
            while waiting < len(self._queued) < MAX_BATCH:
                waiting = len(self._queued)
                await asyncio.sleep(0)
            batch, self._queued = self._queued[:MAX_BATCH], self._queued[MAX_BATCH:]
            await self._commit_and_answer(batch)

    async def _commit_and_answer(self, batch: list[Queued]) -> None:
        try:
            self._answer(batch, await self._commit([item for item, _ in batch]))
        except StoreUnavailable as exc:
            # The database is away: every write of the batch fails alike (the caller answers 503).
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
        except Exception:  # deliberate: one bad write (or a bug) must not fail the writes batched with it
            await self._one_by_one(batch)

    async def _one_by_one(self, batch: list[Queued]) -> None:
        """Find the culprit: each write alone, so one bad write cannot fail the others."""
        for item, done in batch:
            try:
                self._answer([(item, done)], await self._commit([item]))
            except StoreUnavailable as exc:
                if not done.done():
                    done.set_exception(exc)
            except Exception as exc:  # deliberate: this write alone failed, its caller gets a StoreError
                log.exception("store write failed")
                if not done.done():
                    done.set_exception(StoreError(f"store write failed: {type(exc).__name__}"))

    @staticmethod
    def _answer(batch: list[Queued], results: list[Any]) -> None:
        for (_, done), result in zip(batch, results):
            if not done.done():
                done.set_result(result)


class BatchedStore:
    """What both stores share around the group commit: their settings, the unit of work each write starts
    from, the inbound entry points, delivery attempts, and the listeners woken after a commit. Each
    backend supplies `_commits` (and its SQL)."""

    async def redeliver(self, job_id: str) -> tuple[Message, bool] | None:
        found = await self._redeliver(job_id, None)
        return (message_from_row(found[0]), found[1]) if found is not None else None

    async def redeliver_to(self, job_id: str, url: str | None) -> Message | None:
        found = await self._redeliver(job_id, url)
        return message_from_row(found[0]) if found is not None else None

    async def _redeliver(self, job_id: str, url: str | None) -> tuple[Any, bool] | None:
        """The message row and whether it was one already waiting (see `Store.redeliver`); with `url`,
        always a new message. Each backend's SQL."""
        raise NotImplementedError

    def __init__(
        self,
        *,
        replica_id: str,
        default_callback_url: str | None,
        reconcile_after_s: float,
        clock: Clock,
        create: bool,
        mirroring: bool,
    ) -> None:
        self.replica_id = replica_id
        self.default_callback_url = default_callback_url
        self.reconcile_after_s = reconcile_after_s
        self.clock = clock
        self.mirroring = mirroring
        self._create = create
        self._listeners: list[ChangeListener] = []
        self._commits: GroupCommit | None = None

    def _unit(self) -> UnitOfWork:
        return UnitOfWork(
            now=self.clock(),
            reconcile_after_s=self.reconcile_after_s,
            default_callback_url=self.default_callback_url,
            mirroring=self.mirroring,
        )

    async def apply(self, receipt: Receipt, completions: list[Completion]) -> ApplyResult:
        return await self._submit(Write(receipt, completions, None))  # type: ignore[no-any-return]

    async def record_invalid(self, receipt: Receipt, error: str) -> int:
        return (await self._submit(Write(receipt, None, error))).receipt_id  # type: ignore[no-any-return]

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
        now = self.clock()
        self._let_go(message.seq)
        # Group-committed with the inbound writes: a busy outbox costs one transaction per batch.
        await self._submit(
            AttemptRecord(
                message,
                status_code,
                error,
                STATUS_AFTER[outcome],
                next_attempt_at if next_attempt_at is not None else now,
                now,
                exchange,
            )
        )

    def _let_go(self, seq: int) -> None:
        """A claimed message is no longer held by this replica (PostgreSQL stops renewing its lease)."""

    def _submit(self, item: Item) -> asyncio.Future[Any]:
        if self._commits is None:
            raise StoreError("store is closed")
        return self._commits.queue(item)

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def _notify(self, changes: Changes) -> None:
        if changes.terminal_job_ids or changes.new_messages or changes.everything:
            for listener in self._listeners:
                listener(changes)
