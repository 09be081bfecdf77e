"""Open-loop webhook load for `python -m scripts.bench ledger`, run in a process of its own:

    python -m scripts.ledger_load --ports 8001,8002 --rate 500 --seconds 20 --prefix P --out FILE

Webhook i (a Pixazo completion whose request id is `P-i`) is due at start + i / rate and is written then,
to port i mod n, on an idle kept-alive connection or on a new one when none is idle, whatever the
answers to earlier webhooks do: a stalled server does not slow the schedule (no coordinated omission),
and latency is measured from when each webhook was due. When the generator itself cannot keep up (its
event loop busy, or `--max-connections` all waiting for answers), the lateness of every write is
recorded and reported, never hidden. Every answer is read to its end; a request without an answer
within `--timeout` of its write is closed and counted as an error. Times are `time.monotonic()`
(CLOCK_MONOTONIC), the clock the callback server stamps arrivals with, in another process.

The result is one JSON document (`--out`): per webhook its due time, write time, answer time, status
and error.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import resource
import socket
import time
from pathlib import Path

import uvloop

from scripts.benchlib import HOOK_PATH, pixazo_webhook

REFUSED_PATH = "/webhooks/pixazo?token=not-the-webhook-token"  # answered 401: a deliberate refusal
IDLE_CLOSE_S = 2.0  # below uvicorn's keep-alive (5 s), so the server never closes a connection we are writing to
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:[ \t]*(\d+)")


class _Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self, load: OpenLoop, port: int) -> None:
        self.load = load
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.current: int | None = None  # the webhook whose answer is awaited
        self.buffer = bytearray()
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, index: int) -> None:
        assert self.transport is not None
        self.current = index
        self.load.sent[index] = time.monotonic()
        self.transport.write(self.load.request(index))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        found = _CONTENT_LENGTH.search(self.buffer, 0, end + 2)
        if len(self.buffer) < end + 4 + (int(found.group(1)) if found else 0):
            return
        status = int(self.buffer[9:12])
        self.buffer.clear()
        index, self.current = self.current, None
        if index is not None:
            self.load.answered(index, status)
        self.load.free(self)

    def connection_lost(self, exc: Exception | None) -> None:
        index, self.current = self.current, None
        if index is not None:
            self.load.failed(index, "connection closed before an answer")
        self.load.lost(self)


class OpenLoop:
    """The schedule, the connections and the books of one run."""

    def __init__(
        self,
        ports: list[int],
        prefix: str,
        count: int,
        rate: float,
        *,
        refuse_every: int,
        timeout: float,
        max_connections: int,
    ) -> None:
        self.ports = ports
        self.prefix = prefix
        self.count = count
        self.rate = rate
        self.refuse_every = refuse_every
        self.timeout = timeout
        self.max_connections = max_connections
        self.start = 0.0
        self.sent: list[float | None] = [None] * count
        self.answers: list[float | None] = [None] * count
        self.status: list[int | None] = [None] * count
        self.error: list[str | None] = [None] * count
        self.resolved = 0
        self.idle: dict[int, list[_Connection]] = {p: [] for p in ports}
        self.waiting: dict[int, collections.deque[int]] = {p: collections.deque() for p in ports}
        self.busy: set[_Connection] = set()
        self.open = 0  # connections open or being opened
        self.opened = 0
        self.capped = 0  # webhooks that found every connection busy and the cap reached: they wait
        self.done = asyncio.Event()

    def refused(self, index: int) -> bool:
        return self.refuse_every > 0 and index % self.refuse_every == self.refuse_every - 1

    def request(self, index: int) -> bytes:
        port = self.ports[index % len(self.ports)]
        path = REFUSED_PATH if self.refused(index) else HOOK_PATH
        body = pixazo_webhook(f"{self.prefix}-{index}")
        return (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    def _resolve(self) -> None:
        self.resolved += 1
        if self.resolved == self.count:
            self.done.set()

    def answered(self, index: int, status: int) -> None:
        self.answers[index] = time.monotonic()
        self.status[index] = status
        self._resolve()

    def failed(self, index: int, error: str) -> None:
        self.error[index] = error
        self._resolve()

    def dispatch(self, index: int) -> None:
        port = self.ports[index % len(self.ports)]
        idle = self.idle[port]
        if idle:
            conn = idle.pop()
            self.busy.add(conn)
            conn.send(index)
            return
        self.waiting[port].append(index)
        if self.open >= self.max_connections:
            self.capped += 1
        else:
            self.open += 1
            asyncio.get_running_loop().create_task(self._connect(port))

    async def _connect(self, port: int) -> None:
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                lambda: _Connection(self, port), "127.0.0.1", port
            )
        except OSError as exc:
            self.open -= 1
            if self.waiting[port]:
                self.failed(self.waiting[port].popleft(), f"connect failed: {exc.strerror or type(exc).__name__}")
            return
        self.opened += 1
        self.free(conn)

    def free(self, conn: _Connection) -> None:
        """A connection without a request: it takes the next webhook waiting for its port, or rests."""
        self.busy.discard(conn)
        waiting = self.waiting[conn.port]
        if waiting:
            self.busy.add(conn)
            conn.send(waiting.popleft())
        else:
            conn.idle_since = time.monotonic()
            self.idle[conn.port].append(conn)

    def lost(self, conn: _Connection) -> None:
        self.open -= 1
        self.busy.discard(conn)
        if conn in self.idle[conn.port]:
            self.idle[conn.port].remove(conn)
        if self.waiting[conn.port] and self.open < self.max_connections:
            self.open += 1
            asyncio.get_running_loop().create_task(self._connect(conn.port))

    async def _janitor(self) -> None:
        """Times out requests without an answer, and closes connections idle for long."""
        while not self.done.is_set():
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for conn in list(self.busy):
                sent = self.sent[conn.current] if conn.current is not None else None
                if sent is not None and now - sent > self.timeout and conn.transport is not None:
                    index, conn.current = conn.current, None
                    assert index is not None
                    self.failed(index, "timeout")
                    conn.transport.close()
            for idle in self.idle.values():
                for conn in [c for c in idle if now - c.idle_since > IDLE_CLOSE_S]:
                    idle.remove(conn)
                    if conn.transport is not None:
                        conn.transport.close()

    async def run(self) -> None:
        janitor = asyncio.create_task(self._janitor())
        self.start = time.monotonic() + 0.05
        index = 0
        while index < self.count:
            now = time.monotonic()
            # Everything due by now goes out in this turn; then sleep until the next one is due.
            while index < self.count and self.start + index / self.rate <= now:
                self.dispatch(index)
                index += 1
            if index < self.count:
                await asyncio.sleep(max(0.0, self.start + index / self.rate - time.monotonic()))
        try:
            await asyncio.wait_for(self.done.wait(), self.timeout + 30)
        except TimeoutError:
            for i in range(self.count):
                if self.status[i] is None and self.error[i] is None:
                    self.failed(i, "never sent" if self.sent[i] is None else "unresolved")
        janitor.cancel()
        for conns in self.idle.values():
            for conn in conns:
                if conn.transport is not None:
                    conn.transport.close()

    def result(self, cpu_s: float) -> dict[str, object]:
        return {
            "prefix": self.prefix,
            "count": self.count,
            "rate": self.rate,
            "start": self.start,
            "ports": self.ports,
            "refuse_every": self.refuse_every,
            "connections_opened": self.opened,
            "capped": self.capped,
            "cpu_s": cpu_s,
            "sent": self.sent,
            "answered": self.answers,
            "status": self.status,
            "error": self.error,
        }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scripts.ledger_load")
    parser.add_argument("--ports", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--refuse-every", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--max-connections", type=int, default=512)
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",")]
    count = max(1, round(args.rate * args.seconds))

    async def go() -> OpenLoop:
        load = OpenLoop(
            ports,
            args.prefix,
            count,
            args.rate,
            refuse_every=args.refuse_every,
            timeout=args.timeout,
            max_connections=args.max_connections,
        )
        await load.run()
        return load

    before = resource.getrusage(resource.RUSAGE_SELF)
    load = uvloop.run(go())  # the servers' loop too
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    args.out.write_text(json.dumps(load.result(cpu)))


if __name__ == "__main__":
    main()
