"""The server's protocol (`receiver.web.server`), driven without sockets: what it writes and logs is what
uvicorn's own protocol writes and logs, in fewer writes, and its read deadlines need no timer per request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvicorn
import uvicorn.protocols.http.httptools_impl as uvicorn_http
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_path_with_query_string
from uvicorn.server import ServerState

from receiver.logs import AccessLines
from receiver.web.server import BoundedHttpTools

Scope = dict[str, Any]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Wire(asyncio.Transport):
    """A connection's transport that keeps every write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "a write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: Scope, receive: Callable[[], Awaitable[dict[str, Any]]], send: Send) -> None:
    """Answers by path: `/webhooks/ok` 200, `/webhooks/bad` 401, `/slow` a body a moment after its head,
    `/broken` a head and then an exception, anything else 200."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    path = scope["path"]
    status = 401 if path == "/webhooks/bad" else 200
    body = b'{"outcome":"applied"}'
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")],
        }
    )
    if path == "/slow":
        await asyncio.sleep(0.01)
    if path == "/broken":
        raise RuntimeError("the app fails after its head")
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def access_records() -> Iterator[list[logging.LogRecord]]:
    """uvicorn's access logger with the default policy (webhook-errors) installed, its records kept."""
    logger = logging.getLogger("uvicorn.access")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, level, filters = Keep(), logger.level, list(logger.filters)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    AccessLines("webhook-errors").install(logger)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.filters[:] = filters
        logger.__dict__.pop("info", None)


def connect(protocol_class: type[HttpToolsProtocol], loop: Any = None) -> tuple[HttpToolsProtocol, Wire]:
    config = uvicorn.Config(app, http=protocol_class, log_config=None)  # BoundedHttpTools: server_config's bounds
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    wire = Wire()
    protocol.connection_made(wire)
    return protocol, wire


async def exchange(protocol: HttpToolsProtocol, request: bytes) -> None:
    protocol.data_received(request)
    while protocol.tasks:
        await asyncio.gather(*protocol.tasks, return_exceptions=True)
    await asyncio.sleep(0)  # a head left waiting for its body goes out in the loop's next turn


def request(method: str, path: str, body: bytes = b"{}") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


REQUESTS = {
    "accepted webhook": request("POST", "/webhooks/ok?token=t"),
    "refused webhook": request("POST", "/webhooks/bad?token=t"),
    "other route": request("GET", "/v1/jobs", b""),
    "HEAD": request("HEAD", "/v1/jobs", b""),
    "body a moment after the head": request("GET", "/slow", b""),
    "app failing after its head": request("GET", "/broken", b""),
    "expecting a 100 Continue": request("POST", "/webhooks/bad?token=t").replace(
        b"Host: x\r\n", b"Host: x\r\nExpect: 100-continue\r\n"
    ),
}


@pytest.mark.parametrize("raw", list(REQUESTS.values()), ids=list(REQUESTS))
async def test_the_same_bytes_and_access_lines_as_uvicorn(raw: bytes, access_records: list[logging.LogRecord]) -> None:
    results = []
    for protocol_class in (HttpToolsProtocol, BoundedHttpTools):
        protocol, wire = connect(protocol_class)
        await exchange(protocol, raw)
        results.append((wire, [(r.msg, r.args) for r in access_records]))
        access_records.clear()
        protocol.connection_lost(None)
    (uvicorns, uvicorn_lines), (ours, our_lines) = results
    assert b"".join(ours.writes) == b"".join(uvicorns.writes) != b""
    assert ours.closed == uvicorns.closed
    assert our_lines == uvicorn_lines
    if raw.startswith(b"POST /webhooks/ok"):
        assert our_lines == []  # the policy drops it (and it is never made: see below)


async def test_a_response_is_one_write(access_records: list[logging.LogRecord]) -> None:
    protocol, wire = connect(BoundedHttpTools)
    for _ in range(3):
        await exchange(protocol, REQUESTS["accepted webhook"])
    assert len(wire.writes) == 3 and all(w.startswith(b"HTTP/1.1 200 OK\r\n") for w in wire.writes)
    assert all(w.endswith(b'{"outcome":"applied"}') for w in wire.writes)


