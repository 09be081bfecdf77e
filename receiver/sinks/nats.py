"""NATS JetStream: subject `<prefix>.<type>`, header `Nats-Msg-Id` = event id (JetStream drops a repeat
within the stream's duplicate window and acknowledges it as a duplicate).

A batch is pipelined by hand: every message is published with a reply subject under one inbox of ours
and the acks are matched to them as they come, with no task, request or future per message (nats-py's
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

NO_RESPONDERS = b'{"error":{"code":503,"description":"no stream answered (is it gone?)"}}'
UNREADABLE = {"code": 500, "description": "an unreadable acknowledgement"}


class _Acks:
    """A batch's acknowledgements as they come: each message's reply by its place, and one future for all."""

    __slots__ = ("done", "left", "replies")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.left = 0
        self.replies: list[bytes | None] = []


def _error(reply: bytes) -> dict[str, Any] | None:
    """The JetStream error an acknowledgement carries, None for a stored message (or a duplicate of one)."""
    try:
        ack = orjson.loads(reply)
    except orjson.JSONDecodeError:
        return UNREADABLE
    error = ack.get("error") if isinstance(ack, dict) else UNREADABLE
    return error if error is None or isinstance(error, dict) else {"description": str(error)}


class NatsBroker:
    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self._nc: Client | None = None
        self._inbox = ""
        self._waiting: dict[str, tuple[_Acks, int]] = {}  # reply token → the batch and the message's place in it
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
        waiting = self._waiting.pop(msg.subject.rpartition(".")[2], None)
        if waiting is None:  # an earlier attempt's, or the batch gave up
            return
        acks, index = waiting
        acks.replies[index] = NO_RESPONDERS if msg.headers and msg.headers.get("Status") == "503" else msg.data
        acks.left -= 1
        if not acks.left and not acks.done.done():
            acks.done.set_result(None)

    async def publish(self, batch: list[Outgoing]) -> Published:
        nc = self._nc
        assert nc is not None, "connect() first"
        if not nc.is_connected:
            raise ConnectionError("the connection to NATS is closed")
        headers_tail = f"Nats-Expected-Stream: {self.spec.target}\r\nContent-Type: {CONTENT_TYPE}\r\n\r\n".encode()
        subject_head, reply_head = f"{self.spec.prefix}.", f"{self._inbox}."
        limit = nc.max_payload
        acks = _Acks(asyncio.get_running_loop().create_future())
        tokens: list[str] = []
        frames: list[bytes] = []
        refused: str | None = None
        try:
            for item in batch:
                event = item.event
                token = f"{event.seq}_{next(self._tokens)}"  # an ack of an earlier attempt never counts
                headers = b"NATS/1.0\r\nNats-Msg-Id: %d\r\n%s" % (event.seq, headers_tail)
                size = len(headers) + len(item.body)
                if size > limit:  # the server would close the connection over it
                    refused = f"event {event.seq} refused: too large for the server ({size} > {limit} bytes)"
                    break
                self._waiting[token] = (acks, len(tokens))
                tokens.append(token)
                frames.append(f"HPUB {subject_head}{event.type} {reply_head}{token} {len(headers)} {size}\r\n".encode())
                frames.append(headers)
                frames.append(item.body)
                frames.append(b"\r\n")
            if not tokens:
                return Published(0, refused)
            acks.replies = [None] * len(tokens)
            acks.left = len(tokens)
            # nats-py's own write path (its pending buffer and flusher): no public call takes framed commands.
            await nc._send_command(b"".join(frames))
            await nc._flush_pending()
            # One wake-up for the batch: the acks are only counted as they come, and read once all are in.
            await asyncio.wait([acks.done], timeout=SINKS.ack_timeout_s)
            acked = 0
            for reply, item in zip(acks.replies, batch):
                if reply is None:
                    raise TimeoutError(f"no acknowledgement of event {item.event.seq} within {SINKS.ack_timeout_s:g} s")
                error = _error(reply)
                if error is not None:  # a duplicate is acknowledged without one ("duplicate": true)
                    code = int(error.get("code") or 0)
                    text = f"event {item.event.seq} refused: {error.get('description') or error}"
                    if 400 <= code < 500:
                        return Published(acked, text)
                    raise ConnectionError(text)
                acked += 1
            return Published(acked, refused)
        finally:
            for token in tokens:
                self._waiting.pop(token, None)
            acks.done.cancel()

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        self._waiting.clear()
        if nc is not None:
            try:
                await asyncio.wait_for(nc.close(), SINKS.connect_timeout_s)
            except Exception:  # closing a broken connection: nothing to save
                pass
