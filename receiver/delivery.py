"""Outbound callbacks: claim due outbox messages, sign them (Standard Webhooks), send, record, retry.

The outbox row is written in the transaction that makes a job terminal; this worker only moves it
along. Delivery is at least once: a crash between a 2xx and its record sends the message again
after restart, with the same `webhook-id`, so receivers can deduplicate on it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable, Sequence
from urllib.parse import urlsplit

import httpx
import standardwebhooks

from receiver import backoff
from receiver.notify import OUTBOX
from receiver.runtime import Runtime
from receiver.store.base import Message

log = logging.getLogger("receiver.delivery")

PER_HOST_CONCURRENCY = 8  # requests in flight to one destination (scheme://host:port)
# Messages held for one destination, sending or waiting their turn; more are postponed. Well above the
# concurrency: a claim takes every due message at once, and each one postponed waits POSTPONE_S more.
PER_HOST_HELD = 128
MAX_CONCURRENCY = 64  # requests in flight overall
MAX_HELD = 256  # messages held overall
POSTPONE_S = 1.0  # a message for a saturated destination is looked at again this much later
LEASE_MARGIN_S = 10.0
MAX_IDLE_S = 30.0  # re-check the store at least this often, wake-ups or not
ERROR_TEXT_CHARS = 200
DRAIN_BYTES = 65536  # a 2xx body up to this long is read, to keep its connection
USER_AGENT = "receiver-callbacks/1"


# -- pure parts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after an attempt: `delivered`, `retry` (after `delay` seconds) or `failed`."""

    outcome: str
    delay: float | None = None


