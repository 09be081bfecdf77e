"""One publishing loop per sink: read the events after the sink's stored position in batches, publish a
batch pipelined, advance the position to the last event acknowledged in a row, repeat; wake on new
events as `/v1/events` does, with a backstop. Each sink runs under its own lease (receiver.leader), so
one replica publishes to it at a time, and in its own task, so a broker that is down or slow delays
nothing but its own sink.

Publishing shares the process with the request path and yields to it: while the event loop is busy with
other work, a sink waits (a backlog builds), publishing one small batch at least every SINKS.defer_max_s, and
drains the backlog in large batches once the loop has room again. Order and completeness hold; lag
under a saturating load is the price."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from receiver import logs
from receiver.leader import lead
from receiver.models import iso_time
from receiver.notify import EVENTS
from receiver.runtime import Runtime
from receiver.sinks.amqp import AmqpBroker
from receiver.sinks.base import Broker
from receiver.sinks.feed import Feed
from receiver.sinks.nats import NatsBroker
from receiver.sinks.redis_streams import RedisBroker
from receiver.sinks.urls import SinkSpec, credentials
from receiver.store.base import SinkRow
from receiver.tuning import SINKS
from receiver.util.aio import wait_any
from receiver.util.backoff import exponential

log = logging.getLogger("receiver.sinks")

BATCH = 500  # while the loop is busy with requests
BATCH_MAX = 1000  # while it has room: a backlog drains in fewer, larger batches
BUSY_PASSES = 5


def sink_key(name: str) -> str:
    """Notifier key that wakes a sink's loop at once (pause, resume, rewind on this replica)."""
    return f"sink:{name}"


def make_broker(spec: SinkSpec) -> Broker:
    if spec.kind == "nats":
        return NatsBroker(spec)
    if spec.kind == "redis":
        return RedisBroker(spec)
    return AmqpBroker(spec)


def describe(exc: BaseException, spec: SinkSpec) -> str:
    """An error as text fit for logs and `/v1/sinks`: never the password of the sink's URL."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return hide_secrets(text, spec)[:500]


def passwords(spec: SinkSpec) -> tuple[str, ...]:
    """The URL's secrets as written and decoded (a client library may show either)."""
    return credentials(spec.url)


def hide_secrets(text: str, spec: SinkSpec) -> str:
    for secret in passwords(spec):
        text = text.replace(secret, "***")
    return text


def state_of(row: SinkRow) -> str:
    """What `/v1/sinks` says of a sink, from its stored row (the same on every replica)."""
    if row.paused:
        return "paused"
    return "failing" if row.last_error else "ok"


async def _loop_busy() -> bool:
    """Whether other work (requests) fills the event loop: what the thread spends on it while we yield a few
    times (CPU time, not wall time: on a shared machine the process being descheduled is not the loop being
    busy; a few passes, not one: under load a single pass may be short). Read twice, not around each pass: the
    thread's CPU clock is a system call, and our own share of the passes is a few microseconds."""
    cpu = time.thread_time()
    for _ in range(BUSY_PASSES):
        await asyncio.sleep(0)
    return time.thread_time() - cpu >= SINKS.busy_cpu_s


