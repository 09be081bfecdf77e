"""A bound on the line length of an SSE response, so a hostile or broken source cannot fill memory.

httpx-sse buffers a line until its end arrives, however long it gets. `limit_lines` wraps the raw
byte stream of an httpx response before it is read, and ends the read with `LineTooLong` as soon as
one line passes the limit.
"""

from __future__ import annotations

from typing import AsyncIterator

import httpx

from receiver.errors import ReceiverError


class LineTooLong(ReceiverError):
    """A line of the stream over its cap."""


class _BoundedLines(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, max_line_bytes: int) -> None:
        self._inner = inner
        self._max = max_line_bytes
        self._run = 0  # bytes since the last line end

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._run = line_run(self._run, chunk)
            if self._run > self._max:
                raise LineTooLong(f"a line of the event stream is longer than {self._max} bytes")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def line_run(run: int, chunk: bytes) -> int:
    """Bytes since the last CR or LF, after `chunk` followed a run of `run` bytes."""
    end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
    return run + len(chunk) if end < 0 else len(chunk) - end - 1


def limit_lines(response: httpx.Response, max_line_bytes: int) -> None:
    """Make reading `response` fail with LineTooLong on a line over `max_line_bytes` (before decoding).

    Ask the source for `Accept-Encoding: identity`: the bound counts the bytes as they arrive.
    """
    if not isinstance(response.stream, httpx.AsyncByteStream):
        raise TypeError("limit_lines needs a streaming response of an AsyncClient")
    response.stream = _BoundedLines(response.stream, max_line_bytes)
