"""A fake Oxen (hub.oxen.ai) for tests: the SSE event stream, the queue GET/POST, and scriptable failures.

Serve `FakeOxen().app` with `tests.support.serve_app`, set `base_url`, then script it from the test:
`submit()`, `complete()`, `cancel()`, `emit()`, `send_raw()`, `drop()`, `stall()` and the switches
`refuse_auth` / `refuse_streams` / `queue_status`. Like the real one it keeps no history: an event fired
while no stream is connected is lost (and noted in `lost`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from receiver.tuning import StreamTuning
from tests.fakes.recording import Recorded

API_KEY = "oxen-test-key-5f3a"
MODEL = "xai-grok-imagine-image"
COMPLETED = "media_generation_completed"

# Consumer timings for tests: stall timeout 0.5 s (keep-alive 0.2 s × 2.5) while the fake sends
# keep-alives every 0.05 s.
FAST_TUNING = StreamTuning(
    keep_alive_s=0.2,
    stall_factor=2.5,
    connect_timeout_s=2,
    backoff_base_s=0.02,
    backoff_cap_s=0.1,
    unauthorized_base_s=0.1,
    unauthorized_cap_s=0.2,
    healthy_after_s=0.3,
    poll_timeout_s=2,
)


_CLOSE = object()  # end the response cleanly
_ABORT = object()  # cut the connection mid-stream


class FakeDrop(Exception):
    """Raised inside a stream to make the server cut the connection."""


@dataclass
class _Stream:
    number: int
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    stalled: bool = False


class FakeOxen:
    def __init__(self, api_key: str = API_KEY, *, keep_alive_s: float = 0.05) -> None:
        self.api_key = api_key
        self.keep_alive_s = keep_alive_s
        self.base_url = ""
        self.generations: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.lost: list[str] = []  # data of events fired while no stream could receive them
        self.connections = 0  # streams ever opened
        # Switches
        self.refuse_auth: int | None = None  # 401/403 to every request, as for a bad key
        self.refuse_streams: int | None = None  # this status to every new GET /api/events
        self.stall_new_streams = False  # new streams send their headers, then nothing, ever
        self.queue_status: int | None = None  # this status to every GET /api/ai/queue/{id}
        self.queue_delay_s = 0.0  # hold each GET /api/ai/queue/{id} this long (or until close())
        self.trickle_polls: set[str] = set()  # polls of these ids answer 200, then a byte every 0.2 s, forever
        self._closing = asyncio.Event()
        self.generations_per_request = 1
        self._streams: list[_Stream] = []
        self._numbers = itertools.count(1)
        self.app = Starlette(
            routes=[
                Route("/api/events", self._events, methods=["GET"]),
                Route("/api/ai/queue", self._enqueue, methods=["POST"]),
                Route("/api/ai/queue/{generation_id}", self._status, methods=["GET"]),
            ]
        )

    # -- scripting ---------------------------------------------------------------------------------

    def submit(self, prompt: str = "a red fox", model: str = MODEL) -> str:
        """Create a queued generation, as `POST /api/ai/queue` does; returns its id."""
        generation_id = uuid.uuid4().hex
        self.generations[generation_id] = {
            "generation_id": generation_id,
            "model_name": model,
            "prompt": prompt,
            "media_type": "image",
            "status": "queued",
            "result_url": None,
            "error_message": None,
            "enqueued_at": int(time.time()),
            "started_at": None,
            "completed_at": None,
        }
        return generation_id

    def complete(
        self, generation_id: str, *, url: str | None = None, error: str | None = None, emit: bool = True
    ) -> dict[str, Any]:
        """Finish a generation (failed when `error` is given) and fire its event; returns the event data."""
        record = self.generations[generation_id]
        now = int(time.time())
        record.update(started_at=record["started_at"] or now, completed_at=now)
        data: dict[str, Any] = {"generation_id": generation_id, "media_type": "image"}
        if error is None:
            url = url or f"https://cdn.oxen.test/generations/{generation_id}.png?X-Amz-Signature=abc"
            record.update(status="succeeded", result_url=url)
            data.update(status="succeeded", model=record["model_name"], url=url)
        else:
            record.update(status="failed", error_message=error)
            data.update(status="failed", error=error)
        if emit:
            self.emit(COMPLETED, data)
        return data

    def cancel(self, generation_id: str) -> None:
        """Cancel a generation: like Oxen, no event; only polling sees it."""
        self.generations[generation_id].update(status="cancelled", completed_at=int(time.time()))

    def emit(self, event: str, data: Any) -> int:
        """Send one event to every live stream; returns how many got it (0: the event is lost)."""
        text = data if isinstance(data, str) else json.dumps(data)
        lines = "".join(f"data: {line}\n" for line in text.split("\n"))
        return self.send_raw(f"event: {event}\n{lines}\n", lost=text)

    def send_raw(self, text: str, *, lost: str | None = None) -> int:
        """Write raw text to every live stream (comments, garbage, half events)."""
        live = [s for s in self._streams if not s.stalled]
        for stream in live:
            stream.queue.put_nowait(text)
        if not live:
            self.lost.append(lost if lost is not None else text)
        return len(live)

    def drop(self, *, abort: bool = True) -> int:
        """End every open stream: cut mid-stream (`abort`) or closed cleanly; returns how many."""
        for stream in self._streams:
            stream.queue.put_nowait(_ABORT if abort else _CLOSE)
        return len(self._streams)

    def stall(self) -> int:
        """Open streams go silent (no keep-alives either) without closing; returns how many."""
        for stream in self._streams:
            stream.stalled = True
        return len(self._streams)

    def close(self) -> None:
        """Before the server stops: end the streams and let held requests go."""
        self._closing.set()
        self.drop(abort=False)

    @property
    def live_streams(self) -> int:
        return sum(1 for s in self._streams if not s.stalled)

    async def wait_connections(self, count: int, timeout: float = 5.0) -> None:
        """Until `count` streams have ever been opened and one is live."""
        deadline = time.monotonic() + timeout
        while not (self.connections >= count and self.live_streams):
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} stream connection(s), saw {self.connections}")
            await asyncio.sleep(0.01)

    def requests_to(self, path_prefix: str, method: str = "GET") -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # -- HTTP --------------------------------------------------------------------------------------

    async def _record(self, request: Request) -> Response | None:
        """Record the request; answer it here when it must be refused."""
        self.requests.append(await Recorded.read(request))
        if self.refuse_auth is not None or not hmac.compare_digest(
            request.headers.get("authorization", "").encode(), f"Bearer {self.api_key}".encode()
        ):
            status = self.refuse_auth or 401
            return JSONResponse(
                {
                    "error": {"type": "unauthorized", "title": "Invalid API key"},
                    "status": "error",
                    "status_message": "unauthorized",
                },
                status_code=status,
            )
        return None

    async def _events(self, request: Request) -> Response:
        refused = await self._record(request)
        if refused is not None:
            return refused
        if self.refuse_streams is not None:
            return JSONResponse(
                {"status": "error", "status_message": "unavailable"},
                status_code=self.refuse_streams,
                headers={"Retry-After": "0"},
            )
        stream = _Stream(next(self._numbers), stalled=self.stall_new_streams)
        self._streams.append(stream)
        self.connections += 1
        return StreamingResponse(
            self._stream_body(stream), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def _stream_body(self, stream: _Stream) -> AsyncIterator[str]:
        try:
            while True:
                try:
                    item = await asyncio.wait_for(stream.queue.get(), self.keep_alive_s)
                except TimeoutError:
                    if not stream.stalled:
                        yield ": keep-alive\n\n"
                    continue
                if item is _ABORT:
                    raise FakeDrop(f"stream {stream.number} cut")
                if item is _CLOSE:
                    return
                if not stream.stalled:
                    yield item
        finally:
            self._streams.remove(stream)

    async def _trickle(self) -> AsyncIterator[bytes]:
        yield b'{"status": "'
        while not self._closing.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), 0.2)
            yield b" "

    async def _enqueue(self, request: Request) -> Response:
        refused = await self._record(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": {"type": "bad_request", "title": "body is not JSON"}, "status": "error"}, 400)
        if not isinstance(body, dict) or not body.get("model") or not body.get("prompt"):
            return JSONResponse(
                {"error": {"type": "bad_request", "title": "model and prompt are required"}, "status": "error"}, 400
            )
        ids = [self.submit(str(body["prompt"]), str(body["model"])) for _ in range(self.generations_per_request)]
        return JSONResponse({"generations": [{"generation_id": i, "status": "queued"} for i in ids]})

    async def _status(self, request: Request) -> Response:
        refused = await self._record(request)
        if refused is not None:
            return refused
        if self.queue_delay_s:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.queue_delay_s)
        if self.queue_status is not None:
            return JSONResponse({"status": "error", "status_message": "internal error"}, status_code=self.queue_status)
        if request.path_params["generation_id"] in self.trickle_polls:
            return StreamingResponse(self._trickle(), media_type="application/json")
        record = self.generations.get(request.path_params["generation_id"])
        if record is None:
            return JSONResponse(
                {
                    "error": {
                        "type": "resource_not_found",
                        "title": "Generation not found",
                        "detail": f"no generation {request.path_params['generation_id']}",
                    },
                    "status": "error",
                    "status_message": "resource_not_found",
                },
                status_code=404,
            )
        return JSONResponse(record)
