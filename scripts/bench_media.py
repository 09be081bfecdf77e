"""Media mirroring benchmark (`python -m scripts.bench --only media`): webhook → callback latency with mirroring
on (a local origin serving 200 KB images) next to mirroring off, and mirrored images per second in a burst."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scripts import benchlib as bl

IMAGE_BYTES = 200 * 1024


class ImageOrigin:
    """`GET /img/<key>`: 200 KB of image/jpeg, different for every key; one request per connection."""

    def __init__(self) -> None:
        self.port = 0
        self.served = 0
        self._server: asyncio.AbstractServer | None = None
        self._filler = hashlib.sha256(b"filler").digest() * (IMAGE_BYTES // 32 + 1)

    async def start(self) -> ImageOrigin:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, key: str) -> str:
        return f"http://127.0.0.1:{self.port}/img/{key}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            key = head.split(b" ", 2)[1]
            body = (key + self._filler)[:IMAGE_BYTES]
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body
            )
            await writer.drain()
            self.served += 1
        writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


def webhook(origin: ImageOrigin) -> Callable[[str], bytes]:
    def body(request_id: str) -> bytes:
        return json.dumps(
            {
                "request_id": request_id,
                "status": "COMPLETED",
                "output": {"media_url": [origin.url(request_id)], "media_type": "image/jpeg"},
            }
        ).encode()

    return body


@dataclass
class MediaRun:
    label: str
    p50_ms: float
    p99_ms: float
    delivered: int
    sent: int
    burst: int = 0
    burst_s: float = 0.0

    @property
    def per_second(self) -> float:
        return self.burst / self.burst_s if self.burst_s else 0.0


async def _wait(sink: bl.CallbackSink, keys: list[str], timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline and not all(k in sink.arrivals for k in keys):
        await asyncio.sleep(0.02)


async def run(workdir: Path, label: str, media_url: str, *, rate: float, seconds: float, burst: int) -> MediaRun:
    sink = await bl.CallbackSink().start()
    origin = await ImageOrigin().start()
    env = bl.receiver_env(
        workdir / f"media-{label}.db",
        RECEIVER_DEFAULT_CALLBACK_URL=sink.url,
        RECEIVER_MEDIA_URL=media_url,
        RECEIVER_MEDIA_ALLOW_PRIVATE="true",
    )
    server = bl.Served(f"receiver-media-{label}", "receiver.app:create_app", workdir, factory=True, env=env)
    await asyncio.to_thread(server.start)
    make = webhook(origin)
    try:
        warm = [f"{label}-warm-{i}" for i in range(20)]
        await bl.open_loop(server.port, bl.HOOK_PATH, make, warm, rate=rate)
        await _wait(sink, warm, 60)
        keys = [f"{label}-fixed-{i}" for i in range(int(rate * seconds))]
        records = await bl.open_loop(server.port, bl.HOOK_PATH, make, keys, rate=rate)
        await _wait(sink, keys, 60)
        latencies = [(sink.arrivals[r.key] - r.sent_at) * 1000 for r in records if r.key in sink.arrivals]
        result = MediaRun(label, bl.percentile(latencies, 50), bl.percentile(latencies, 99), len(latencies), len(keys))
        burst_keys = [f"{label}-burst-{i}" for i in range(burst)]
        started = time.perf_counter()
        await bl.open_loop(server.port, bl.HOOK_PATH, make, burst_keys, rate=burst * 10.0)
        await _wait(sink, burst_keys, 120)
        done = [sink.arrivals[k] for k in burst_keys if k in sink.arrivals]
        result.burst, result.burst_s = len(done), (max(done) - started) if done else 0.0
        return result
    finally:
        await asyncio.to_thread(server.stop)
        await sink.close()
        await origin.close()


async def compare(workdir: Path, *, rate: float, seconds: float, burst: int) -> tuple[MediaRun, MediaRun]:
    off = await run(workdir, "off", "off", rate=rate, seconds=seconds, burst=burst)
    on = await run(workdir, "on", str(workdir / "media"), rate=rate, seconds=seconds, burst=burst)
    return off, on
