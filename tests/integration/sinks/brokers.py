"""The brokers the sink tests publish to: reachability (skip, or fail under RECEIVER_REQUIRE_BROKERS=1),
a stream/subject/exchange of the test's own, and everything the broker holds of it, read back."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

BROKERS_REQUIRED = os.environ.get("RECEIVER_REQUIRE_BROKERS") == "1"
PORTS = {"nats": 4222, "redis": 6379, "amqp": 5672}


async def reachable(kind: str) -> str | None:
    """None when the broker answers on its port, else why not."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", PORTS[kind]), 3)
    except (TimeoutError, OSError) as exc:
        return f"no {kind} broker on 127.0.0.1:{PORTS[kind]} ({type(exc).__name__}: {exc})"
    writer.close()
    return None


async def require(kind: str) -> None:
    problem = await reachable(kind)
    if problem is not None:
        if BROKERS_REQUIRED:
            pytest.fail(problem)
        pytest.skip(problem)


@dataclass
class Received:
    """One message as the broker holds it: the CloudEvent and the broker's own id for it."""

    event: dict[str, Any]
    broker_id: str
    raw: dict[str, Any]


class TestBroker:
    """A sink of the test's own (random name) on one broker; `url(port)` points the receiver at it."""

    __test__ = False

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.suffix = uuid.uuid4().hex[:10]
        self.name = {"nats": f"T{self.suffix}", "redis": f"test:{self.suffix}", "amqp": f"test-{self.suffix}"}[kind]
        self.prefix = f"t{self.suffix}"
        self._amqp: Any = None
        self._queue: Any = None
        self._got: list[Received] = []

    @property
    def sink_name(self) -> str:
        return f"{self.kind}:{self.name}"

    def url(self, port: int | None = None) -> str:
        port = port or PORTS[self.kind]
        if self.kind == "nats":
            return f"nats://127.0.0.1:{port}/{self.prefix}?stream={self.name}"
        if self.kind == "redis":
            return f"redis://127.0.0.1:{port}/0?stream={self.name}"
        return f"amqp://guest:guest@127.0.0.1:{port}/?exchange={self.name}"

    async def setup(self) -> None:
        if self.kind == "amqp":  # a queue of the test's own, bound before anything is published
            import aio_pika

            self._amqp = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
            channel = await self._amqp.channel()
            exchange = await channel.declare_exchange(self.name, aio_pika.ExchangeType.TOPIC, durable=True)
            self._queue = await channel.declare_queue(exclusive=True)
            await self._queue.bind(exchange, "#")

    async def messages(self) -> list[Received]:
        """Everything the broker holds (AMQP: everything delivered so far), in the broker's order."""
        if self.kind == "nats":
            import nats

            nc = await nats.connect("nats://127.0.0.1:4222")
            try:
                js = nc.jetstream()
                info = await js.stream_info(self.name)
                out = []
                for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else []:
                    msg = await js.get_msg(self.name, seq)
                    out.append(
                        Received(
                            orjson.loads(msg.data or b"{}"),
                            (msg.headers or {}).get("Nats-Msg-Id", ""),
                            {"subject": msg.subject, "headers": dict(msg.headers or {})},
                        )
                    )
                return out
            finally:
                await nc.close()
        if self.kind == "redis":
            import redis.asyncio as aioredis

            client = aioredis.Redis()
            try:
                entries = await client.xrange(self.name)
            finally:
                await client.aclose()
            return [
                Received(
                    orjson.loads(fields[b"event"]),
                    entry_id.decode(),
                    {k.decode(): v.decode() for k, v in fields.items()},
                )
                for entry_id, fields in entries
            ]
        while True:
            msg = await self._queue.get(no_ack=True, fail=False, timeout=5)
            if msg is None:
                break
            self._got.append(
                Received(
                    orjson.loads(msg.body),
                    msg.message_id or "",
                    {
                        "routing_key": msg.routing_key,
                        "content_type": msg.content_type,
                        "delivery_mode": int(msg.delivery_mode or 0),
                    },
                )
            )
        return list(self._got)

    async def cleanup(self) -> None:
        if self.kind == "nats":
            import nats
            import nats.js.errors

            nc = await nats.connect("nats://127.0.0.1:4222")
            try:
                try:
                    await nc.jetstream().delete_stream(self.name)
                except nats.js.errors.NotFoundError:
                    pass
            finally:
                await nc.close()
        elif self.kind == "redis":
            import redis.asyncio as aioredis

            client = aioredis.Redis()
            try:
                await client.delete(self.name)
            finally:
                await client.aclose()
        elif self._amqp is not None:
            channel = await self._amqp.channel()
            await channel.exchange_delete(self.name)
            await self._amqp.close()
