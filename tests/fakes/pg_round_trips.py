"""A TCP proxy between a client and a real PostgreSQL server that counts round trips: the messages after
which a client waits for the server (Sync ends an extended-protocol exchange, Query a simple one). It
reads the client's side of the wire protocol (an SSLRequest and the startup message untyped, then one type
byte and a length per message) and forwards every byte unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

from tests.fakes.tcp_proxy import TcpProxy

_UNTYPED_FIRST = {80877103, 80877104}  # SSLRequest, GSSENCRequest: the startup message still follows
_WAITS = {b"S", b"Q"}  # Sync, Query


class RoundTripProxy(TcpProxy):
    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self.round_trips = 0

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The client's messages, counted and forwarded one by one."""
        try:
            typed = False
            while True:
                if typed:
                    head = await reader.readexactly(5)
                    kind, length = head[:1], struct.unpack("!I", head[1:])[0]
                    if kind in _WAITS:
                        self.round_trips += 1
                else:
                    head = await reader.readexactly(4)
                    length = struct.unpack("!I", head)[0]
                body = await reader.readexactly(length - 4)
                if not typed:
                    typed = struct.unpack("!I", body[:4])[0] not in _UNTYPED_FIRST
                writer.write(head + body)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass


@contextlib.asynccontextmanager
async def round_trip_proxy(target_host: str, target_port: int) -> AsyncIterator[RoundTripProxy]:
    proxy = await RoundTripProxy(target_host, target_port).start()
    try:
        yield proxy
    finally:
        await proxy.close()
