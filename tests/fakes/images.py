"""A provider CDN on loopback serving real, decodable PNG images (for a browser to render); records each fetch."""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import serve_app


def png(width: int, height: int) -> bytes:
    """A real RGB PNG: a diagonal gradient, so a screenshot shows something."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type None
        for x in range(width):
            rows += bytes((40 + 180 * x // width, 90 + 120 * y // height, 200 - 120 * (x + y) // (width + height)))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


class FakeCDN:
    """`GET /{name}.png` answers a `size`-pixel square PNG; every path asked for is kept in `fetched`."""

    def __init__(self, size: int = 160) -> None:
        self.image = png(size, size)
        self.fetched: list[str] = []
        self.base_url = ""
        self.app = Starlette(routes=[Route("/{name:path}", self._image)])

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}.png"

    async def _image(self, request: Request) -> Response:
        self.fetched.append(request.url.path)
        return Response(self.image, media_type="image/png")


@contextlib.asynccontextmanager
async def fake_cdn(size: int = 160) -> AsyncIterator[FakeCDN]:
    cdn = FakeCDN(size)
    async with serve_app(cdn.app) as running:
        cdn.base_url = running.base_url
        yield cdn
