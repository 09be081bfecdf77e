"""What makes publishing cheap: XADDs framed by hand exactly as redis-py frames them, and a publisher that
gives way to a busy event loop (one read and CloudEvent for all sinks: tests/unit/sinks/test_feed.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio.connection import Connection

from receiver.sinks import publisher
from receiver.sinks.base import Outgoing
from receiver.sinks.envelope import cloudevent
from receiver.sinks.redis_streams import xadds
from receiver.sinks.urls import parse_sink_url
from receiver.store.base import Event
from receiver.tuning import SINKS

JOB = '{"id":"j%d","provider":"pixazo","completed_at":"2026-01-01T00:00:00Z","outputs":[],"prompt":"é \\"q\\""}'


def _events(n: int) -> list[Event]:
    return [Event(i, f"j{i}", "job.succeeded", JOB % i) for i in range(1, n + 1)]


@pytest.mark.parametrize("url", ["redis://127.0.0.1/0?stream=a:b", "redis://127.0.0.1/0?stream=ström&maxlen=1000"])
def test_redis_xadds_framed_as_redis_py_frames_them(url: str) -> None:
    spec = parse_sink_url(url)
    batch = [Outgoing(e, cloudevent(e, "https://r.example")) for e in _events(3)]
    packer = Connection()
    trim: list[str | int] = ["MAXLEN", "~", spec.maxlen] if spec.maxlen else []
    expected = b"".join(
        b"".join(
            packer.pack_command(
                "XADD",
                spec.target,
                *trim,
                f"{o.event.seq}-0",
                "type",
                o.event.type,
                "subject",
                o.event.job_id,
                "event",
                o.body,
            )
        )
        for o in batch
    )
    assert xadds(spec, batch) == expected


async def test_publisher_gives_way_to_a_busy_loop() -> None:
    class Stopping:
        def is_set(self) -> bool:
            return False

    class Runtime:
        stopping = Stopping()

    runtime = Runtime()
    assert await publisher._room(runtime) == publisher.BATCH_MAX  # type: ignore[arg-type]  # an idle loop

    stop = asyncio.Event()
    steps = 0

    async def requests() -> None:  # stands for a request path that keeps the loop busy
        nonlocal steps
        while not stop.is_set():
            end = time.thread_time() + 0.003
            while time.thread_time() < end:
                pass
            steps += 1
            await asyncio.sleep(0)

    busy = asyncio.create_task(requests())
    try:
        started = time.monotonic()
        assert await publisher._room(runtime) == publisher.BATCH  # type: ignore[arg-type]
        assert time.monotonic() - started >= SINKS.defer_max_s  # it waited for room first
        assert steps > 10  # and the requests went on meanwhile
    finally:
        stop.set()
        await busy