async def _room(runtime: Runtime) -> int:
    """Wait, up to SINKS.defer_max_s, for the loop to have room; how many events to publish next."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    step = (
        SINKS.defer_first_s
    )  # a moment of work (a GC pass, a burst) costs a new event little; a steady load is checked less often
    while await _loop_busy():
        if loop.time() - start >= SINKS.defer_max_s or runtime.stopping.is_set():
            return BATCH
        await asyncio.sleep(step)
        step = min(step * 2, SINKS.defer_step_s)
    return BATCH_MAX


async def publish_loop(
    runtime: Runtime,
    spec: SinkSpec,
    *,
    make: Callable[[SinkSpec], Broker] = make_broker,
    feed: Feed | None = None,
) -> None:
    """Publish `spec`'s backlog and then every new event, for as long as this replica holds its lease.

    The position is kept here while publishing and written to the store at most every SINKS.save_every_s (and
    whenever publishing pauses), so a busy sink adds no write per batch to the store's writer; a kill
    loses at most that much of the position, and what follows it is published again with the same ids."""
    store, notifier, name = runtime.store, runtime.notifier, spec.name
    feed = feed or Feed(store, runtime.settings.base_public_url)
    published = runtime.metrics.sink_published.labels(name)
    backstop = store.backstop_s or SINKS.idle_backstop_s
    loop = asyncio.get_running_loop()
    broker = make(spec)
    connected = False
    failures = 0
    stopped_epoch: int | None = None  # a message refused for good stops the sink until a rewind or resume
    row: SinkRow | None = None
    read_at = saved_at = 0.0
    position = 0  # acknowledged by the broker; `row.position` is what the store has
    woken = notifier.event(sink_key(name))

    async def save() -> None:
        nonlocal row, saved_at
        saved_at = loop.time()
        if row is not None and position > row.position:
            if await store.advance_sink(name, epoch=row.epoch, position=position):
                row = replace(row, position=position, last_error=None)
            else:
                row = None  # a rewind or pause came in between: read it again

    async def failed(error: str) -> None:
        nonlocal connected, failures, row
        await broker.close()
        connected = False
        await save()
        if row is not None and row.last_error != error:
            await store.set_sink_error(name, epoch=row.epoch, error=error)
            row = replace(row, last_error=error)
        if failures == 0:
            log.warning("sink %s failing: %s (retrying with backoff)", name, error)
        delay = exponential(failures, base=SINKS.retry_base_s, cap=SINKS.retry_cap_s)
        failures += 1
        await wait_any([woken, runtime.stopping], delay)

    try:
        while not runtime.stopping.is_set():
            if row is None or woken.is_set() or loop.time() - read_at >= backstop:
                if row is not None:
                    await save()
                woken = notifier.event(sink_key(name))  # taken before reading: no wake-up slips between
                fresh = (await store.sink_rows([name]))[name]
                read_at = loop.time()
                if row is None or fresh.epoch != row.epoch:
                    position = fresh.position  # first read, or rewound/resumed/paused: the store's word
                row = fresh
            if row.paused or stopped_epoch == row.epoch:
                if connected:
                    await broker.close()
                    connected = False
                await wait_any([woken, runtime.stopping], backstop)
                continue
            stopped_epoch = None
            if not connected:
                try:
                    await asyncio.wait_for(broker.connect(), SINKS.connect_timeout_s + SINKS.ack_timeout_s)
                except Exception as exc:  # down, refusing, slow, bad credentials: all retried
                    await failed(describe(exc, spec))
                    continue
                connected = True
                if row.last_error:
                    await store.set_sink_error(name, epoch=row.epoch, error=None)
                    row = replace(row, last_error=None)
                    log.info("sink %s is back", name)
            new_events = notifier.event(EVENTS)
            limit = await _room(runtime)
            batch = await feed.after(position, limit)
            if not batch:
                unsaved = position > row.position
                if unsaved and loop.time() - saved_at >= SINKS.save_every_s:
                    await save()
                    unsaved = False
                wait_s = SINKS.save_every_s - (loop.time() - saved_at) if unsaved else backstop
                await wait_any([woken, new_events, runtime.stopping], max(0.0, min(wait_s, backstop)))
                if new_events.is_set() and not woken.is_set():
                    # Let the commits that follow this one in: under load one read and one batch carry many
                    # events instead of each commit's few (the read, the wake-up and the batch cost the same).
                    await asyncio.sleep(SINKS.linger_s)
                continue
            try:
                result = await broker.publish(batch)
            except Exception as exc:  # what was not acknowledged is published again, with the same ids
                await failed(describe(exc, spec))
                continue
            failures = 0
            if result.acked:
                position = batch[result.acked - 1].event.seq
                published.inc(result.acked)
                if loop.time() - saved_at >= SINKS.save_every_s:
                    await save()
            if result.refused is not None:
                refused = hide_secrets(result.refused, spec)
                log.error("sink %s stopped: %s (rewind or resume it once the cause is fixed)", name, refused)
                await save()
                if row is not None:
                    await store.set_sink_error(name, epoch=row.epoch, error=refused)
                    stopped_epoch = row.epoch
                    row = replace(row, last_error=refused)
    finally:
        await broker.close()
        if row is not None:
            try:
                await asyncio.shield(save())
            except Exception:  # the store is away: the next holder publishes these again
                pass


def sink_worker(spec: SinkSpec, feed: Feed | None = None) -> Callable[[Runtime], Coroutine[Any, Any, None]]:
    """The sink's loop, run by whichever replica holds the lease `sink:<name>`."""

    async def work(runtime: Runtime) -> None:
        await publish_loop(runtime, spec, feed=feed)

    return work


async def run_sinks(runtime: Runtime) -> None:
    """Every configured sink, each under its own lease and in its own task."""
    specs = runtime.settings.sink_specs
    for spec in specs:  # series at 0 from the start, so rate() and alerts see them before the first event
        runtime.metrics.sink_published.labels(spec.name)
    logs.protect(*(secret for spec in specs for secret in passwords(spec)))
    feed = Feed(runtime.store, runtime.settings.base_public_url)  # one read and CloudEvent per event for all the sinks

    async def one(spec: SinkSpec) -> None:
        # Another replica publishes; nothing to do but stand by (its state is in the store).
        await lead(runtime, f"sink:{spec.name}", sink_worker(spec, feed), on_standby=lambda: None)

    await asyncio.gather(*(one(spec) for spec in specs))


async def sinks_listing(runtime: Runtime) -> list[dict[str, Any]]:
    """`GET /v1/sinks`' entries, from the store (any replica answers the same)."""
    specs = runtime.settings.sink_specs
    if not specs:
        return []
    rows = await runtime.store.sink_rows([spec.name for spec in specs])
    newest = await runtime.store.last_event_seq()
    out = []
    for spec in specs:
        row = rows[spec.name]
        out.append(
            {
                "name": spec.name,
                "url": spec.shown,
                "state": state_of(row),
                "last_event_id": row.position,
                "lag": max(0, newest - row.position),
                "last_error": row.last_error,
                "last_published_at": None if row.last_published_at is None else iso_time(row.last_published_at),
            }
        )
    return out


async def refresh_sink_metrics(runtime: Runtime) -> None:
    """`receiver_sink_lag_events` from the store, as `/v1/sinks` says it (the same on every replica)."""
    for entry in await sinks_listing(runtime):
        runtime.metrics.sink_lag.labels(entry["name"]).set(entry["lag"])
