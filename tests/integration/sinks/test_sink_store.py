"""The sinks' rows in the store, on SQLite and PostgreSQL: position, epochs fencing a stale publisher, pause,
rewind, errors, and the position a `since` rewind starts from."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from receiver.models import Completion, JobStatus, Output, Receipt
from receiver.store import Store, open_store


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await open_store(store_url)
    try:
        yield opened
    finally:
        await opened.close()


async def test_rows_positions_and_epochs(store: Store) -> None:
    rows = await store.sink_rows(["nats:A", "redis:b"])
    assert rows["nats:A"].position == 0 and rows["redis:b"].epoch == 0 and not rows["redis:b"].paused
    assert await store.advance_sink("nats:A", epoch=0, position=5)
    assert not await store.advance_sink("nats:A", epoch=0, position=3)  # never backwards within an epoch
    await store.set_sink_error("nats:A", epoch=0, error="down")
    row = (await store.sink_rows(["nats:A"]))["nats:A"]
    assert (row.position, row.last_error) == (5, "down") and row.last_published_at is not None
    rewound = await store.change_sink("nats:A", position=2)
    assert (rewound.position, rewound.epoch, rewound.last_error) == (2, 1, None)
    # A publisher that read epoch 0 cannot undo the rewind, nor set an error on it.
    assert not await store.advance_sink("nats:A", epoch=0, position=9)
    await store.set_sink_error("nats:A", epoch=0, error="stale")
    row = (await store.sink_rows(["nats:A"]))["nats:A"]
    assert (row.position, row.last_error) == (2, None)
    paused = await store.change_sink("nats:A", paused=True)
    assert paused.paused and paused.epoch == 1 and paused.position == 2
    # A pause does not fence the publisher off: what its broker acknowledged before it stopped is kept,
    # so a resume does not publish it again (RabbitMQ would hold it twice).
    assert await store.advance_sink("nats:A", epoch=1, position=4)
    resumed = await store.change_sink("nats:A", paused=False)
    assert not resumed.paused and resumed.epoch == 2 and resumed.position == 4
    assert (await store.sink_rows(["redis:b"]))["redis:b"].position == 0  # each sink its own row


async def test_event_seq_before_since(store: Store) -> None:
    assert await store.event_seq_before(0.0) == 0
    for n in range(3):
        await store.apply(
            Receipt(provider="pixazo", source="webhook", body=b"{}"),
            [Completion("pixazo", f"s{n}", JobStatus.SUCCEEDED, outputs=(Output("https://a/x.jpg", None),))],
        )
    events = await store.events_after(0, 10)
    assert [e.seq for e in events] == [1, 2, 3]
    assert await store.event_seq_before(0.0) == 0  # everything
    assert await store.event_seq_before(store.clock() + 3600) == 3  # nothing: from the newest on