async def test_a_dropped_access_line_gets_no_arguments(
    access_records: list[logging.LogRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn builds an access line's arguments before its logger is asked; for a line the policy drops
    for a success, ours never asks."""
    made: list[Scope] = []
    real = get_path_with_query_string

    def counting(scope: Any) -> str:
        made.append(scope)
        return real(scope)

    monkeypatch.setattr(uvicorn_http, "get_path_with_query_string", counting)
    protocol, _ = connect(BoundedHttpTools)
    await exchange(protocol, REQUESTS["accepted webhook"])
    assert made == [] and access_records == []
    await exchange(protocol, REQUESTS["other route"])
    assert len(made) == 1 and [r.args[2] for r in access_records] == ["/v1/jobs"]  # type: ignore[index]


class Clock:
    """The parts of an event loop the deadlines use, on a clock the test moves; timers fire when told."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.now = 0.0
        self.timers: list[asyncio.TimerHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, (), self.loop)
        self.timers.append(handle)
        return handle

    def fire_due(self) -> None:
        due = [t for t in self.timers if not t.cancelled() and t.when() <= self.now]
        self.timers = [t for t in self.timers if t not in due]
        for timer in due:
            timer._run()

    def pending(self) -> list[float]:
        return sorted(t.when() for t in self.timers if not t.cancelled())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loop, name)


async def test_deadlines_without_a_timer_per_request(access_records: list[logging.LogRecord]) -> None:
    clock = Clock(asyncio.get_running_loop())
    protocol, wire = connect(BoundedHttpTools, loop=clock)
    assert isinstance(protocol, BoundedHttpTools)
    head_s, body_s = protocol.head_timeout_s, protocol.body_timeout_s
    for n in range(20):  # a busy keep-alive connection: the timer of the connect, moved once for the keep-alive
        clock.now = n * 0.1
        await exchange(protocol, REQUESTS["accepted webhook"])
    assert len(clock.timers) == 2 and clock.pending() == [protocol.timeout_keep_alive]
    # A request whose head is half sent when that timer fires: it waits on for the request's own deadline.
    clock.now = head_s - 1
    protocol.data_received(b"POST /webhooks/ok HTTP/1.1\r\nHost: x\r\n")
    clock.now = head_s
    clock.fire_due()
    assert not wire.closed and clock.pending() == [2 * head_s - 1]
    # The rest of its head: the body's deadline is later, so the timer stays, then moves on again.
    clock.now = 2 * head_s - 2
    protocol.data_received(b"Content-Length: 5\r\n\r\n{")
    clock.now = 2 * head_s - 1
    clock.fire_due()
    assert not wire.closed and clock.pending() == [2 * head_s - 2 + body_s]
    clock.now = 2 * head_s - 2 + body_s - 0.001
    clock.fire_due()
    assert not wire.closed
    clock.now = 2 * head_s - 2 + body_s
    clock.fire_due()
    assert wire.closed and wire.writes[-1].startswith(b"HTTP/1.1 200")  # the body never came: dropped, no 408
    protocol.connection_lost(None)
    await asyncio.gather(*protocol.tasks)  # the app, told of the disconnect


async def test_a_head_not_finished_in_time_is_a_408(access_records: list[logging.LogRecord]) -> None:
    clock = Clock(asyncio.get_running_loop())
    protocol, wire = connect(BoundedHttpTools, loop=clock)
    assert isinstance(protocol, BoundedHttpTools)
    await exchange(protocol, REQUESTS["accepted webhook"])
    clock.now = 1
    protocol.data_received(b"GET /healthz HTTP/1.1\r\n")
    assert clock.pending() == [protocol.timeout_keep_alive]  # the timer set for the idle time, before the deadline
    clock.now = protocol.timeout_keep_alive
    clock.fire_due()
    assert not wire.closed and clock.pending() == [1 + protocol.head_timeout_s]
    clock.now = 1 + protocol.head_timeout_s
    clock.fire_due()
    assert wire.closed and wire.writes[-1].startswith(b"HTTP/1.1 408 ")


async def test_an_idle_connection_is_closed_after_the_keep_alive(access_records: list[logging.LogRecord]) -> None:
    clock = Clock(asyncio.get_running_loop())
    protocol, wire = connect(BoundedHttpTools, loop=clock)
    keep_alive = protocol.timeout_keep_alive
    await exchange(protocol, REQUESTS["accepted webhook"])
    clock.now = keep_alive - 1
    await exchange(protocol, REQUESTS["accepted webhook"])  # a request in time: the idle time starts over
    clock.now = keep_alive
    clock.fire_due()
    assert not wire.closed and clock.pending() == [2 * keep_alive - 1]
    clock.now = 2 * keep_alive - 1.001
    clock.fire_due()
    assert not wire.closed
    clock.now = 2 * keep_alive - 1
    clock.fire_due()
    assert wire.closed and len(wire.writes) == 2  # closed quietly, as uvicorn's keep-alive timeout does


async def test_heads_held_on_many_connections_all_go_out(access_records: list[logging.LogRecord]) -> None:
    """A body that is not ready at once: every connection's head goes out in the loop's next turn."""
    connections = [connect(BoundedHttpTools) for _ in range(3)]
    for protocol, _ in connections:
        protocol.data_received(REQUESTS["body a moment after the head"])
    for _ in range(3):  # the apps start, send their heads, and the loop turns once more
        await asyncio.sleep(0)
    assert [[w.split(b"\r\n")[0] for w in wire.writes] for _, wire in connections] == [[b"HTTP/1.1 200 OK"]] * 3
    for protocol, _ in connections:
        await exchange(protocol, b"")
    assert all(wire.writes[-1] == b'{"outcome":"applied"}' for _, wire in connections)
