"""One callback attempt (`receiver.delivery.client.send`) against small raw servers on loopback: every
way an answer can go wrong is an `AttemptResult` with a short text, never an exception."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import standardwebhooks

from receiver.delivery.client import ERROR_TEXT_CHARS, AttemptResult, open_session, send
from receiver.store.base import Message
from receiver.tuning import DeliveryLimits
from tests.support import SIGNING_SECRET, free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
WEBHOOK = standardwebhooks.Webhook(SIGNING_SECRET)


class RawServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.port = 0
        self.connections = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[RawServer]:
    raw = RawServer(handler)
    server = await asyncio.start_server(raw.serve, "127.0.0.1", 0)
    raw.port = server.sockets[0].getsockname()[1]
    try:
        yield raw
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


def answering(*chunks: bytes, keep_alive: bool = True, pause: float = 0.0) -> Handler:
    """Answer every request on a connection with `chunks`, `pause` seconds apart."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
                if pause:
                    await asyncio.sleep(pause)
            if not keep_alive:
                return

    return handle


def message(url: str) -> Message:
    return Message(1, "msg_test", "job_test", url, b'{"type":"job.succeeded"}', 0, "pending", 0.0)


async def attempt(url: str, *, timeout: float = 5.0) -> AttemptResult:
    async with open_session(DeliveryLimits()) as session:
        return await send(session, WEBHOOK, message(url), timeout=timeout)


async def test_a_2xx_is_delivered_and_the_connection_is_reused() -> None:
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    async with raw_server(answering(ok)) as server, open_session(DeliveryLimits()) as session:
        for _ in range(5):
            assert await send(session, WEBHOOK, message(server.url()), timeout=5) == AttemptResult(200, None)
    assert server.connections == 1  # each answer read whole, so its connection went back to the pool


async def test_an_error_answer_keeps_its_status_a_short_body_and_retry_after() -> None:
    big = b"x" * 1_000_000
    answer = b"HTTP/1.1 503 Busy\r\nretry-after: 7\r\ncontent-length: %d\r\n\r\n%s" % (len(big), big)
    async with raw_server(answering(answer)) as server:
        result = await attempt(server.url())
    assert result.status_code == 503 and result.retry_after == 7 and not result.permanent
    assert result.error is not None and result.error.startswith("HTTP 503: xxx")
    assert len(result.error) <= len("HTTP 503: ") + ERROR_TEXT_CHARS


async def test_a_2xx_whose_body_trickles_past_the_deadline_still_counts() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"
    async with raw_server(answering(head, *[b"x"] * 100, pause=0.1)) as server:
        assert await attempt(server.url(), timeout=0.5) == AttemptResult(200, None)


async def test_no_answer_in_time_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    async with raw_server(silent) as server:
        assert await attempt(server.url(), timeout=0.3) == AttemptResult(None, "timeout after 0.3s")


async def test_broken_answers_become_short_errors_without_addresses() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    cases: list[tuple[Handler, AttemptResult]] = [
        (answering(b"NOT HTTP AT ALL\r\n\r\n", keep_alive=False), AttemptResult(None, "unreadable HTTP answer")),
        (hang_up, AttemptResult(None, "connection closed before an answer")),
        (
            answering(b"HTTP/1.1 500 Oops\r\ncontent-length: 100\r\n\r\nshort", keep_alive=False),
            AttemptResult(500, "HTTP 500, then answer broken off"),
        ),
    ]
    for handler, expected in cases:
        async with raw_server(handler) as server:
            assert await attempt(server.url()) == expected
    port = free_port()  # nobody listens there
    refused = await attempt(f"http://127.0.0.1:{port}/x")
    assert refused == AttemptResult(None, "connection failed: Connection refused")


async def test_an_unusable_url_fails_for_good_without_repeating_it() -> None:
    for url in (
        "ftp://example.com/x?token=secret-1",
        "http://host:99999/?token=secret-1",
        "http:///path?token=secret-1",
    ):
        result = await attempt(url)
        assert result.permanent and result.status_code is None, url
        assert (
            result.error is not None
            and result.error.startswith("unusable callback URL")
            and "secret" not in result.error
        )


async def test_redirects_are_answers_not_followed() -> None:
    answer = b"HTTP/1.1 307 Moved\r\nlocation: http://127.0.0.1:1/elsewhere\r\ncontent-length: 0\r\n\r\n"
    async with raw_server(answering(answer)) as server:
        assert await attempt(server.url()) == AttemptResult(307, "HTTP 307")
