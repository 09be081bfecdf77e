"""Outbound callbacks: claim due outbox messages, sign them (Standard Webhooks), send, record, retry.

The outbox row is written in the transaction that makes a job terminal; this worker only moves it
along. Delivery is at least once: a crash between a 2xx and its record sends the message again
after restart, with the same `webhook-id`, so receivers can deduplicate on it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import standardwebhooks

from receiver.delivery.client import AttemptResult, open_session, send
from receiver.errors import StoreError, StoreUnavailable
from receiver.models import AttemptOutcome
from receiver.notify import OUTBOX
from receiver.outage import Outage
from receiver.runtime import Runtime
from receiver.store.base import Message
from receiver.tuning import DELIVERY
from receiver.util import backoff
from receiver.util.aio import wait_any

log = logging.getLogger("receiver.delivery.worker")

MAX_BACKLOGS = 4096  # destinations whose postponed shares are tracked; those all due are dropped beyond
MAX_REMEMBERED = 100_000  # postponed messages the worker keeps to claim back itself; beyond, they come due by time


# -- pure parts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after an attempt: `delivered`, `retry` (after `delay` seconds) or `failed`."""

    outcome: AttemptOutcome
    delay: float | None = None


def decide(
    *,
    status_code: int | None,
    attempts_made: int,
    schedule: Sequence[float],
    retry_after: float | None = None,
    permanent: bool = False,
    rand: backoff.Random = random.random,
) -> Decision:
    """The retry policy. `status_code` None means no answer (timeout, refused connection, …).

    2xx is delivered; 410 (or a `permanent` error such as an unusable URL) fails at once; anything
    else is retried on the schedule until it is spent. `Retry-After` can only lengthen the wait,
    and never beyond the schedule's largest step.
    """
    if status_code is not None and 200 <= status_code < 300:
        return Decision("delivered")
    if status_code == 410 or permanent:
        return Decision("failed")
    delay = backoff.scheduled(schedule, attempts_made, rand=rand)
    if delay is None:
        return Decision("failed")
    if retry_after is not None:
        delay = max(delay, min(retry_after, max(schedule)))
    return Decision("retry", delay)


def destination(url: str) -> str:
    """`scheme://host:port`: the unit of per-destination concurrency, and all that is logged of a URL
    (paths and queries of callback URLs often carry tokens)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
        return f"{parts.scheme}://{host}:{port}"
    except ValueError:
        return "invalid-url"


# -- the worker -------------------------------------------------------------------------------


@dataclass
class _Host:
    """What the worker holds for one destination."""

    slots: asyncio.Semaphore
    held: int = 0
    started: dict[int, float] = field(default_factory=dict)  # seq → time.monotonic() its attempt began


@dataclass
class _Backlog:
    """A destination's postponed messages: the last share queued, due at `due`, holds `size` of them."""

    due: float
    size: int = 0


