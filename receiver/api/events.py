"""`GET /v1/events`: terminal jobs as Server-Sent Events, resumable with `Last-Event-ID`."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from receiver.web.http import error
from receiver.notify import EVENTS, wait_for
from receiver.runtime import Runtime
from receiver.store.base import Event
from receiver.web.validation import invalid, parse_seq

KEEPALIVE_S = 15.0
BATCH = 500


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


async def _stream(runtime: Runtime, after: int) -> AsyncIterator[str]:
    yield ": connected\n\n"
    seq = after
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    # With replicas, other replicas' commits arrive by NOTIFY; re-reading every backstop_s covers a missed one.
    wait_s = min(KEEPALIVE_S, runtime.store.backstop_s or KEEPALIVE_S)
    while not runtime.stopping.is_set():
        woken = runtime.notifier.event(EVENTS)  # taken before reading: no event slips between
        events = await runtime.store.events_after(seq, BATCH)
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
    newest = await runtime.store.last_event_seq()
    if after is None:
        after = newest  # without Last-Event-ID: from now on
    elif after > newest:
        # The store was replaced (or the id came from another receiver): streaming from here would
        # silently skip every event up to `after` once the new store reaches it.
        return error(409, "last_event_id_ahead",
                     f"Last-Event-ID {after} is above the newest event this receiver has ({newest})",
                     last_event_id=newest)
    return StreamingResponse(
        _stream(runtime, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
