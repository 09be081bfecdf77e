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


async def test_with_two_in_flight_the_queue_is_shared_out_and_the_next_batch_forms_while_one_commits() -> None:
    commits: list[list[int]] = []
    gates: list[asyncio.Event] = []
    running = 0
    most = 0

    async def commit(batch: list[Item]) -> list[Any]:
        nonlocal running, most
        numbers = [int(item.receipt.body) for item in batch if isinstance(item, Write)]
        commits.append(numbers)
        gate = asyncio.Event()
        gates.append(gate)
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        return [n * 10 for n in numbers]

    group = GroupCommit(commit, name="test-group-commit", in_flight=2)
    first = [asyncio.create_task(group.submit(_write(n))) for n in range(8)]
    while len(commits) < 2:
        await asyncio.sleep(0)
    # Eight queued with two commits free: four each, both under way at once.
    assert commits == [[0, 1, 2, 3], [4, 5, 6, 7]] and running == 2
    later = [asyncio.create_task(group.submit(_write(n))) for n in range(8, 11)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(commits) == 2, "no third commit while two are in flight"
    gates[1].set()  # the second ends first: its callers are answered, the third batch starts
    while len(commits) < 3:
        await asyncio.sleep(0)
    assert [t.done() for t in first] == [False] * 4 + [True] * 4 and commits[2] == [8, 9, 10]
    for gate in gates:
        gate.set()
    assert await asyncio.gather(*first, *later) == [n * 10 for n in range(11)]
    await group.close()
    assert most == 2


async def test_closing_sees_the_commits_in_flight_through() -> None:
    release = asyncio.Event()

    async def commit(batch: list[Item]) -> list[Any]:
        await release.wait()
        return ["ok"] * len(batch)

    group = GroupCommit(commit, name="test-group-commit", in_flight=2)
    writes = [asyncio.create_task(group.submit(_write(n))) for n in range(4)]
    for _ in range(5):
        await asyncio.sleep(0)
    closing = asyncio.create_task(group.close())
    await asyncio.sleep(0)
    assert not closing.done()
    release.set()
    await closing
    assert [w.result() for w in writes] == ["ok"] * 4
