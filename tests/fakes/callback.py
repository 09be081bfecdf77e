"""A downstream callback endpoint on loopback: scripted answers, hangs, and a record of every request."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import serve_app


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `hang` holds the request open until the server is released."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    hang: bool = False


HANG = Reply(hang=True)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


class CallbackServer:
    """Answers POSTs on any path with the next scripted `Reply`, then with `default`."""

    def __init__(self, *script: Reply, default: Reply = Reply()) -> None:
        self.script: deque[Reply] = deque(script)
        self.default = default
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.base_url = ""
        self._released = asyncio.Event()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    def url(self, path: str = "/hook") -> str:
        return f"{self.base_url}{path}"

    def release(self) -> None:
        """End every hanging request (with a 503) and stop hanging from now on."""
        self._released.set()

    def for_id(self, webhook_id: str) -> list[Received]:
        return [r for r in self.requests if r.webhook_id == webhook_id]

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append(Received(request.url.path, dict(request.headers), body, time.monotonic()))
        reply = self.script.popleft() if self.script else self.default
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.hang:
                await self._released.wait()
                return Response(b"released", status_code=503)
            return Response(reply.body, status_code=reply.status, headers=reply.headers)
        finally:
            self.in_flight -= 1


@contextlib.asynccontextmanager
async def callback_server(*script: Reply, default: Reply = Reply()) -> AsyncIterator[CallbackServer]:
    """A `CallbackServer` on a real uvicorn server on 127.0.0.1."""
    fake = CallbackServer(*script, default=default)
    async with serve_app(fake.app) as running:
        fake.base_url = running.base_url
        try:
            yield fake
        finally:
            fake.release()


class BlackHole:
    """A TCP endpoint that accepts connections and reads what comes, but never answers a byte."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0  # accepted so far
        self.open = 0  # still open
        self.max_open = 0
        self._writers: list[asyncio.StreamWriter] = []

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        self._writers.append(writer)
        try:
            while await reader.read(65536):
                pass
        except OSError:
            pass
        finally:
            self.open -= 1


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[BlackHole]:
    hole = BlackHole()
    server = await asyncio.start_server(hole._handle, "127.0.0.1", 0)
    hole.port = server.sockets[0].getsockname()[1]
    try:
        yield hole
    finally:
        server.close()
        for writer in hole._writers:
            writer.close()
