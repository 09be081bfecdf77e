"""A media origin on loopback, speaking raw HTTP/1.1 so it can misbehave: trickle, lie about its
Content-Length, redirect in loops or to refused places, send HTML or more than asked, hang."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import Counter
from collections.abc import AsyncIterator

CHUNK = 64 * 1024
# Hostile "image": run on the receiver's origin, its script would read the inspector's token.
SVG_WITH_SCRIPT = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>'
    b'new Image().src = "/leak?t=" + sessionStorage.getItem("receiver.apiToken");'
    b'document.title = "pwned";</script></svg>'
)


def image_bytes(n: int, seed: str = "img") -> bytes:
    """Deterministic bytes of length n (a fake image)."""
    block = hashlib.sha256(seed.encode()).digest() * 2048
    return (block * (n // len(block) + 1))[:n]


class Origin:
    """Paths: /img/<n>[-<seed>] (n bytes of image/png), /big/<n> (streamed), /html, /chunked/<n> (no length),
    /trickle, /liar, /loop, /redirect?to=<url>, /status/<code>, /flaky/<k> (503 k times, then an image),
    /hang-once (the first request hangs mid-body), /octet (application/octet-stream), /svg (an SVG whose
    script would send the inspector's token to /leak)."""

    def __init__(self) -> None:
        self.port = 0
        self.hits: Counter[str] = Counter()
        self.hanging = asyncio.Event()  # set once /hang-once is hanging

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            self.hits[target] += 1
            await self.answer(target, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, IndexError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    @staticmethod
    async def head(writer: asyncio.StreamWriter, status: str, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()

    async def answer(self, target: str, writer: asyncio.StreamWriter) -> None:
        path, _, query = target.partition("?")
        parts = path.strip("/").split("/")
        kind = parts[0]
        if kind == "img":
            n, _, seed = parts[1].partition("-")
            body = image_bytes(int(n), seed or "img")
            await self.head(writer, "200 OK", {"Content-Type": "image/png", "Content-Length": str(len(body))})
            writer.write(body)
        elif kind == "octet":
            body = image_bytes(3000, "octet")
            await self.head(
                writer, "200 OK", {"Content-Type": "application/octet-stream", "Content-Length": str(len(body))}
            )
            writer.write(body)
        elif kind == "big":
            total = int(parts[1])
            await self.head(writer, "200 OK", {"Content-Type": "image/png", "Content-Length": str(total)})
            block = image_bytes(CHUNK, "big")
            sent = 0
            while sent < total:
                piece = block[: min(CHUNK, total - sent)]
                writer.write(piece)
                await writer.drain()
                sent += len(piece)
        elif kind == "svg":
            await self.head(
                writer, "200 OK", {"Content-Type": "image/svg+xml", "Content-Length": str(len(SVG_WITH_SCRIPT))}
            )
            writer.write(SVG_WITH_SCRIPT)
        elif kind == "html":
            body = b"<html><body>not an image</body></html>"
            await self.head(
                writer, "200 OK", {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(body))}
            )
            writer.write(body)
        elif kind == "chunked":
            total = int(parts[1])
            await self.head(writer, "200 OK", {"Content-Type": "image/png", "Transfer-Encoding": "chunked"})
            sent = 0
            while sent < total:
                size = min(4096, total - sent)
                writer.write(f"{size:x}\r\n".encode() + image_bytes(size) + b"\r\n")
                await writer.drain()
                sent += size
            writer.write(b"0\r\n\r\n")
        elif kind == "trickle":
            await self.head(writer, "200 OK", {"Content-Type": "image/png", "Content-Length": "3000"})
            for _ in range(3000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.2)
        elif kind == "liar":
            await self.head(writer, "200 OK", {"Content-Type": "image/png", "Content-Length": "3000"})
            writer.write(b"only a few bytes")
        elif kind == "loop":
            await self.head(writer, "302 Found", {"Location": "/loop", "Content-Length": "0"})
        elif kind == "redirect":
            to = query.partition("to=")[2]
            from urllib.parse import unquote

            await self.head(writer, "302 Found", {"Location": unquote(to), "Content-Length": "0"})
        elif kind == "status":
            await self.head(writer, f"{int(parts[1])} Whatever", {"Content-Length": "0"})
        elif kind == "flaky":
            if self.hits[target] <= int(parts[1]):
                await self.head(writer, "503 Service Unavailable", {"Content-Length": "0"})
            else:
                body = image_bytes(2000, "flaky")
                await self.head(writer, "200 OK", {"Content-Type": "image/jpeg", "Content-Length": str(len(body))})
                writer.write(body)
        elif kind == "hang-once":
            body = image_bytes(200_000, "hang")
            await self.head(writer, "200 OK", {"Content-Type": "image/png", "Content-Length": str(len(body))})
            if self.hits[target] == 1:
                writer.write(body[:1000])
                await writer.drain()
                self.hanging.set()
                await asyncio.sleep(3600)
            writer.write(body)
        else:
            await self.head(writer, "404 Not Found", {"Content-Length": "0"})
        await writer.drain()


@contextlib.asynccontextmanager
async def media_origin() -> AsyncIterator[Origin]:
    origin = Origin()
    server = await asyncio.start_server(origin.handle, "127.0.0.1", 0)
    origin.port = server.sockets[0].getsockname()[1]
    try:
        yield origin
    finally:
        server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)
