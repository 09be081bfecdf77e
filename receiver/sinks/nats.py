"""NATS JetStream: subject `<prefix>.<type>`, header `Nats-Msg-Id` = event id (JetStream drops a repeat
within the stream's duplicate window and acknowledges it as a duplicate)."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import StorageType
from nats.js.client import JetStreamContext

from receiver.sinks.base import ACK_TIMEOUT_S, CONNECT_TIMEOUT_S, Outgoing, Published
from receiver.sinks.envelope import CONTENT_TYPE
from receiver.sinks.urls import SinkSpec


class NatsBroker:
    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None

    async def connect(self) -> None:
        async def quiet(exc: Exception) -> None:  # the loop reports failures itself, without the URL
            return None

        # No reconnects inside the client: a broken connection surfaces as an error here, and the loop
        # publishes again from the stored position on a fresh one.
        self._nc = await nats.connect(
            servers=[self.spec.server_url], allow_reconnect=False, connect_timeout=int(CONNECT_TIMEOUT_S),
            max_reconnect_attempts=0, error_cb=quiet, name="receiver-sink",
        )
        self._js = self._nc.jetstream(timeout=ACK_TIMEOUT_S)
        try:
            await self._js.stream_info(self.spec.target)
        except nats.js.errors.NotFoundError:
            await self._js.add_stream(name=self.spec.target, subjects=[f"{self.spec.prefix}.>"],
                                      storage=StorageType.FILE)

    async def publish(self, batch: list[Outgoing]) -> Published:
        js = self._js
        assert js is not None, "connect() first"
        futures: list[asyncio.Future[Any]] = []
        refused: str | None = None
        try:
            for item in batch:  # pipelined: every message sent before the first ack is awaited
                futures.append(await js.publish_async(
                    f"{self.spec.prefix}.{item.event.type}", item.body, wait_stall=ACK_TIMEOUT_S,
                    stream=self.spec.target, headers={"Nats-Msg-Id": str(item.event.seq), "Content-Type": CONTENT_TYPE},
                ))
        except nats.errors.MaxPayloadError as exc:
            refused = f"message of event {batch[len(futures)].event.seq} refused: too large ({exc})"
        acked = 0
        try:
            for future in futures:
                try:
                    await asyncio.wait_for(future, ACK_TIMEOUT_S)
                except nats.js.errors.APIError as exc:
                    if exc.code is not None and 400 <= exc.code < 500 and not isinstance(
                            exc, nats.js.errors.NoStreamResponseError):
                        return Published(acked, f"event {batch[acked].event.seq} refused: {exc.description or exc}")
                    raise
                acked += 1
        finally:
            for future in futures[acked:]:
                future.cancel()
        return Published(acked, refused)

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), CONNECT_TIMEOUT_S)
            except Exception:  # closing a broken connection: nothing to save
                pass
