"""Events as `receiver listen` reads them from `/v1/events` and forwards them: parsing, ids, bodies."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import orjson
from httpx_sse import ServerSentEvent

from receiver.models import envelope, iso_time

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_EVENT_ID = 2**63 - 1  # the largest id /v1/events hands out (a signed 64-bit sequence)


@dataclass(frozen=True, slots=True)
class SourceEvent:
    id: int
    type: str
    data: dict[str, Any]

    @property
    def job_id(self) -> str:
        value = self.data.get("id")
        return value if isinstance(value, str) else "-"

    @property
    def provider(self) -> str:
        value = self.data.get("provider")
        return value if isinstance(value, str) else "-"

    @property
    def webhook_id(self) -> str:
        """Stable per event; the job id keeps it unique when a replaced store reuses event ids."""
        return f"evt_{self.id}_{self.job_id}" if _SAFE_ID.fullmatch(self.job_id) else f"evt_{self.id}"

    def body(self) -> bytes:
        """The callback body; its timestamp is the job's completion, so a re-sent event is the same bytes."""
        completed = self.data.get("completed_at")
        return envelope(self.type, completed if isinstance(completed, str) else iso_time(time.time()), self.data)


def parse_id(raw: str) -> int | None:
    """An event id as the stream hands them out (ASCII digits, at most MAX_EVENT_ID), else None; 0 is no id."""
    raw = raw.strip()
    # isascii: str.isdigit() also accepts digits int() refuses ("²").
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return None
    value = int(raw)
    return value if 0 < value <= MAX_EVENT_ID else None


def parse_event_id(sse: ServerSentEvent) -> int | None:
    return parse_id(sse.id or "")


def parse_event(event_id: int, sse: ServerSentEvent) -> SourceEvent:
    """The event with `event_id`; ValueError when its data is not a JSON object."""
    try:
        data = orjson.loads(sse.data)
    except orjson.JSONDecodeError:
        raise ValueError("its data is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("its data is not a JSON object")
    return SourceEvent(event_id, sse.event or "message", data)


def parse_ahead(body: bytes) -> int | None:
    """The newest event id from a 409 `last_event_id_ahead` answer, or None if it is not one."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or value.get("error") != "last_event_id_ahead":
        return None
    newest = value.get("last_event_id")
    return newest if isinstance(newest, int) and not isinstance(newest, bool) and newest >= 0 else None
