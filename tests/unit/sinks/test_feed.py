"""The sinks' shared feed: one store read and one CloudEvent per event for all the sinks of a process, and
exactly the events the store gives after a position, in order, whoever read them first."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from receiver.sinks.envelope import cloudevent
from receiver.sinks.feed import Feed
from receiver.store.base import Event, Store

SOURCE = "https://r.example"
JOB = '{"id":"j%d","provider":"pixazo","completed_at":"2026-01-01T00:00:00Z"}'


class Events:
    """A store's `events_after` over a list that grows, the ids with gaps (a rolled-back sequence value)."""

    def __init__(self, seqs: list[int]) -> None:
        self.events = [Event(s, f"j{s}", "job.succeeded", JOB % s) for s in seqs]
        self.reads: list[tuple[int, int]] = []
        self.gate: asyncio.Event | None = None

    async def events_after(self, seq: int, limit: int) -> list[Event]:
        self.reads.append((seq, limit))
        if self.gate is not None:
            await self.gate.wait()
        return [e for e in self.events if e.seq > seq][:limit]


def feed_of(store: Events, keep: int = 4) -> Feed:
    return Feed(cast(Store, store), SOURCE, keep=keep)


def seqs(items: list[Any]) -> list[int]:
    return [item.event.seq for item in items]


async def test_a_second_sink_takes_the_first_ones_read_and_bytes() -> None:
    store = Events([1, 2, 4, 5, 7])
    feed = feed_of(store)
    first = await feed.after(0, 10)
    assert seqs(first) == [1, 2, 4, 5, 7]
    assert [item.body for item in first] == [cloudevent(item.event, SOURCE) for item in first]
    second = await feed.after(0, 10)
    assert [item.body for item in second] == [item.body for item in first]
    assert all(a.body is b.body for a, b in zip(first, second))  # the very bytes: made once
    assert seqs(await feed.after(2, 2)) == [4, 5]  # a sink between two events, a smaller batch
    assert seqs(await feed.after(3, 10)) == [4, 5, 7]  # a position in a gap of the ids
    assert store.reads == [(0, 10)]


async def test_a_sink_at_the_end_of_what_was_read_reads_the_store() -> None:
    store = Events([1, 2, 3])
    feed = feed_of(store)
    assert seqs(await feed.after(0, 2)) == [1, 2]
    store.events += [Event(s, f"j{s}", "job.succeeded", JOB % s) for s in (4, 5)]
    assert seqs(await feed.after(0, 10)) == [1, 2]  # what that read holds; the rest comes with the next read
    assert seqs(await feed.after(2, 10)) == [3, 4, 5]
    assert seqs(await feed.after(5, 10)) == []  # nothing new: the store's word, never a kept read's
    assert store.reads == [(0, 2), (2, 10), (5, 10)]


async def test_sinks_asking_at_once_share_one_read() -> None:
    store = Events([1, 2, 3])
    store.gate = asyncio.Event()
    feed = feed_of(store)
    reads = [asyncio.create_task(feed.after(0, 10)) for _ in range(3)]
    await asyncio.sleep(0.01)
    store.gate.set()
    results = await asyncio.gather(*reads)
    assert [seqs(r) for r in results] == [[1, 2, 3]] * 3
    assert store.reads == [(0, 10)]


async def test_a_failed_or_empty_read_is_not_shared() -> None:
    store = Events([])
    store.gate = asyncio.Event()
    feed = feed_of(store)
    reads = [asyncio.create_task(feed.after(0, 10)) for _ in range(2)]
    await asyncio.sleep(0.01)
    store.events = [Event(1, "j1", "job.succeeded", JOB % 1)]
    store.gate.set()
    assert [seqs(r) for r in await asyncio.gather(*reads)] == [[1], [1]]

    class Broken(Events):
        async def events_after(self, seq: int, limit: int) -> list[Event]:
            self.reads.append((seq, limit))
            raise ConnectionError("the store is away")

    broken = feed_of(Broken([1]))
    for _ in range(2):
        try:
            await broken.after(0, 10)
        except ConnectionError:
            pass
        else:
            raise AssertionError("a failed read returned events")


async def test_only_the_last_reads_are_kept() -> None:
    store = Events(list(range(1, 11)))
    feed = feed_of(store, keep=2)
    for position in (0, 2, 4):
        await feed.after(position, 2)
    assert seqs(await feed.after(0, 2)) == [1, 2]  # read again: that run was let go
    assert store.reads == [(0, 2), (2, 2), (4, 2), (0, 2)]
