"""NATS JetStream: subject `<prefix>.<type>`, header `Nats-Msg-Id` = event id (JetStream drops a repeat
within the stream's duplicate window and acknowledges it as a duplicate)."""

from __future__ import annotations

import asyncio
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
        # Pipelined: one request each, all started before the first ack is awaited (tasks run, and so
        # write, in the order they were made). Not `publish_async`: its futures never see a JetStream
        # error such as "message size exceeds maximum allowed" (nats-py raises it in a callback instead).
        tasks = [asyncio.ensure_future(js.publish(
            f"{self.spec.prefix}.{item.event.type}", item.body, timeout=ACK_TIMEOUT_S, stream=self.spec.target,
            headers={"Nats-Msg-Id": str(item.event.seq), "Content-Type": CONTENT_TYPE})) for item in batch]
        acked = 0
        try:
            for item, task in zip(batch, tasks):
                try:
                    await task  # a PubAck; `duplicate` when JetStream already held this id: published too
                except nats.errors.MaxPayloadError as exc:
                    return Published(acked, f"event {item.event.seq} refused: too large for the server ({exc})")
                except nats.js.errors.APIError as exc:
                    if isinstance(exc, nats.js.errors.NoStreamResponseError) or not (
                            exc.code is not None and 400 <= exc.code < 500):
                        raise
                    return Published(acked, f"event {item.event.seq} refused: {exc.description or exc}")
                acked += 1
        finally:
            for task in tasks[acked:]:
                task.cancel()
            await asyncio.gather(*tasks[acked:], return_exceptions=True)
        return Published(acked)

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), CONNECT_TIMEOUT_S)
            except Exception:  # closing a broken connection: nothing to save
                pass
