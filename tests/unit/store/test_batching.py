"""The group commit, alone: which writes share a transaction."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from receiver.errors import StoreError
from receiver.models import Receipt
from receiver.store.batching import MAX_BATCH, GroupCommit, Item, Write


def _write(n: int) -> Write:
    return Write(Receipt(provider="pixazo", source="webhook", body=str(n).encode()), [], None)


async def test_writes_arriving_over_a_few_turns_of_the_loop_share_one_commit() -> None:
    batches: list[list[Item]] = []

    async def commit(batch: list[Item]) -> list[Any]:
        batches.append(batch)
        return [len(batches)] * len(batch)

    group = GroupCommit(commit, name="test-group-commit")

    async def write(n: int) -> Any:
        for _ in range(n % 4):  # requests whose bodies are read a few turns of the loop apart
            await asyncio.sleep(0)
        return await group.submit(_write(n))

    answers = await asyncio.gather(*(write(n) for n in range(12)))
    await group.close()
    assert [len(b) for b in batches] == [12] and answers == [1] * 12


async def test_a_write_arriving_after_the_commit_started_waits_for_the_next_one() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    batches: list[int] = []

    async def commit(batch: list[Item]) -> list[Any]:
        batches.append(len(batch))
        started.set()
        await release.wait()
        return [len(batches)] * len(batch)

    group = GroupCommit(commit, name="test-group-commit")
    first = asyncio.create_task(group.submit(_write(1)))
    await started.wait()
    later = [asyncio.create_task(group.submit(_write(n))) for n in range(2, 5)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 1 and await asyncio.gather(*later) == [2, 2, 2]
    await group.close()
    assert batches == [1, 3]


async def test_closing_commits_everything_queued_then_refuses_more() -> None:
    batches: list[int] = []

    async def commit(batch: list[Item]) -> list[Any]:
        batches.append(len(batch))
        await asyncio.sleep(0)
        return [len(batches)] * len(batch)

    group = GroupCommit(commit, name="test-group-commit")
    writes = [asyncio.create_task(group.submit(_write(n))) for n in range(MAX_BATCH + 44)]
    await asyncio.sleep(0)  # all of them queued
    await group.close()
    assert all(w.done() for w in writes) and len(await asyncio.gather(*writes)) == MAX_BATCH + 44
    assert batches == [MAX_BATCH, 44]
    with pytest.raises(StoreError, match="closed"):
        await asyncio.wait_for(group.submit(_write(0)), 1)


async def test_closing_sees_the_commit_in_flight_through() -> None:
    release = asyncio.Event()

    async def commit(batch: list[Item]) -> list[Any]:
        await release.wait()
        return ["ok"] * len(batch)

    group = GroupCommit(commit, name="test-group-commit")
    writes = [asyncio.create_task(group.submit(_write(n))) for n in range(4)]
    for _ in range(5):
        await asyncio.sleep(0)
    closing = asyncio.create_task(group.close())
    await asyncio.sleep(0)
    assert not closing.done()
    release.set()
    await closing
    assert [w.result() for w in writes] == ["ok"] * 4
