"""NATS JetStream: subject `<prefix>.<type>`, header `Nats-Msg-Id` = event id (JetStream drops a repeat
within the stream's duplicate window and acknowledges it as a duplicate).

A batch is pipelined by hand: every message is published with a reply subject under one inbox of ours
and the acks are matched to them as they come, with no task or request per message (nats-py's
`publish_async` would do the same, but its futures never see a JetStream error such as "message size
exceeds maximum allowed": it raises that inside its callback instead). The batch's HPUB commands are
framed here and handed to the client as one write: nats-py's `publish` builds and checks each message's
headers in Python, which costs more than everything else the publisher does per message."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import nats
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StorageType

from receiver.sinks.base import Outgoing, Published
from receiver.sinks.envelope import CONTENT_TYPE
from receiver.sinks.urls import SinkSpec
from receiver.tuning import SINKS

NO_RESPONDERS = {"error": {"code": 503, "description": "no stream answered (is it gone?)"}}


class NatsBroker:
    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self._nc: Client | None = None
        self._inbox = ""
        self._acks: dict[str, asyncio.Future[Any]] = {}
        self._tokens = itertools.count()

    async def connect(self) -> None:
        async def quiet(exc: Exception) -> None:  # the loop reports failures itself, without the URL
            return None

        # No reconnects inside the client: a broken connection surfaces as an error here, and the loop
        # publishes again from the stored position on a fresh one.
        nc = self._nc = await nats.connect(
            servers=[self.spec.server_url],
            allow_reconnect=False,
            connect_timeout=int(SINKS.connect_timeout_s),
            max_reconnect_attempts=0,
            error_cb=quiet,
            name="receiver-sink",
        )
        js = nc.jetstream(timeout=SINKS.ack_timeout_s)
        try:
            await js.stream_info(self.spec.target)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=self.spec.target, subjects=[f"{self.spec.prefix}.>"], storage=StorageType.FILE)
        self._inbox = nc.new_inbox()
        await nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)
        await nc.flush(int(SINKS.ack_timeout_s))  # the SUB is in before the first HPUB can be acknowledged

    async def _on_ack(self, msg: Msg) -> None:
        future = self._acks.pop(msg.subject.rpartition(".")[2], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_result(NO_RESPONDERS)
            return
        try:
            future.set_result(orjson.loads(msg.data))
        except orjson.JSONDecodeError:
            future.set_result({"error": {"code": 500, "description": "an unreadable acknowledgement"}})

    async def publish(self, batch: list[Outgoing]) -> Published:
        nc = self._nc
        assert nc is not None, "connect() first"
        loop = asyncio.get_running_loop()
        pending: list[tuple[str, asyncio.Future[Any]]] = []
        refused: str | None = None
        if not nc.is_connected:
            raise ConnectionError("the connection to NATS is closed")
        headers_tail = f"Nats-Expected-Stream: {self.spec.target}\r\nContent-Type: {CONTENT_TYPE}\r\n\r\n".encode()
        subject_head, reply_head = f"{self.spec.prefix}.", f"{self._inbox}."
        limit = nc.max_payload
        frames: list[bytes] = []
        try:
            for item in batch:
                event = item.event
                token = f"{event.seq}_{next(self._tokens)}"  # an ack of an earlier attempt never counts
                headers = b"NATS/1.0\r\nNats-Msg-Id: %d\r\n%s" % (event.seq, headers_tail)
                size = len(headers) + len(item.body)
                if size > limit:  # the server would close the connection over it
                    refused = f"event {event.seq} refused: too large for the server ({size} > {limit} bytes)"
                    break
                future: asyncio.Future[Any] = loop.create_future()
                self._acks[token] = future
                pending.append((token, future))
                frames.append(f"HPUB {subject_head}{event.type} {reply_head}{token} {len(headers)} {size}\r\n".encode())
                frames.append(headers)
                frames.append(item.body)
                frames.append(b"\r\n")
            if frames:
                # nats-py's own write path (its pending buffer and flusher): no public call takes framed commands.
                await nc._send_command(b"".join(frames))
                await nc._flush_pending()
            if pending:
                await asyncio.wait([f for _, f in pending], timeout=SINKS.ack_timeout_s)
            acked = 0
            for (_, future), item in zip(pending, batch):
                if not future.done():
                    raise TimeoutError(f"no acknowledgement of event {item.event.seq} within {SINKS.ack_timeout_s:g} s")
                error = future.result().get("error")
                if error is not None:  # a duplicate is acknowledged without one ("duplicate": true)
                    code = int(error.get("code") or 0)
                    text = f"event {item.event.seq} refused: {error.get('description') or error}"
                    if 400 <= code < 500:
                        return Published(acked, text)
                    raise ConnectionError(text)
                acked += 1
            return Published(acked, refused)
        finally:
            for token, future in pending:
                self._acks.pop(token, None)
                future.cancel()

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        self._acks.clear()
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), SINKS.connect_timeout_s)
            except Exception:  # closing a broken connection: nothing to save
                pass
