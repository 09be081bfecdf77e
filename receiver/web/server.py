"""The HTTP server: uvicorn with httptools, plus the two bounds uvicorn lacks on what a client sends, and two
savings on every response.

uvicorn limits neither the size of a request head under httptools (a 200 MiB URL was buffered whole,
quadratically) nor the time a client may take to send it: `timeout_keep_alive` only runs between
requests and is reset by every byte, so a client sending one byte a second holds a connection forever.
`BoundedHttpTools` adds, per request: a head of at most `max_head_bytes` (else 431 and close), a head
complete within `head_timeout_s` of its first byte (or of the connection, for the first request), and a
body complete within `body_timeout_s` of its head (else the connection is closed). Nothing applies
while a response is being sent: long polls and event streams are unaffected. One loop timer per
connection keeps these deadlines: it is left running between requests and, when it fires, finds its
deadline moved on (it waits again) or gone (it stops), so a request costs no timer of its own.

The savings (`_ResponseWriter`): a response's head goes out with the first bytes of its body, in one write where
uvicorn makes two (a system call and a wake-up of the client fewer); and an access line that the
access-log policy (`receiver.logs.AccessLines`) drops for a success, such as every accepted webhook by
default, is not made at all, where uvicorn builds its arguments before the policy drops it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import weakref
from typing import Any, Literal

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from receiver.logs import AccessLines
from receiver.tuning import HTTP

log = logging.getLogger("receiver.web.server")

MAX_HEAD_BYTES = 64 * 1024  # request line and headers together; ours are a few hundred bytes
ACCESS_LINE = '%s - "%s %s HTTP/%s" %d'  # uvicorn's, with its arguments (receiver.logs.AccessLines reads them)

Phase = Literal["idle", "head", "body"]


def _refusal(status: bytes, code: str, message: str) -> bytes:
    body = json.dumps({"error": code, "message": message}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


class _HeldHeads:
    """The response heads held during one turn of an event loop, for all its connections: those whose body has
    not come by the loop's next turn go out then, with one callback per turn rather than one per response."""

    __slots__ = ("_writers",)

    def __init__(self) -> None:
        self._writers: list[_ResponseWriter] = []

    def add(self, writer: _ResponseWriter, loop: asyncio.AbstractEventLoop) -> None:
        if not self._writers:
            loop.call_soon(self._flush)
        self._writers.append(writer)

    def _flush(self) -> None:
        writers, self._writers = self._writers, []
        for writer in writers:
            writer.flush()


# Per event loop (a server runs on one; tests start many, one after the other).
_HELD_HEADS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _HeldHeads] = weakref.WeakKeyDictionary()


