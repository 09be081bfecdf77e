"""A provider that misbehaves on purpose: answers that trickle forever, answers far too big, raw bodies.

Any method, any path: the first scripted prefix that matches the path decides the answer, else `default`.
Serve with `serve()`; every request is recorded (method and path).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support import serve_app

Answer = Callable[["HostileProvider"], Response]
MiB = 1024 * 1024


def trickle(first: bytes = b'{"status": "', every_s: float = 0.5, status: int = 200) -> Answer:
    """`status` at once, then one byte every `every_s`, never ending (until the fake stops)."""

    def answer(fake: HostileProvider) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield first
            while not fake.stopping.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(fake.stopping.wait(), every_s)
                yield b" "

        return StreamingResponse(body(), status_code=status, media_type="application/json")

    return answer


def huge(size: int, status: int = 200, chunk: bytes = b" " * MiB) -> Answer:
    """`size` bytes (a JSON-ish prefix, then spaces), streamed without a Content-Length."""

    def answer(fake: HostileProvider) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b'{"request_id": "x", "padding": "'
            sent = 0
            while sent < size and not fake.stopping.is_set():
                yield chunk
                sent += len(chunk)
                fake.sent_bytes = sent
            yield b'"}'

        return StreamingResponse(body(), status_code=status, media_type="application/json")

    return answer


def raw(body: bytes, status: int = 200) -> Answer:
    return lambda fake: Response(body, status_code=status, media_type="application/json")


class HostileProvider:
    def __init__(self, default: Answer = raw(b"{}")) -> None:
        self.default = default
        self.script: dict[str, Answer] = {}  # path prefix → answer
        self.requests: list[tuple[str, str]] = []
        self.sent_bytes = 0
        self.stopping = asyncio.Event()
        self.base_url = ""
        self.app = Starlette(routes=[Route("/{path:path}", self._any, methods=["GET", "POST"])])

    async def _any(self, request: Request) -> Response:
        await request.body()
        self.requests.append((request.method, request.url.path))
        for prefix, answer in self.script.items():
            if request.url.path.startswith(prefix):
                return answer(self)
        return self.default(self)

    def requests_to(self, prefix: str) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[1].startswith(prefix)]

    @contextlib.asynccontextmanager
    async def serve(self, path: str = "") -> AsyncIterator[HostileProvider]:
        async with serve_app(self.app) as running:
            self.base_url = running.base_url + path
            try:
                yield self
            finally:
                self.stopping.set()
