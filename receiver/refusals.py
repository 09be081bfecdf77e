"""Refused inbound requests, kept for the inspector without slowing the answer.

The webhook door answers first and only hands a masked copy of what arrived to a bounded in-memory queue;
a background worker writes the queue in batches (`run_refusals`). Under a flood the queue drops what it
cannot hold (counted in `receiver_refusals_dropped_total`), and the store keeps only the newest
REFUSALS_KEPT, so neither memory nor the store grows with the flood.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from receiver.errors import StoreError
from receiver.store.refusal_rows import REFUSALS_KEPT, Refusal

if TYPE_CHECKING:
    from receiver.runtime import Runtime

log = logging.getLogger("receiver.refusals")

BODY_KEPT_BYTES = 64 * 1024
QUEUE_CAPACITY = 1000
QUEUE_BYTES = 8 * 1024 * 1024  # all a refusal holds (body, headers, path…): the count alone would allow far more
BATCH = 200
BATCH_BYTES = 1024 * 1024  # one write transaction's worth: the webhooks' commits share the store's writer


def weight(refusal: Refusal) -> int:
    """The bytes a queued refusal holds, roughly: every field a client chose."""
    return (
        len(refusal.body)
        + len(refusal.detail or "")
        + len(refusal.path)
        + len(refusal.query)
        + sum(len(k) + len(v) for k, v in refusal.headers.items())
    )


class RefusalQueue:
    """The bounded hand-off between the webhook door and the writer; `offer` never waits."""

    def __init__(self, capacity: int = QUEUE_CAPACITY, max_bytes: int = QUEUE_BYTES) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._bytes = 0
        self._items: collections.deque[Refusal] = collections.deque()
        self._arrived = asyncio.Event()
        self.on_drop: Callable[[], None] = lambda: None

    def offer(self, refusal: Refusal) -> bool:
        size = weight(refusal)
        if len(self._items) >= self.capacity or self._bytes + size > self.max_bytes:
            self.on_drop()
            return False
        self._bytes += size
        self._items.append(refusal)
        self._arrived.set()
        return True

    def take(self, limit: int, max_bytes: int = BATCH_BYTES) -> list[Refusal]:
        """Up to `limit` refusals and about `max_bytes` (always at least one)."""
        taken: list[Refusal] = []
        size = 0
        while self._items and len(taken) < limit and (not taken or size + weight(self._items[0]) <= max_bytes):
            refusal = self._items.popleft()
            size += weight(refusal)
            taken.append(refusal)
        self._bytes -= size
        if not self._items:
            self._arrived.clear()
        return taken

    async def wait(self) -> None:
        await self._arrived.wait()

    def __len__(self) -> int:
        return len(self._items)


async def run_refusals(runtime: Runtime) -> None:
    """Write queued refusals in batches; a store that fails loses that batch (logged), never the answer."""
    queue = runtime.refusals
    queue.on_drop = runtime.metrics.refusals_dropped.inc
    failing = False
    while not runtime.stopping.is_set():
        await queue.wait()
        batch = queue.take(BATCH)
        if not batch:
            continue
        try:
            await runtime.store.record_refusals(batch, keep=REFUSALS_KEPT)
            runtime.metrics.refusals_recorded.inc(len(batch))
            if failing:
                log.info("refused requests are recorded again")
                failing = False
        except StoreError as exc:
            runtime.metrics.refusals_dropped.inc(len(batch))
            if not failing:
                log.warning("could not record %d refused requests: %s", len(batch), exc)
                failing = True
            await asyncio.sleep(1.0)
        except Exception:  # a refusal the store cannot take must not end the worker: that batch is dropped
            runtime.metrics.refusals_dropped.inc(len(batch))
            log.exception("could not record %d refused requests; they are dropped", len(batch))
        await asyncio.sleep(0)  # the webhooks' commits go between two batches