class _Deliverer:
    """Holds the claimed messages of one worker; each is sent by its own task under two bounds.

    A destination holds at most its share (`per_host_held`); what a claim brings beyond it is postponed and
    remembered, in order, then claimed back by seq as the destination makes room. So a destination that is
    slow or never answers neither fills the worker nor pushes its backlog ahead of others' messages in the
    next claims, and a backlog is postponed once, not again on every claim while it drains.
    """

    def __init__(self, runtime: Runtime, session: aiohttp.ClientSession, clock: Callable[[], float]) -> None:
        self.runtime = runtime
        self.session = session
        self.clock = clock
        self.limits = runtime.delivery_limits
        self.webhook = standardwebhooks.Webhook(runtime.secrets.signing_secret)
        self.timeout = runtime.settings.callback_timeout_s
        # Held messages may queue behind their destination's slots: keep them leased meanwhile.
        self.lease_s = (
            self.timeout * (self.limits.per_host_held // self.limits.per_host_concurrency + 1) + DELIVERY.lease_margin_s
        )
        self.held: dict[int, asyncio.Task[None]] = {}
        self.hosts: dict[str, _Host] = {}
        self.backlogs: dict[str, _Backlog] = {}
        # Destination → the messages this worker postponed for it, oldest first (a dict as an ordered set).
        self.waiting: dict[str, dict[int, None]] = {}
        self.remembered = 0  # messages in `waiting`
        self.slots = asyncio.Semaphore(self.limits.max_concurrency)
        self.freed = asyncio.Event()
        self.next_due_at: float | None = None  # when the first message not held is due, as last claimed

    async def run(self) -> None:
        store = self.runtime.store
        await store.release_leases()  # claims of a previous (crashed) run
        outage = Outage(log, "delivery")
        try:
            while True:
                woken = self.runtime.notifier.event(OUTBOX)  # taken before reading: no wake-up slips by
                self.freed.clear()
                try:
                    if await self._claim_and_dispatch():
                        await asyncio.sleep(0)  # the store answers without yielding: let the sends run
                        continue  # a full batch: more may be due
                    wait = self._seconds_until_due()
                    outage.ok()
                except Exception as exc:  # deliberate: the delivery loop must outlive any bug or store error
                    outage.failed(exc)  # logged once per outage (a traceback only if not a store error)
                    await asyncio.sleep(1.0)
                    continue
                await wait_any((woken, self.freed), timeout=wait)
        finally:
            held, tasks = list(self.held), list(self.held.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._hand_back(held)

    async def _hand_back(self, seqs: list[int]) -> None:
        """At shutdown: what this worker had claimed is due again at once, for another replica (else it
        would wait for its lease to run out), and so is what it had postponed to claim back itself. An
        attempt cut short may have reached its destination: the message goes again with the same
        `webhook-id` (at least once)."""
        postponed = [seq for waiting in self.waiting.values() for seq in waiting]
        if not seqs and not postponed:
            return
        store = self.runtime.store
        try:
            async with asyncio.timeout(DELIVERY.hand_back_s):
                await store.hand_back_messages(seqs)
                for start in range(0, len(postponed), self.limits.max_held):  # as long a list as a claim's
                    await store.postpone_messages(postponed[start : start + self.limits.max_held], until=self.clock())
        except (TimeoutError, StoreError) as exc:
            log.warning(
                "could not hand back %d claimed and %d postponed callback(s) (%s): sent once due",
                len(seqs),
                len(postponed),
                exc,
            )

    async def _claim_and_dispatch(self) -> bool:
        """Claim what this worker postponed for destinations that have room again, then what is due, and
        start it; True if the claim of due messages came back full."""
        store = self.runtime.store
        beyond: dict[str, list[int]] = {}
        room = self.limits.max_held - len(self.held)
        listed = self._listed(room)
        if listed:
            try:
                claimed = await store.claim_listed([seq for _, seq in listed], lease_s=self.lease_s)
            except Exception:
                self._relist(listed)  # claimed by seq after the store comes back, not at their fallback time
                raise
            self._dispatch(claimed, beyond)
            room = self.limits.max_held - len(self.held)
        full = False
        if room > 0:
            claim = await store.claim_due(limit=room, lease_s=self.lease_s)
            self.next_due_at = claim.next_due_at
            self._dispatch(claim.messages, beyond)
            full = len(claim.messages) >= room
        if beyond:
            await self._postpone(beyond)
        return full

    def _dispatch(self, messages: list[Message], beyond: dict[str, list[int]]) -> None:
        """Start each message its destination has room for; the others go to `beyond`, by destination."""
        for message in messages:
            if message.seq in self.held:
                continue  # still ours (its lease ran out while it queued); the claim renewed it
            url_host = destination(message.url)
            host = self.hosts.get(url_host)
            if host is None:
                host = self.hosts[url_host] = _Host(asyncio.Semaphore(self.limits.per_host_concurrency))
            if host.held >= self.limits.per_host_held:
                beyond.setdefault(url_host, []).append(message.seq)
                continue
            host.held += 1
            self.held[message.seq] = asyncio.create_task(
                self._deliver(message, url_host, host), name=f"deliver {message.id}"
            )

    def _listed(self, room: int) -> list[tuple[str, int]]:
        """Up to `room` of the messages this worker postponed, oldest first, for destinations with room:
        (destination, seq) each, taken out of `waiting`."""
        listed: list[tuple[str, int]] = []
        for url_host, waiting in list(self.waiting.items()):
            host = self.hosts.get(url_host)
            free = self.limits.per_host_held - (host.held if host is not None else 0)
            while waiting and free > 0 and len(listed) < room:
                seq = next(iter(waiting))
                del waiting[seq]
                self.remembered -= 1
                listed.append((url_host, seq))
                free -= 1
            if not waiting:
                del self.waiting[url_host]
        return listed

    def _relist(self, listed: list[tuple[str, int]]) -> None:
        """Put back what `_listed` took out, ahead of what each destination still has waiting."""
        taken: dict[str, dict[int, None]] = {}
        for url_host, seq in listed:
            taken.setdefault(url_host, {})[seq] = None
        for url_host, seqs in taken.items():
            self.waiting[url_host] = {**seqs, **self.waiting.get(url_host, {})}
        self.remembered = sum(len(waiting) for waiting in self.waiting.values())

    def _remember(self, url_host: str, seq: int) -> bool:
        """Keep a postponed message to claim by its seq once its destination has room; False past the bound."""
        waiting = self.waiting.get(url_host)
        if waiting is not None and seq in waiting:
            return True
        if self.remembered >= MAX_REMEMBERED:
            return False
        self.waiting.setdefault(url_host, {})[seq] = None
        self.remembered += 1
        return True

    async def _postpone(self, beyond: dict[str, list[int]]) -> None:
        """Hand back what exceeds a destination's share, queued behind what it already has postponed: in
        shares of `per_host_held`, each due one step (see `_step`) after the one before."""
        now = self.clock()
        if len(self.backlogs) > MAX_BACKLOGS:
            self.backlogs = {host: b for host, b in self.backlogs.items() if b.due >= now}
        due: dict[float, list[int]] = {}
        for url_host, seqs in beyond.items():
            step = self._step(url_host)
            backlog = self.backlogs.get(url_host)
            if backlog is None or backlog.due < now:  # all it had postponed is due: start a new queue
                backlog = self.backlogs[url_host] = _Backlog(now + step)
            for seq in seqs:
                if backlog.size >= self.limits.per_host_held and backlog.due < now + DELIVERY.max_postpone_s:
                    backlog.due, backlog.size = backlog.due + step, 0
                backlog.size += 1
                # One this worker keeps is claimed back by its seq when there is room (`_listed`), in order; its
                # due time is for when this worker is gone without handing it back. Due any sooner, it would be
                # claimed by time while there is no room yet, and postponed again: a write each time.
                until = (
                    max(backlog.due, now + DELIVERY.max_postpone_s) if self._remember(url_host, seq) else backlog.due
                )
                due.setdefault(until, []).append(seq)
        for until, group in due.items():
            await self.runtime.store.postpone_messages(group, until=until)
            self.next_due_at = until if self.next_due_at is None else min(self.next_due_at, until)

    def _step(self, url_host: str) -> float:
        """How far apart a destination's postponed shares are due, for messages past what the worker
        remembers (`MAX_REMEMBERED`): as long as its oldest attempt under way has taken so far, within
        bounds. A destination that answers gets its next share almost at once (one that comes due before
        there is room is queued again, at the back); one that stopped answering is looked at about once a
        second."""
        host = self.hosts.get(url_host)
        running = time.monotonic() - min(host.started.values()) if host is not None and host.started else 0.0
        return min(DELIVERY.postpone_s, max(DELIVERY.min_postpone_s, running))

    def _seconds_until_due(self) -> float | None:
        """Until the next message is due, as the last claim found it (and the postponing after it)."""
        if len(self.held) >= self.limits.max_held:
            return DELIVERY.max_idle_s  # full: a finished message (`freed`) is what lets us go on
        if self.next_due_at is None:
            return DELIVERY.max_idle_s
        return min(DELIVERY.max_idle_s, max(0.0, self.next_due_at - self.clock()))

    async def _attempt(self, message: Message, host: _Host) -> tuple[Message, AttemptResult]:
        """Send `message` once there is a slot: as it stands then (the message it was sent as, and how)."""
        queued = host.slots.locked() or self.slots.locked()
        async with host.slots, self.slots:
            if queued:  # it waited: a PATCH of its job may have re-pointed it meanwhile
                message = await self._as_it_stands(message)
            host.started[message.seq] = time.monotonic()
            try:
                return message, await send(self.session, self.webhook, message, timeout=self.timeout)
            finally:
                del host.started[message.seq]

    async def _as_it_stands(self, message: Message) -> Message:
        """The message with its destination as stored now. Should the store not answer, the one held: an
        attempt to a URL changed meanwhile is recorded as made there and the message stays due (see
        `Store.record_attempt`)."""
        try:
            waiting = await self.runtime.store.waiting_messages(message.job_id)
        except StoreError:
            return message
        return next((m for m in waiting if m.seq == message.seq and m.url != message.url), message)

    async def _deliver(self, message: Message, url_host: str, host: _Host) -> None:
        try:
            message, result = await self._attempt(message, host)
            decision = decide(
                status_code=result.status_code,
                attempts_made=message.attempts + 1,
                schedule=self.runtime.settings.retry_schedule,
                retry_after=result.retry_after,
                permanent=result.permanent,
            )
            next_at = self.clock() + decision.delay if decision.delay is not None else None
            await self.runtime.store.record_attempt(
                message,
                status_code=result.status_code,
                error=result.error,
                outcome=decision.outcome,
                next_attempt_at=next_at,
                exchange=result.exchange,
            )
            self.runtime.metrics.deliveries.labels(decision.outcome).inc()
            if decision.delay is not None:
                self.freed.set()  # a retry is due at a time the loop's wait does not know of yet
            level = logging.INFO if decision.outcome == "delivered" else logging.WARNING
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "callback %s for job %s to %s: attempt %d %s (%s)%s",
                    message.id,
                    message.job_id,
                    url_host,
                    message.attempts + 1,
                    decision.outcome,
                    result.error or result.status_code,
                    f", next in {decision.delay:.2f}s" if decision.delay is not None else "",
                    extra={"job_id": message.job_id},
                )
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:
            log.warning(
                "callback %s for job %s: could not record the attempt (%s); it is sent again once its lease runs out",
                message.id,
                message.job_id,
                exc,
            )
        except Exception:  # deliberate: a bug in one attempt must not take the loop down
            # The message stays pending and leased: it is tried again once the lease runs out.
            log.exception("callback %s for job %s: could not record the attempt", message.id, message.job_id)
        finally:
            self._release(message.seq, url_host, host)

    def _release(self, seq: int, url_host: str, host: _Host) -> None:
        if len(self.held) >= self.limits.max_held:
            self.freed.set()  # the loop waits for room to claim more (new messages wake it otherwise)
        self.held.pop(seq, None)
        host.held -= 1
        if host.held <= self.limits.per_host_held // 2 and url_host in self.waiting:
            self.freed.set()  # half its share is free: claim what this worker postponed for it
        if host.held <= 0 and self.hosts.get(url_host) is host:
            del self.hosts[url_host]


async def run_delivery(runtime: Runtime) -> None:
    """The delivery worker: runs until cancelled at shutdown; pending messages stay in the store."""
    session = open_session(runtime.delivery_limits)
    try:
        await _Deliverer(runtime, session, runtime.store.clock).run()
    finally:
        await session.close()
