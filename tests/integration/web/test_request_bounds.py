"""What a client sends is bounded by the server (receiver.web.server): a request head over the cap is refused
without stalling anyone, and a client sending its head or body too slowly is dropped. Raw sockets."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from receiver.app import create_app
from receiver.web.server import MAX_HEAD_BYTES
from tests.support import API_TOKEN, WEBHOOK_TOKEN, RunningServer, make_settings, serve_app

DROPPED_WITHIN_S = 15.0  # generous: the deadlines below are 1 s


@pytest.fixture
async def bounded(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with serve_app(create_app(make_settings(tmp_path)), head_timeout_s=1, body_timeout_s=1) as running:
        yield running


async def connect(server: RunningServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]))


async def closed_within(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float, trickle: bytes = b""
) -> bytes:
    """Whatever the server answers until it closes; a byte of `trickle` is sent every 0.2 s meanwhile.
    Our end is closed too, whatever happens."""
    try:
        return await _read_until_closed(reader, writer, seconds, trickle)
    finally:
        writer.close()


async def _read_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float, trickle: bytes
) -> bytes:
    answer = bytearray()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), 0.2)
        except TimeoutError:
            if trickle:
                try:
                    writer.write(trickle)
                    await writer.drain()
                except ConnectionError:
                    return bytes(answer)
            continue
        except ConnectionError:
            return bytes(answer)
        if not chunk:
            return bytes(answer)
        answer += chunk
    raise AssertionError(f"connection still open after {seconds} s (answer so far: {bytes(answer)[:200]!r})")


async def healthz_answers(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_a_huge_request_head_is_refused_without_stalling_others(bounded: RunningServer) -> None:
    reader, writer = await connect(bounded)
    writer.write(b"GET /healthz?q=")
    sent = 0
    refused = False
    try:
        while sent < 64 * 1024 * 1024:
            writer.write(b"a" * 65536)
            await writer.drain()
            sent += 65536
            if sent % (1024 * 1024) == 0:
                await healthz_answers(bounded)  # others are served all along
    except ConnectionError:
        refused = True
    answer = b"" if refused else await closed_within(reader, writer, DROPPED_WITHIN_S)
    writer.close()
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert refused or answer, "the whole 64 MiB head was taken"
    await healthz_answers(bounded)


async def test_many_headers_over_the_cap_are_a_431(bounded: RunningServer) -> None:
    reader, writer = await connect(bounded)
    header = b"X-Filler: " + b"f" * 1000 + b"\r\n"
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + header * (MAX_HEAD_BYTES // len(header) + 2))
    await writer.drain()
    answer = await closed_within(reader, writer, DROPPED_WITHIN_S)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"error": "headers_too_large"' in answer


async def test_silent_and_half_sent_connections_are_dropped(bounded: RunningServer) -> None:
    connections = [await connect(bounded) for _ in range(100)]
    for n, (_, writer) in enumerate(connections):
        if n % 2:
            writer.write(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n")
    await healthz_answers(bounded)
    results = await asyncio.gather(*(closed_within(r, w, DROPPED_WITHIN_S) for r, w in connections))
    assert all(a == b"" or a.startswith(b"HTTP/1.1 408 ") for a in results)


SLOW_STARTS = {  # what a trickling client sends before its byte every 0.2 s, and that byte
    "head": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"a"),
    "body": (
        f"POST /webhooks/pixazo?token={WEBHOOK_TOKEN} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{".encode(),
        b" ",
    ),
}


@pytest.mark.parametrize(("start", "trickle"), list(SLOW_STARTS.values()), ids=list(SLOW_STARTS))
async def test_a_slowloris_head_or_body_is_dropped_quietly(
    bounded: RunningServer, caplog: pytest.LogCaptureFixture, start: bytes, trickle: bytes
) -> None:
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(caplog.handler)
    try:
        reader, writer = await connect(bounded)
        writer.write(start)
        await writer.drain()
        answer = await closed_within(reader, writer, DROPPED_WITHIN_S, trickle=trickle)
    finally:
        uvicorn_error.removeHandler(caplog.handler)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    await healthz_answers(bounded)
    async with bounded.api() as api:
        assert (await api.get("/v1/receipts")).json()["receipts"] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_long_polls_outlive_the_read_deadlines(bounded: RunningServer) -> None:
    async with bounded.api() as api:
        job = (await api.post("/v1/jobs", json={"provider": "pixazo", "provider_job_id": "grok_9"})).json()
        reply = await api.get(f"/v1/jobs/{job['id']}", params={"wait": 2.5})  # longer than both deadlines
    assert reply.status_code == 200 and reply.json()["status"] == "pending"
    # A keep-alive connection's next request gets its own deadline, not the first one's.
    async with httpx.AsyncClient(base_url=bounded.base_url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as c:
        for _ in range(3):
            assert (await c.get("/healthz")).status_code == 200
            await asyncio.sleep(0.6)
