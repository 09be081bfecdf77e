"""The HTTP server: uvicorn with httptools, plus the two bounds uvicorn lacks on what a client sends.

uvicorn limits neither the size of a request head under httptools (a 200 MiB URL was buffered whole,
quadratically) nor the time a client may take to send it: `timeout_keep_alive` only runs between
requests and is reset by every byte, so a client sending one byte a second holds a connection forever.
`BoundedHttpTools` adds, per request: a head of at most `max_head_bytes` (else 431 and close), a head
complete within `head_timeout_s` of its first byte (or of the connection, for the first request), and a
body complete within `body_timeout_s` of its head (else the connection is closed). Nothing applies
while a response is being sent: long polls and event streams are unaffected.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("receiver.web.server")

MAX_HEAD_BYTES = 64 * 1024  # request line and headers together; ours are a few hundred bytes
HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 30.0  # a 1 MiB webhook at 35 KB/s

Phase = Literal["idle", "head", "body"]


def _refusal(status: bytes, code: str, message: str) -> bytes:
    body = json.dumps({"error": code, "message": message}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size cap on request heads and deadlines on reading requests."""

    max_head_bytes = MAX_HEAD_BYTES
    head_timeout_s = HEAD_TIMEOUT_S
    body_timeout_s = BODY_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Phase = "idle"
        self._head_bytes = 0
        self._deadline_at: float | None = None  # loop time
        self._timer: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float) -> None:
        self._deadline_at = self.loop.time() + seconds
        if self._timer is not None and self._timer.when() <= self._deadline_at:
            return  # it fires first, and moves itself on to the new deadline
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(self._deadline_at, self._check)

    def _disarm(self) -> None:
        self._deadline_at = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if self._deadline_at is None or self.transport.is_closing():
            return
        if self.loop.time() < self._deadline_at:
            self._timer = self.loop.call_at(self._deadline_at, self._check)
            return
        self._expired()

    def _expired(self) -> None:
        log.debug("dropping %s: request %s not received in time", self.client, self._phase)
        if self._phase == "head":
            self.transport.write(
                _refusal(
                    b"408 Request Timeout",
                    "request_timeout",
                    f"request head not received within {self.head_timeout_s:g} s",
                )
            )
        # In the body, the app is reading: it sees a disconnect. Idle: a connection that never sent a byte.
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.head_timeout_s)  # a connection must start its first request promptly too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._phase != "head" or self.transport.is_closing():
            return
        # The whole chunk counts: it may also hold the end of the request before (pipelining), which
        # only makes the cap apply up to one read (256 KiB) sooner.
        self._head_bytes += len(data)
        if self._head_bytes > self.max_head_bytes:
            self._disarm()
            self.transport.write(
                _refusal(
                    b"431 Request Header Fields Too Large",
                    "headers_too_large",
                    f"request line and headers exceed {self.max_head_bytes} bytes",
                )
            )
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase, self._head_bytes = "head", 0
        if self._deadline_at is None:  # else the connection's first request: its deadline runs from the connect
            self._arm(self.head_timeout_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._phase = "body"
        self._arm(self.body_timeout_s)  # later than the head's: no new timer per request

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = "idle"
        self._disarm()


def bounded_protocol(
    *,
    max_head_bytes: int = MAX_HEAD_BYTES,
    head_timeout_s: float = HEAD_TIMEOUT_S,
    body_timeout_s: float = BODY_TIMEOUT_S,
) -> type[BoundedHttpTools]:
    """`BoundedHttpTools` with these bounds (uvicorn instantiates the class it is given per connection)."""
    bounds = {"max_head_bytes": max_head_bytes, "head_timeout_s": head_timeout_s, "body_timeout_s": body_timeout_s}
    return type("BoundedHttpTools", (BoundedHttpTools,), bounds)


def server_config(
    app: Any,
    *,
    max_head_bytes: int = MAX_HEAD_BYTES,
    head_timeout_s: float = HEAD_TIMEOUT_S,
    body_timeout_s: float = BODY_TIMEOUT_S,
    **options: Any,
) -> uvicorn.Config:
    """The uvicorn configuration of `receiver serve`, which the tests' servers share; `options` are
    uvicorn's own (host, port, log_config, …)."""
    protocol = bounded_protocol(
        max_head_bytes=max_head_bytes, head_timeout_s=head_timeout_s, body_timeout_s=body_timeout_s
    )
    options.setdefault("server_header", False)
    return uvicorn.Config(app, http=protocol, **options)
