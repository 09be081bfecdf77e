"""The group commit, alone: which writes share a transaction."""

from __future__ import annotations

import asyncio
from typing import Any

from receiver.models import Receipt
from receiver.store.batching import GroupCommit, Item, Write


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
