"""The events the sinks of this process publish, each with its CloudEvent, read from the store once for all
of them: they publish the same events at about the same time, so the second sink takes what the first one
read (or is reading) instead of reading and encoding it again."""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import deque

from receiver.sinks.base import Outgoing
from receiver.sinks.envelope import cloudevent
from receiver.store.base import Store


class _Run:
    """One read: every event after `position` up to the last one it holds, in order, none missing (the store
    never returns an event that one still to commit could precede, so the run stays true)."""

    __slots__ = ("items", "position", "seqs")

    def __init__(self, position: int, items: list[Outgoing]) -> None:
        self.position = position
        self.items = items
        self.seqs = [item.event.seq for item in items]

    def covers(self, position: int) -> bool:
        return self.position <= position < self.seqs[-1]

    def after(self, position: int, limit: int) -> list[Outgoing]:
        start = bisect_right(self.seqs, position)
        return self.items[start : start + limit]


class Feed:
    """`after(position, limit)` is `store.events_after` with each event's CloudEvent, served from the last few
    reads when one holds events after `position` (then possibly fewer than the store now has: the caller
    reads again for the rest), else read from the store, once for the sinks asking at the same time."""

    def __init__(self, store: Store, source: str, keep: int = 4) -> None:
        self.store = store
        self.source = source
        self._runs: deque[_Run] = deque(maxlen=keep)
        self._reading: dict[int, asyncio.Future[None]] = {}

    async def after(self, position: int, limit: int) -> list[Outgoing]:
        while True:
            for run in self._runs:
                if run.covers(position):
                    return run.after(position, limit)
            reading = self._reading.get(position)
            if reading is None:
                break
            await asyncio.wait([reading])  # another sink is reading from here: share its read (or read after it)
        done = self._reading[position] = asyncio.get_running_loop().create_future()
        try:
            events = await self.store.events_after(position, limit)
            items = [Outgoing(event, cloudevent(event, self.source)) for event in events]
            if items:
                self._runs.append(_Run(position, items))
            return items
        finally:
            del self._reading[position]
            done.set_result(None)
