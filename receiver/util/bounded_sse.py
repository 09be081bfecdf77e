"""Server-sent events read with bounds: httpx-sse's `aiter_sse` buffers a line, and an event, without limit
(a never-ending `data:` line took 400 MiB). Same decoding (httpx-sse's line splitting and SSEDecoder),
but a line or an event's data over its cap ends the reading with `Oversized`, keeping only its start."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator

import httpx
from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from receiver.errors import ReceiverError


class Oversized(ReceiverError):
    """A line or an event over its cap; `kept` is its start, `event` the event's type and `event_id` its id
    if they came before the excess."""

    def __init__(self, message: str, kept: bytes, event: str, event_id: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.kept = kept
        self.event = event
        self.event_id = event_id


class BoundedSSE:
    """Incremental SSE decoding of raw bytes (invalid UTF-8 becomes U+FFFD), with caps in characters."""

    def __init__(self, *, max_line: int, max_event: int, keep: int) -> None:
        self.max_line, self.max_event, self.keep = max_line, max_event, keep
        self._text = codecs.getincrementaldecoder("utf-8")("replace")
        self._lines = SSELineDecoder()
        self._events = SSEDecoder()
        self._event = ""
        self._id = ""  # the current event's own `id:` field
        self._data: list[str] = []  # the current event's data lines, counted against max_event
        self._data_chars = 0

    def feed(self, chunk: bytes, *, final: bool = False) -> list[ServerSentEvent]:
        text = self._text.decode(chunk, final=final)
        lines = self._lines.decode(text) if text else []
        if final:
            lines += self._lines.flush()
        pending = sum(map(len, self._lines.buffer))
        if pending > self.max_line:
            start = "".join(self._lines.buffer)[: self.keep]
            raise Oversized(
                f"an event-stream line exceeds {self.max_line} characters", start.encode(), self._event, self._id
            )
        return [sse for sse in map(self._line, lines) if sse is not None]

    def _line(self, line: str) -> ServerSentEvent | None:
        if len(line) > self.max_line:
            raise Oversized(
                f"an event-stream line exceeds {self.max_line} characters",
                line[: self.keep].encode(),
                self._event,
                self._id,
            )
        field, _, value = line.partition(":")
        if field == "event":
            self._event = value.removeprefix(" ")
        elif field == "id":
            self._id = value.removeprefix(" ")
        elif field == "data":
            self._data.append(value.removeprefix(" "))
            self._data_chars += len(value)
            if self._data_chars > self.max_event:
                start = "\n".join(self._data)[: self.keep]
                raise Oversized(
                    f"an event's data exceeds {self.max_event} characters", start.encode(), self._event, self._id
                )
        sse = self._events.decode(line)
        if not line:
            self._event, self._id, self._data, self._data_chars = "", "", [], 0
        return sse


async def aiter_bounded_sse(
    response: httpx.Response, *, max_line: int, max_event: int, keep: int
) -> AsyncIterator[ServerSentEvent]:
    """The events of `response`'s body, read as raw bytes; raises Oversized past a cap."""
    decoder = BoundedSSE(max_line=max_line, max_event=max_event, keep=keep)
    async for chunk in response.aiter_bytes():
        for sse in decoder.feed(chunk):
            yield sse
    for sse in decoder.feed(b"", final=True):
        yield sse
