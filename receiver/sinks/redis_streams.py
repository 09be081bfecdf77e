"""Redis Streams: `XADD <stream> <event id>-0`, so the stream never holds an event twice (a repeat of
an id already there is refused by Redis; it counts as published when that entry is the same event).

A batch is one write of XADDs framed here (RESP) on the client's connection, and the replies are read in
order: redis-py's pipeline encodes every argument of every command in Python, which costs more per
message than everything else the publisher does."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError

from receiver.sinks.base import Outgoing, Published
from receiver.sinks.urls import SinkSpec
from receiver.tuning import SINKS

# Errors of a server that will take the write later (full memory, loading, a replica, failover).
_TRANSIENT = ("OOM", "LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")


def xadds(spec: SinkSpec, batch: list[Outgoing]) -> bytes:
    """The batch's XADD commands as RESP, as redis-py would pack `xadd(target, {type, subject, event},
    id="<seq>-0", maxlen=spec.maxlen, approximate=True)` for each."""
    head = [b"XADD", spec.target.encode()] + ([b"MAXLEN", b"~", b"%d" % spec.maxlen] if spec.maxlen else [])
    prefix = b"*%d\r\n%s" % (len(head) + 7, b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in head))
    frames = []
    for item in batch:
        event = item.event
        entry_id, job_id, kind = b"%d-0" % event.seq, event.job_id.encode(), event.type.encode()
        frames.append(
            b"%s$%d\r\n%s\r\n$4\r\ntype\r\n$%d\r\n%s\r\n$7\r\nsubject\r\n$%d\r\n%s\r\n$5\r\nevent\r\n$%d\r\n"
            % (prefix, len(entry_id), entry_id, len(kind), kind, len(job_id), job_id, len(item.body))
        )
        frames.append(item.body)
        frames.append(b"\r\n")
    return b"".join(frames)


class RedisBroker:
    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self._client: aioredis.Redis | None = None

    async def connect(self) -> None:
        client = aioredis.Redis.from_url(
            self.spec.server_url,
            socket_connect_timeout=SINKS.connect_timeout_s,
            socket_timeout=SINKS.ack_timeout_s,
            retry_on_timeout=False,
            single_connection_client=True,
        )
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client

    async def publish(self, batch: list[Outgoing]) -> Published:
        client = self._client
        assert client is not None, "connect() first"
        connection = client.connection
        assert isinstance(connection, Connection), "connect() first"
        results: list[Any] = await asyncio.wait_for(self._xadds(connection, batch), SINKS.ack_timeout_s * 2)
        acked = 0
        for item, result in zip(batch, results):
            if isinstance(result, ResponseError):
                text = str(result)
                if text.startswith(_TRANSIENT):
                    raise result
                if "equal or smaller" in text and await self._holds(client, item):
                    acked += 1
                    continue
                if "equal or smaller" in text:
                    text = (
                        f"the stream already holds ids above {item.event.seq}-0 but not this event "
                        "(was it reused, or trimmed past it?)"
                    )
                return Published(acked, f"event {item.event.seq} refused: {text}")
            if isinstance(result, Exception):
                raise result
            acked += 1
        return Published(acked)

    async def _xadds(self, connection: Connection, batch: list[Outgoing]) -> list[Any]:
        """Every XADD of the batch in one write; their replies in order (an error reply as its exception)."""
        await connection.send_packed_command(xadds(self.spec, batch), check_health=False)
        results: list[Any] = []
        for _ in batch:
            try:
                # No timeout per reply (its context manager costs more than the reply): the batch has one.
                results.append(await connection.read_response(timeout=math.inf))
            except ResponseError as exc:
                results.append(exc)
        return results

    async def _holds(self, client: aioredis.Redis, item: Outgoing) -> bool:
        """Whether the stream already has this event at its id (a repeat after an unacknowledged write): the
        same type and job. Not the same bytes: another replica, or a changed RECEIVER_PUBLIC_URL, may have
        written it with another `source`."""
        entry_id = f"{item.event.seq}-0"
        entries: Any = await client.xrange(self.spec.target, min=entry_id, max=entry_id, count=1)
        if not entries or not entries[0][1]:
            return False
        fields = entries[0][1]
        return bool(
            fields.get(b"type") == item.event.type.encode() and fields.get(b"subject") == item.event.job_id.encode()
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.aclose(), SINKS.connect_timeout_s)
            except Exception:  # closing a broken connection: nothing to save
                pass