class _ResponseWriter:
    """A request-response cycle's transport. The response's head (the cycle's first write once its response
    has started) waits for the first bytes of the body, and both go out in one write; it waits no longer
    than the loop's next turn (a body that is not ready at once, as an event stream's) and goes out before a
    close. `quiet`: the access-log policy drops this request's line if it succeeds, and uvicorn's own line is
    off: the line is made here, for an answer other than 2xx, as uvicorn makes it (when it writes the head)."""

    __slots__ = ("_cycle", "_head", "_held_heads", "_loop", "_quiet", "_started", "_transport")

    def __init__(
        self,
        cycle: RequestResponseCycle,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        held_heads: _HeldHeads,
        quiet: bool,
    ) -> None:
        self._cycle = cycle
        self._transport = transport
        self._loop = loop
        self._held_heads = held_heads
        self._quiet = quiet
        self._started = False  # the head was written, or is held
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
            return
        cycle = self._cycle
        if not self._started and cycle.response_started:  # the head (a 100 Continue comes before the start)
            self._started = True
            if self._quiet:
                self._access_line(cycle, data)
            if cycle.scope["method"] != "HEAD":  # a HEAD answer has no body to wait for
                self._head = data
                self._held_heads.add(self, self._loop)
                return
        self._transport.write(data)

    @staticmethod
    def _access_line(cycle: RequestResponseCycle, head: bytes) -> None:
        status = int(head[9:12])  # uvicorn's status line: b"HTTP/1.1 200 OK"
        if not 200 <= status < 300:
            scope = cycle.scope
            cycle.access_logger.info(
                ACCESS_LINE,
                get_client_addr(scope),
                scope["method"],
                get_path_with_query_string(scope),
                scope["http_version"],
                status,
            )

    def flush(self) -> None:
        head, self._head = self._head, None
        if head is not None and not self._transport.is_closing():
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)  # whatever else a future uvicorn asks of its transport


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size cap on request heads and deadlines on reading requests, and
    its responses written by `_ResponseWriter`. uvicorn's keep-alive deadline (the time an idle
    connection is kept after a response) is kept by the same timer as the read deadlines."""

    max_head_bytes = MAX_HEAD_BYTES
    head_timeout_s = HTTP.head_timeout_s
    body_timeout_s = HTTP.body_timeout_s

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Phase = "idle"
        self._head_bytes = 0
        self._deadline_at: float | None = None  # loop time: the request's head or body
        self._idle_until: float | None = None  # loop time: uvicorn's keep-alive, after a response
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf  # when `_timer` fires (never: none)
        self._held_heads = _HELD_HEADS.setdefault(self.loop, _HeldHeads())
        lines = AccessLines.installed_on(self.access_logger)
        self._quiet_prefix = lines.quiet_prefix if lines is not None else None

    def _arm(self, seconds: float) -> None:
        self._deadline_at = deadline = self.loop.time() + seconds
        if deadline < self._timer_at:  # else the timer fires first, and moves itself on to the deadline
            self._wake_at(deadline)

    def _wake_at(self, at: float) -> None:
        """Have the timer fire at `at`, earlier than it would (when it fires early, it waits on)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._check)

    def _stop_timer(self) -> None:
        self._deadline_at = self._idle_until = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf

    def _check(self) -> None:
        self._timer, self._timer_at = None, math.inf
        if self.transport.is_closing():
            return
        now, deadline, idle_until = self.loop.time(), self._deadline_at, self._idle_until
        if idle_until is not None and idle_until <= now and (deadline is None or idle_until <= deadline):
            self._idle_until = None
            self.timeout_keep_alive_handler()
        elif deadline is not None and deadline <= now:
            self._expired()
        elif deadline is not None or idle_until is not None:
            self._wake_at(min(t for t in (deadline, idle_until) if t is not None))

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
        self._stop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._idle_until = None  # as uvicorn cancels its keep-alive timer on any byte
        super().data_received(data)
        if self._phase != "head" or self.transport.is_closing():
            return
        # The whole chunk counts: it may also hold the end of the request before (pipelining), which
        # only makes the cap apply up to one read (256 KiB) sooner.
        self._head_bytes += len(data)
        if self._head_bytes > self.max_head_bytes:
            self._stop_timer()
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
        before = self.cycle
        super().on_headers_complete()
        self._phase = "body"
        self._arm(self.body_timeout_s)
        cycle = self.cycle
        if cycle is before:  # an upgrade: no request-response cycle
            return
        prefix = self._quiet_prefix  # AccessLines.drops_success, without a call per request
        quiet = prefix is not None and cycle.access_log and self.scope["raw_path"].startswith(prefix)
        if quiet:
            cycle.access_log = False
        writer = _ResponseWriter(cycle, self.transport, self.loop, self._held_heads, quiet)
        cycle.transport = writer  # type: ignore[assignment]  # all a cycle uses of its transport

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = "idle"
        self._deadline_at = None  # the timer, if any, finds nothing due when it fires, and stops

    def on_response_complete(self) -> None:
        # uvicorn's, but for its keep-alive deadline: `_idle_until`, on the connection's timer, instead of
        # a timer armed after every response and cancelled by the next request's first bytes.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._idle_until = idle_until = self.loop.time() + self.timeout_keep_alive
            if idle_until < self._timer_at:
                self._wake_at(idle_until)


def bounded_protocol(
    *,
    max_head_bytes: int = MAX_HEAD_BYTES,
    head_timeout_s: float = HTTP.head_timeout_s,
    body_timeout_s: float = HTTP.body_timeout_s,
) -> type[BoundedHttpTools]:
    """`BoundedHttpTools` with these bounds (uvicorn instantiates the class it is given per connection)."""
    bounds = {"max_head_bytes": max_head_bytes, "head_timeout_s": head_timeout_s, "body_timeout_s": body_timeout_s}
    return type("BoundedHttpTools", (BoundedHttpTools,), bounds)


def server_config(
    app: Any,
    *,
    max_head_bytes: int = MAX_HEAD_BYTES,
    head_timeout_s: float = HTTP.head_timeout_s,
    body_timeout_s: float = HTTP.body_timeout_s,
    **options: Any,
) -> uvicorn.Config:
    """The uvicorn configuration of `receiver serve`, which the tests' servers share; `options` are
    uvicorn's own (host, port, log_config, …)."""
    protocol = bounded_protocol(
        max_head_bytes=max_head_bytes, head_timeout_s=head_timeout_s, body_timeout_s=body_timeout_s
    )
    options.setdefault("server_header", False)
    return uvicorn.Config(app, http=protocol, **options)
