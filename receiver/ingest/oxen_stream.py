"""Oxen's event stream: one long-lived SSE subscription turned into completions, plus the catch-up poll.

Oxen keeps no history and sends no `id:` lines: whatever fires while we are disconnected is lost.
So once a stream is open (never before: a completion is then either on the stream or already visible
to a poll), every pending Oxen job is polled at `GET /api/ai/queue/{generation_id}`, through the
reconciler's own `polling.poll_job`. Cancelled generations never appear on the stream at all; polling
pending jobs older than `RECEIVER_RECONCILE_AFTER_S` is the reconciler's job.

Events are ingested without waiting for each one's COMMIT before reading the next (`_consume`): a
burst is then group-committed in a few transactions instead of one per event. Each event is still
a receipt kept in the transaction that applies it. An event read but not yet committed when the
process dies is lost like one fired while disconnected, and found the same way: by the catch-up
poll after the restart (for a job the store knows as pending).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse

from receiver.errors import InvalidPayload, NotConfigured, ReceiverError, StoreError
from receiver.ingest.inbound import ingest, parse
from receiver.ingest.polling import poll_job
from receiver.models import ApplyResult, Job, Receipt
from receiver.outage import Outage
from receiver.providers import oxen
from receiver.runtime import Runtime
from receiver.tuning import StreamTuning
from receiver.util import backoff
from receiver.util.bounded_sse import Oversized, aiter_bounded_sse

log = logging.getLogger("receiver.oxen")


class StreamFailure(ReceiverError):
    """Why a connection ended; `unauthorized` means Oxen refused the API key."""

    def __init__(self, message: str, *, unauthorized: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.unauthorized = unauthorized
        self.retry_after = retry_after
        self.store = False  # the store failed, not the connection to Oxen


class Reconnects:
    """Delays between connection attempts: exponential with jitter, capped, reset by a healthy connection."""

    def __init__(self, tuning: StreamTuning, rand: Callable[[], float] = random.random) -> None:
        self.tuning = tuning
        self.rand = rand
        self.attempt = 0

    def connected_for(self, seconds: float) -> None:
        if seconds >= self.tuning.healthy_after_s:
            self.attempt = 0

    def next_delay(self, failure: StreamFailure) -> float:
        t = self.tuning
        base, cap = (
            (t.unauthorized_base_s, t.unauthorized_cap_s)
            if failure.unauthorized
            else (t.backoff_base_s, t.backoff_cap_s)
        )
        delay = backoff.exponential(self.attempt, base=base, cap=cap, rand=self.rand)
        self.attempt += 1
        if failure.retry_after is not None:
            delay = max(delay, min(failure.retry_after, cap))
        return delay


def describe(exc: BaseException) -> str:
    """A short, secret-free account of a transport error for logs and /readyz."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception of a (nested) group, to be handled like the same error raised alone."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _auth_headers(runtime: Runtime) -> dict[str, str]:
    key = runtime.settings.api_key("oxen")
    if key is None:
        raise NotConfigured("RECEIVER_OXEN_API_KEY")
    return oxen.stream_headers(key.get_secret_value())


async def poll_pending_oxen_jobs(runtime: Runtime, tuning: StreamTuning | None = None) -> tuple[int, int]:
    """Poll every pending Oxen job (bounded concurrency; each poll is the reconciler's `poll_job`);
    returns (polled, finished)."""
    tuning = tuning or runtime.stream_tuning
    jobs = await runtime.store.pending_jobs("oxen")
    limit = asyncio.Semaphore(max(1, tuning.poll_concurrency))

    async def one(job: Job) -> bool:
        async with limit:
            return (await poll_job(runtime, job, timeout=tuning.poll_timeout_s)).finished

    finished = await asyncio.gather(*(one(job) for job in jobs))
    return len(jobs), sum(finished)


