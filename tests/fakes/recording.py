"""What the fake providers share: every request recorded, and scriptable refusals and slowness."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.support import serve_app


@dataclass
class Recorded:
    """One request a fake server received (every fake keeps them, in order)."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @classmethod
    async def read(cls, request: Request) -> Recorded:
        return cls(request.method, request.url.path, dict(request.headers), await request.body())

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class FakeProvider:
    """Base of one fake provider server. Subclasses build `self.app` (a Starlette app)."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.base_url = ""
        self.requests: list[Recorded] = []
        # Switches, for the submit endpoint only (polls have their own answers in `statuses`):
        self.refusal: tuple[int, Any] | None = None  # answer every submit with (status, JSON body)
        self.delay_s = 0.0  # hold every submit this long (or until the fake stops)
        # Called with the provider job id before a poll is answered (to race a webhook against it).
        self.on_poll: Callable[[str], Awaitable[None]] | None = None
        self._released = asyncio.Event()

    @contextlib.asynccontextmanager
    async def serve(self, path: str = "") -> AsyncIterator[FakeProvider]:
        async with serve_app(self.app) as running:  # type: ignore[attr-defined]
            self.base_url = running.base_url + path
            try:
                yield self
            finally:
                self._released.set()  # let held requests finish, so the server stops at once

    async def record(self, request: Request) -> Recorded:
        recorded = await Recorded.read(request)
        self.requests.append(recorded)
        return recorded

    def authorized(self, given: str | None, expected: str) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), expected.encode())

    async def hold(self) -> Response | None:
        """Apply the submit switches: wait `delay_s`, then the scripted refusal if any."""
        if self.delay_s:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._released.wait(), self.delay_s)
        if self.refusal is not None:
            status, body = self.refusal
            return JSONResponse(body, status_code=status)
        return None

    async def polled(self, provider_job_id: str) -> None:
        if self.on_poll is not None:
            await self.on_poll(provider_job_id)

    def requests_to(self, path_prefix: str, method: str = "POST") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    async def wait_requests(self, path_prefix: str, count: int, method: str = "GET", timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests_to(path_prefix, method)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} {method} {path_prefix}…, saw {self.requests}")
            await asyncio.sleep(0.01)
