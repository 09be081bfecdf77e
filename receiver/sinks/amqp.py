"""RabbitMQ (AMQP 0-9-1): a durable topic exchange, routing key = event type, persistent messages with
`message_id` = event id, publisher confirms."""

from __future__ import annotations

import asyncio

import aio_pika
import aiormq
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from pamqp import commands as spec

from receiver.sinks.base import Outgoing, Published
from receiver.sinks.envelope import CONTENT_TYPE
from receiver.sinks.urls import SinkSpec
from receiver.tuning import SINKS

WINDOW = 500  # messages in flight at once: each is a task of aiormq's, and RabbitMQ confirms at its pace anyway


class AmqpBroker:
    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._raw: aiormq.Channel | None = None

    async def connect(self) -> None:
        # A plain (not robust) connection: the loop reconnects and publishes again from the position.
        connection = self._connection = await aio_pika.connect(self.spec.server_url, timeout=SINKS.connect_timeout_s)
        self._channel = await connection.channel(publisher_confirms=True, on_return_raises=False)
        self._exchange = await self._channel.declare_exchange(
            self.spec.target, aio_pika.ExchangeType.TOPIC, durable=True, timeout=SINKS.ack_timeout_s
        )
        # Published on aiormq's channel itself with wait=False: aio-pika's `publish` holds the channel's lock
        # until each message is written to the socket, so a batch would go out one write at a time.
        raw = await self._channel.get_underlay_channel()
        assert isinstance(raw, aiormq.Channel)
        self._raw = raw

    async def publish(self, batch: list[Outgoing]) -> Published:
        acked = 0
        for start in range(0, len(batch), WINDOW):
            result = await self._publish(batch[start : start + WINDOW])
            acked += result.acked
            if result.refused is not None or result.acked < len(batch[start : start + WINDOW]):
                return Published(acked, result.refused)
        return Published(acked)

    async def _publish(self, batch: list[Outgoing]) -> Published:
        raw = self._raw
        assert raw is not None, "connect() first"
        # Pipelined: every message goes out before the first confirm is awaited; confirms come in order.
        tasks = [
            asyncio.ensure_future(
                raw.basic_publish(
                    item.body,
                    exchange=self.spec.target,
                    routing_key=item.event.type,
                    mandatory=False,
                    wait=False,
                    timeout=SINKS.ack_timeout_s,
                    properties=spec.Basic.Properties(
                        content_type=CONTENT_TYPE,
                        delivery_mode=2,
                        message_id=str(item.event.seq),
                        message_type=item.event.type,
                    ),
                )
            )
            for item in batch
        ]
        acked = 0
        try:
            for item, task in zip(batch, tasks):
                try:
                    await task
                except aiormq.exceptions.ChannelPreconditionFailed as exc:  # e.g. over max_message_size
                    return Published(acked, f"event {item.event.seq} refused: {exc}")
                except aiormq.exceptions.DeliveryError as exc:  # nack: the broker could not take it
                    raise ConnectionError(f"event {item.event.seq} not confirmed: {exc}") from None
                acked += 1
        finally:
            for task in tasks[acked:]:
                task.cancel()
            await asyncio.gather(*tasks[acked:], return_exceptions=True)
        return Published(acked)

    async def close(self) -> None:
        connection, self._connection, self._channel, self._exchange, self._raw = (
            self._connection,
            None,
            None,
            None,
            None,
        )
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), SINKS.connect_timeout_s)
            except Exception:  # closing a broken connection: nothing to save
                pass
