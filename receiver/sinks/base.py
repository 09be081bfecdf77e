"""What every broker module offers the publisher loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from receiver.store.base import Event


@dataclass(frozen=True, slots=True)
class Outgoing:
    event: Event
    body: bytes  # the CloudEvent


@dataclass(frozen=True, slots=True)
class Published:
    """How a batch went: its first `acked` messages were acknowledged (a broker's duplicate counts);
    `refused` says why the next one was refused for good (the sink stops there), else None."""

    acked: int
    refused: str | None = None


class Broker(Protocol):
    """One connection to one sink's broker. Any exception from `connect` or `publish` means "down or
    slow: reconnect later and publish again from the position" (repeats carry the same id)."""

    async def connect(self) -> None: ...
    async def publish(self, batch: list[Outgoing]) -> Published: ...
    async def close(self) -> None: ...