def decide(
    *, status_code: int | None, attempts_made: int, schedule: Sequence[float],
    retry_after: float | None = None, permanent: bool = False, rand: backoff.Random = random.random,
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


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """`Retry-After` as seconds from `now`: delta-seconds or an HTTP-date; None if absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - now
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), 1e9)


def signed_headers(webhook: standardwebhooks.Webhook, message_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt (the timestamp is fresh, the id is not)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": webhook.sign(message_id, at, body.decode("utf-8")),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


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


# -- one attempt ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    retry_after: float | None = None
    permanent: bool = False


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_TEXT_CHARS else text[: ERROR_TEXT_CHARS - 1] + "…"


async def _peek(response: httpx.Response) -> str:
    """The start of an error answer's body, for the attempt record; never the whole of a big body."""
    data = bytearray()
    async for chunk in response.aiter_raw():
        data += chunk
        if len(data) >= ERROR_TEXT_CHARS * 4:
            break
    return _short(bytes(data).decode("utf-8", "replace"))


async def _drain(response: httpx.Response) -> None:
    """Read the rest of a 2xx's (small) body: httpx pools a connection only once its answer was read whole.

    Unread, every delivery would close its connection and the next one open a new one. A body too long
    or broken off costs only that connection: the 2xx is what counts.
    """
    read = 0
    try:
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read > DRAIN_BYTES:
                return
    except httpx.HTTPError:
        pass


async def send(
    client: httpx.AsyncClient, webhook: standardwebhooks.Webhook, message: Message, *, timeout: float,
) -> AttemptResult:
    """POST one message; every way it can go wrong becomes an `AttemptResult`, never an exception."""
    headers = signed_headers(webhook, message.id, message.body, datetime.now(timezone.utc))
    status: int | None = None
    try:
        # One deadline for the whole attempt: httpx's timeouts are per read, so a trickling body would outlive them.
        async with asyncio.timeout(timeout):
            async with client.stream("POST", message.url, content=message.body, headers=headers) as response:
                status = response.status_code
                if 200 <= status < 300:
                    await _drain(response)
                    return AttemptResult(status, None)
                retry_after = parse_retry_after(response.headers.get("retry-after"), now=time.time())
                detail = await _peek(response)
    except (TimeoutError, httpx.TimeoutException):
        if status is not None and 200 <= status < 300:
            return AttemptResult(status, None)  # answered 2xx; only the rest of its body was slow
        return AttemptResult(None, f"timeout after {timeout:g}s")
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        return AttemptResult(None, _short(f"unusable callback URL: {exc}"), permanent=True)
    except httpx.ConnectError as exc:
        return AttemptResult(None, _short(f"connection failed: {exc}" if str(exc) else "connection failed"))
    except httpx.HTTPError as exc:
        return AttemptResult(None, _short(f"{type(exc).__name__}: {exc}"))
    return AttemptResult(status, f"HTTP {status}" + (f": {detail}" if detail else ""), retry_after)


# -- the worker -------------------------------------------------------------------------------


class _Deliverer:
    """Holds the claimed messages of one worker; each is sent by its own task under two bounds."""

    def __init__(self, runtime: Runtime, client: httpx.AsyncClient, clock: Callable[[], float]) -> None:
        self.runtime = runtime
        self.client = client
        self.clock = clock
        self.webhook = standardwebhooks.Webhook(runtime.secrets.signing_secret)
        self.timeout = runtime.settings.callback_timeout_s
        # Held messages may queue behind their destination's slots: keep them leased meanwhile.
        self.lease_s = self.timeout * (PER_HOST_HELD // PER_HOST_CONCURRENCY + 1) + LEASE_MARGIN_S
        self.held: dict[int, asyncio.Task[None]] = {}
        self.held_per_host: dict[str, int] = {}
        self.host_slots: dict[str, asyncio.Semaphore] = {}
        self.slots = asyncio.Semaphore(MAX_CONCURRENCY)
        self.freed = asyncio.Event()

    async def run(self) -> None:
        store = self.runtime.store
        await store.release_leases()  # claims of a previous (crashed) run
        try:
            while True:
                woken = self.runtime.notifier.event(OUTBOX)  # taken before reading: no wake-up slips by
                self.freed.clear()
                try:
                    if await self._claim_and_dispatch():
                        continue  # a full batch: more may be due
                    wait = await self._seconds_until_due()
                except Exception:
                    log.exception("delivery loop failed; retrying in 1s")
                    await asyncio.sleep(1.0)
                    continue
                await _wait_any((woken, self.freed), timeout=wait)
        finally:
            tasks = list(self.held.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _claim_and_dispatch(self) -> bool:
        """Claim what is due and start it; True if the claim came back full."""
        room = MAX_HELD - len(self.held)
        if room <= 0:
            return False
        messages = await self.runtime.store.claim_due_messages(limit=room, lease_s=self.lease_s)
        postponed: list[int] = []
        for message in messages:
            if message.seq in self.held:
                continue  # still ours (its lease ran out while it queued); the claim renewed it
            host = destination(message.url)
            if self.held_per_host.get(host, 0) >= PER_HOST_HELD:
                postponed.append(message.seq)
                continue
            self.held_per_host[host] = self.held_per_host.get(host, 0) + 1
            if host not in self.host_slots:
                self.host_slots[host] = asyncio.Semaphore(PER_HOST_CONCURRENCY)
            self.held[message.seq] = asyncio.create_task(self._deliver(message, host), name=f"deliver {message.id}")
        if postponed:
            await self.runtime.store.postpone_messages(postponed, until=self.clock() + POSTPONE_S)
        return len(messages) >= room

    async def _seconds_until_due(self) -> float | None:
        if len(self.held) >= MAX_HELD:
            return MAX_IDLE_S  # full: a finished message (`freed`) is what lets us go on
        due = await self.runtime.store.next_message_due_at()
        if due is None:
            return MAX_IDLE_S
        return min(MAX_IDLE_S, max(0.0, due - self.clock()))

    async def _deliver(self, message: Message, host: str) -> None:
        try:
            async with self.host_slots[host], self.slots:
                result = await send(self.client, self.webhook, message, timeout=self.timeout)
            decision = decide(
                status_code=result.status_code, attempts_made=message.attempts + 1,
                schedule=self.runtime.settings.retry_schedule, retry_after=result.retry_after,
                permanent=result.permanent,
            )
            next_at = self.clock() + decision.delay if decision.delay is not None else None
            await self.runtime.store.record_attempt(
                message, status_code=result.status_code, error=result.error,
                outcome=decision.outcome, next_attempt_at=next_at,
            )
            self.runtime.metrics.deliveries.labels(decision.outcome).inc()
            if decision.delay is not None:
                self.freed.set()  # a retry is due at a time the loop's wait does not know of yet
            level = logging.INFO if decision.outcome == "delivered" else logging.WARNING
            log.log(
                level, "callback %s for job %s to %s: attempt %d %s (%s)%s",
                message.id, message.job_id, host, message.attempts + 1, decision.outcome,
                result.error or result.status_code,
                f", next in {decision.delay:.2f}s" if decision.delay is not None else "",
                extra={"job_id": message.job_id},
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            # The message stays pending and leased: it is tried again once the lease runs out.
            log.exception("callback %s for job %s: could not record the attempt", message.id, message.job_id)
        finally:
            self._release(message.seq, host)

    def _release(self, seq: int, host: str) -> None:
        if len(self.held) >= MAX_HELD:
            self.freed.set()  # the loop waits for room to claim more (new messages wake it otherwise)
        self.held.pop(seq, None)
        left = self.held_per_host.get(host, 1) - 1
        if left <= 0:
            self.held_per_host.pop(host, None)
            self.host_slots.pop(host, None)
        else:
            self.held_per_host[host] = left


async def _wait_any(events: Sequence[asyncio.Event], *, timeout: float | None) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def run_delivery(runtime: Runtime) -> None:
    """The delivery worker: runs until cancelled at shutdown; pending messages stay in the store."""
    timeout = runtime.settings.callback_timeout_s
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout), follow_redirects=False,
        limits=httpx.Limits(max_connections=MAX_CONCURRENCY, max_keepalive_connections=16),
    )
    try:
        await _Deliverer(runtime, client, runtime.store.clock).run()
    finally:
        await client.aclose()
