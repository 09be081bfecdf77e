"""`GET /v1/events?since=ISO8601`: every event of a job completed at or after `since` (the job's own
`completed_at`, not the time its event was written), then live; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from receiver.app import create_app
from receiver.models import iso_time
from tests.support import WEBHOOK_TOKEN, RunningServer, eventually, make_settings, serve_app

T0 = 1_900_000_000.0  # a whole second, so the times below show as T0 + n seconds


class HeldOrigin:
    """Serves a small PNG at /now/<name> at once, and at /held/<name> only once `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if head.split(b" ", 2)[1].startswith(b"/held/"):
                await self.release.wait()
            body = b"\x89PNG\r\n\x1a\n" + b"x" * 100
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()


@contextlib.asynccontextmanager
async def held_origin() -> AsyncIterator[HeldOrigin]:
    origin = HeldOrigin()
    server = await asyncio.start_server(origin.handle, "127.0.0.1", 0)
    origin.port = server.sockets[0].getsockname()[1]
    try:
        yield origin
    finally:
        origin.release.set()
        server.close()


async def finish(server: RunningServer, request_id: str, url: str) -> str:
    """A Pixazo webhook completing `request_id` with one output at `url`; its job id."""
    body = {"request_id": request_id, "status": "COMPLETED", "output": {"media_url": [url], "media_type": "image/png"}}
    async with server.client() as client:
        reply = await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", content=json.dumps(body))
    assert reply.status_code == 200, reply.text
    return str(reply.json()["job_ids"][0])


async def mirrored(api: httpx.AsyncClient, job_id: str) -> bool:
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    return bool(job["outputs"] and job["outputs"][0]["sha256"])


async def read_until(
    api: httpx.AsyncClient, last_job: str, *, params: dict[str, str], headers: dict[str, str] | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """The events of one stream, as (id, job), up to and including the event of `last_job`."""
    events: list[tuple[int, dict[str, Any]]] = []
    async with asyncio.timeout(15):
        async with aconnect_sse(api, "GET", "/v1/events", params=params, headers=headers or {}) as source:
            assert source.response.status_code == 200
            async for sse in source.aiter_sse():
                events.append((int(sse.id), json.loads(sse.data)))
                if events[-1][1]["id"] == last_job:
                    return events
    raise AssertionError("stream ended")


async def test_since_replays_by_completion_time_then_goes_live(tmp_path: Path, store_url: str) -> None:
    now = [T0 + 0.5]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    settings = make_settings(
        tmp_path,
        database_url=store_url,
        media_url=str(tmp_path / "media"),
        media_allow_private=True,
        public_url=f"http://127.0.0.1:{sock.getsockname()[1]}",
    )
    async with (
        held_origin() as origin,
        serve_app(create_app(settings, clock=lambda: now[0]), sock=sock) as server,
        server.api() as api,
    ):
        a = await finish(server, "since_a", origin.url("/now/a"))  # completed at T0
        await eventually(lambda: mirrored(api, a), what="a's event")
        now[0] = T0 + 10.5
        b = await finish(server, "since_b", origin.url("/now/b"))  # T0 + 10
        await eventually(lambda: mirrored(api, b), what="b's event")
        now[0] = T0 + 20.5
        c = await finish(server, "since_c", origin.url("/held/c"))  # completed at T0 + 20 ...
        now[0] = T0 + 40.5
        origin.release.set()
        await eventually(lambda: mirrored(api, c), what="c's event")  # ... its event written at T0 + 40
        now[0] = T0 + 50.5
        d = await finish(server, "since_d", origin.url("/now/d"))  # T0 + 50
        await eventually(lambda: mirrored(api, d), what="d's event")

        everything = await read_until(api, d, params={"since": iso_time(T0)})
        assert [job["id"] for _, job in everything] == [a, b, c, d]
        assert [job["completed_at"] for _, job in everything] == [iso_time(T0 + n) for n in (0, 10, 20, 50)]
        ids = {job["id"]: seq for seq, job in everything}

        cases = {
            iso_time(T0 + 10): [b, c, d],
            "1970-01-01T00:00:00Z": [a, b, c, d],
            # c's event was written at T0 + 40, but c completed at T0 + 20: before `since`.
            iso_time(T0 + 30): [d],
            iso_time(T0 + 20): [c, d],
            # b shows completed_at T0 + 10, before T0 + 10.2: never replayed (nor is a, shown T0).
            "2030-03-17T17:46:50.200Z": [c, d],
        }
        assert iso_time(T0 + 10) == "2030-03-17T17:46:50Z"
        for since, expected in cases.items():
            got = await read_until(api, d, params={"since": since})
            assert [job["id"] for _, job in got] == expected, since

        # Resumed with Last-Event-ID (as an EventSource reconnects, keeping its URL): on from there.
        got = await read_until(api, d, params={"since": iso_time(T0 + 10)}, headers={"Last-Event-ID": str(ids[b])})
        assert [job["id"] for _, job in got] == [c, d]

        # Then live: a job completed after the replay arrives on the same stream.
        seen: list[str] = []
        async with asyncio.timeout(15):
            async with aconnect_sse(api, "GET", "/v1/events", params={"since": iso_time(T0 + 30)}) as source:
                async for sse in source.aiter_sse():
                    seen.append(json.loads(sse.data)["id"])
                    if seen == [d]:
                        now[0] = T0 + 60.5
                        e = await finish(server, "since_e", origin.url("/now/e"))
                    elif len(seen) == 2:
                        break
        assert seen == [d, e]


async def test_since_must_be_a_time(server: RunningServer) -> None:
    async with server.api() as api:
        reply = await api.get("/v1/events", params={"since": "yesterday"})
    assert reply.status_code == 422, reply.text
    assert reply.json()["fields"][0]["field"] == "since"
