"""`GET /v1/events`: terminal jobs as Server-Sent Events, resumable with `Last-Event-ID`, or replayed from a
completion time with `?since=`."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from receiver.errors import StoreError
from receiver.notify import EVENTS, wait_for
from receiver.runtime import Runtime
from receiver.store.base import Event
from receiver.web.http import error
from receiver.web.validation import invalid, parse_seq, query_time

log = logging.getLogger("receiver.api.events")

KEEPALIVE_S = 15.0
BATCH = 500
# A job's event is written when it completes, or later (once its outputs are mirrored), so a replay by
# completion time starts at the first event written at `since`; this margin covers replicas' clocks
# that disagree by up to this much.
CLOCK_SKEW_S = 60.0


def format_event(event: Event) -> str:
    return f"id: {event.seq}\nevent: {event.type}\ndata: {event.data}\n\n"


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw is None or raw.strip() == "":
        return None
    value = parse_seq(raw.strip())
    if value is None:
        raise invalid("last_event_id", "must be a non-negative integer, an id this stream sent")
    return value


def completed_from(since: float) -> float:
    """The lowest stored completion time (epoch seconds, fractional) whose ISO form, whole seconds as jobs
    show it, is at or after `since`: so an event shown to have completed before `since` is never replayed."""
    return float(math.ceil(since))


async def _stream(runtime: Runtime, after: int, since: float | None = None) -> AsyncIterator[str]:
    """The events after id `after` (with `since`: only those of jobs completed at or after it), then live.
    A store that goes away ends the stream: the client resumes with Last-Event-ID, as after any drop."""
    try:
        async for chunk in _events(runtime, after, since):
            yield chunk
    except StoreError as exc:  # a database restart, say: an ended stream, not a server error
        log.debug("event stream ended: %s", exc)


async def _events(runtime: Runtime, after: int, since: float | None) -> AsyncIterator[str]:
    yield ": connected\n\n"
    seq = after
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    completed = None if since is None else completed_from(since)
    # With replicas, other replicas' commits arrive by NOTIFY; re-reading every backstop_s covers a missed one.
    wait_s = min(KEEPALIVE_S, runtime.store.backstop_s or KEEPALIVE_S)
    while not runtime.stopping.is_set():
        woken = runtime.notifier.event(EVENTS)  # taken before reading: no event slips between
        events = await runtime.store.events_after(seq, BATCH, completed_from=completed)
        for event in events:
            yield format_event(event)
            seq = event.seq
        if events:
            quiet_since = loop.time()
            continue  # a page (cut at BATCH or at the store's byte budget): read on until none is left
        # Shutdown sets `stopping` and publishes EVENTS, so this wait ends at once then.
        if not await wait_for(woken, wait_s) and loop.time() - quiet_since >= KEEPALIVE_S:
            yield ": keep-alive\n\n"
            quiet_since = loop.time()


async def stream_events(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    after = _last_event_id(request)
    since = query_time(request.query_params, "since")
    newest = await runtime.store.last_event_seq()
    if after is not None and after > newest:
        # The store was replaced (or the id came from another receiver): streaming from here would
        # silently skip every event up to `after` once the new store reaches it.
        return error(
            409,
            "last_event_id_ahead",
            f"Last-Event-ID {after} is above the newest event this receiver has ({newest})",
            last_event_id=newest,
        )
    if since is None:
        start = newest if after is None else after  # without Last-Event-ID: from now on
    else:
        # Every event before the first one written at `since` is of a job completed before it.
        first = await runtime.store.first_event_seq(completed_from(since) - CLOCK_SKEW_S)
        replay_after = newest if first is None else first - 1
        start = replay_after if after is None else max(after, replay_after)  # a resumed stream goes on
    return StreamingResponse(
        _stream(runtime, start, since),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