class OxenConsumer:
    """The connect loop and the catch-up poller of one running app."""

    def __init__(self, runtime: Runtime, tuning: StreamTuning, rand: Callable[[], float] = random.random) -> None:
        self.runtime = runtime
        self.tuning = tuning
        self.reconnects = Reconnects(tuning, rand)
        self.catch_up_wanted = asyncio.Event()
        self.url = runtime.settings.base_url("oxen") + oxen.STREAM_PATH
        self.opened_at: float | None = None  # loop time the current connection opened
        self.store_outage = Outage(log, "Oxen consumer")  # its use of the store: ingests and catch-up polls

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._catch_up_loop(), name="oxen-catch-up")
                tasks.create_task(self._connect_loop(), name="oxen-stream")
        finally:
            self.runtime.metrics.stream_connected.set(0)

    async def _connect_loop(self) -> None:
        status, metrics = self.runtime.oxen, self.runtime.metrics
        loop = asyncio.get_running_loop()
        while True:
            if status.state != "unauthorized":  # stays visible until a connection is accepted
                status.state = "connecting"
            metrics.stream_reconnects.inc()
            self.opened_at = None
            try:
                await self._stream_once()
                failure = StreamFailure("Oxen closed the stream")
            except Exception as exc:  # deliberate: whatever ended the connection, the loop reconnects
                failure = self._failure(exc)
            finally:
                metrics.stream_connected.set(0)
            if self.opened_at is not None:
                self.reconnects.connected_for(loop.time() - self.opened_at)
            delay = self.reconnects.next_delay(failure)
            status.last_error = failure.message
            if failure.unauthorized:
                status.state = "unauthorized"
                log.error(
                    "Oxen refused RECEIVER_OXEN_API_KEY (%s): no Oxen results arrive until the key is fixed; "
                    "retrying in %.1f s",
                    failure.message,
                    delay,
                )
            else:
                status.state = "connecting"
                # While the store is away each reconnect ends the same way: its Outage said so once.
                level = logging.DEBUG if failure.store and self.store_outage.down else logging.WARNING
                log.log(level, "Oxen stream down (%s); reconnecting in %.1f s", failure.message, delay)
            await asyncio.sleep(delay)

    def _failure(self, exc: Exception) -> StreamFailure:
        if isinstance(exc, StreamFailure):
            return exc
        if isinstance(exc, httpx.ReadTimeout):
            return StreamFailure(f"no data from Oxen for {self.tuning.stall_timeout_s:g} s: stalled connection")
        if isinstance(exc, httpx.HTTPError):
            return StreamFailure(f"connection to Oxen failed: {describe(exc)}")
        # A store error while ingesting, say: reconnecting makes the catch-up poll recover what it missed.
        if isinstance(exc, StoreError):
            self.store_outage.failed(exc)
            failure = StreamFailure(f"consumer error: {describe(exc)}")
            failure.store = True
            return failure
        log.exception("Oxen consumer error")
        return StreamFailure(f"consumer error: {describe(exc)}")

    async def _stream_once(self) -> None:
        """One connection, until it ends; raises StreamFailure (or an httpx error) for what went wrong."""
        timeout = httpx.Timeout(self.tuning.connect_timeout_s, read=self.tuning.stall_timeout_s)
        async with aconnect_sse(
            self.runtime.http, "GET", self.url, headers=_auth_headers(self.runtime), timeout=timeout
        ) as source:
            response = source.response
            if response.status_code in (401, 403):
                raise StreamFailure(f"HTTP {response.status_code} from GET {oxen.STREAM_PATH}", unauthorized=True)
            if response.status_code != 200:
                retry_after = backoff.parse_retry_after(response.headers.get("retry-after"), now=time.time())
                raise StreamFailure(f"HTTP {response.status_code} from GET {oxen.STREAM_PATH}", retry_after=retry_after)
            content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if content_type != "text/event-stream":
                raise StreamFailure(
                    f"GET {oxen.STREAM_PATH} answered {content_type or 'no content type'!r}, not an event stream"
                )
            self._opened()
            # The read timeout is the stall detector: keep-alive comments are bytes too, so it only
            # fires when nothing at all arrived for stall_timeout_s.
            try:
                await self._consume(source)
            except Oversized as exc:
                await self._keep_oversized(exc)
                raise StreamFailure(f"{exc.message}: reconnecting") from None

    async def _keep_oversized(self, exc: Oversized) -> None:
        """An oversized line or event, kept (its start only) as an invalid receipt."""
        receipt = Receipt(
            provider="oxen", source="stream", body=exc.kept, headers={"sse-event": exc.event, "truncated": "true"}
        )

        await ingest(
            self.runtime, receipt, InvalidPayload(f"{exc.message} (only the first {len(exc.kept)} bytes kept)")
        )

    async def _consume(self, source: EventSource) -> None:
        """Ingest each completion without waiting for the previous ones' COMMIT, at most `in_flight` at once.

        The first failure, of the stream or of an ingest, ends the connection. A store write, once queued,
        is committed even if its waiter is cancelled by that.
        """
        window = asyncio.Semaphore(self.tuning.in_flight)
        t = self.tuning
        events = aiter_bounded_sse(
            source.response, max_line=t.max_line_chars, max_event=t.max_event_chars, keep=t.kept_chars
        )
        try:
            async with asyncio.TaskGroup() as ingests:
                async for sse in events:
                    work = self._ingest(sse)
                    if work is not None:
                        await window.acquire()
                        ingests.create_task(work).add_done_callback(lambda _: window.release())
        except BaseExceptionGroup as group:
            raise _first(group) from None

    def _opened(self) -> None:
        self.opened_at = asyncio.get_running_loop().time()
        status = self.runtime.oxen
        if status.state == "unauthorized":
            log.warning("Oxen accepts RECEIVER_OXEN_API_KEY again")
        status.state, status.last_error = "connected", None
        self.runtime.metrics.stream_connected.set(1)
        log.info("Oxen stream connected (%s)", self.url)
        self.catch_up_wanted.set()

    def _ingest(self, sse: ServerSentEvent) -> Coroutine[Any, Any, ApplyResult] | None:
        """The ingest of a completion event (to be awaited), or None for an event to ignore."""
        if sse.event != oxen.COMPLETED_EVENT:
            log.debug("Oxen event %r ignored", sse.event)
            return None
        # The stream is decoded as UTF-8 text (invalid bytes become U+FFFD); the receipt keeps that text.
        data = sse.data.encode("utf-8")
        receipt = Receipt(provider="oxen", source="stream", body=data, headers={"sse-event": sse.event})
        return ingest(self.runtime, receipt, parse(receipt, lambda: [oxen.parse_stream_event(data)]))

    async def _catch_up_loop(self) -> None:
        """After each (re)connect, poll every pending job; connects during a round ask for another round."""
        while True:
            await self.catch_up_wanted.wait()
            self.catch_up_wanted.clear()
            try:
                polled, finished = await poll_pending_oxen_jobs(self.runtime, self.tuning)
            except (
                Exception
            ) as exc:  # deliberate: the store away, or a bug, must not end the consumer (next connect retries)
                self.store_outage.failed(exc)
                continue
            self.store_outage.ok()
            if polled:
                log.info("caught up after connecting: polled %d pending Oxen job(s), %d finished", polled, finished)


async def run_oxen_consumer(
    runtime: Runtime, *, tuning: StreamTuning | None = None, rand: Callable[[], float] = random.random
) -> None:
    """The background worker: runs until cancelled (the app's lifespan does that at shutdown)."""
    if runtime.settings.api_key("oxen") is None:
        return
    await OxenConsumer(runtime, tuning or runtime.stream_tuning, rand).run()
