"""Helpers of the sink tests: events made by webhooks, and checks of what a broker holds."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.fakes.pixazo import completed
from tests.integration.sinks.brokers import Received
from tests.support import WEBHOOK_TOKEN, eventually


async def fire(client: httpx.AsyncClient, prefix: str, count: int, *, concurrency: int = 16) -> None:
    """`count` Pixazo completions (each a new job, so a new event), every one answered 2xx."""
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            n = queue.pop()
            r = await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", json=completed(f"{prefix}_{n}"))
            assert r.status_code == 200, r.text

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def sink(api: httpx.AsyncClient, name: str) -> dict[str, Any]:
    r = await api.get("/v1/sinks")
    assert r.status_code == 200, r.text
    return next(s for s in r.json()["sinks"] if s["name"] == name)


async def drained(api: httpx.AsyncClient, name: str, newest: int, timeout: float = 60) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        s = await sink(api, name)
        return s if s["last_event_id"] >= newest and s["lag"] == 0 and s["state"] == "ok" else None

    result: dict[str, Any] = await eventually(check, timeout, f"sink {name} drained to {newest}")
    return result


async def newest_event(api: httpx.AsyncClient, name: str) -> int:
    s = await sink(api, name)
    return int(s["last_event_id"]) + int(s["lag"])


def check_complete(got: list[Received], expected: list[int], *, duplicates_kept: bool) -> None:
    """Every expected event id present; first occurrences in increasing order; a repeat only as the
    same id with the same CloudEvent; none kept twice where the broker deduplicates."""
    ids = [int(m.event["id"]) for m in got]
    firsts: list[int] = []
    seen: dict[int, dict[str, Any]] = {}
    for m, i in zip(got, ids):
        assert m.broker_id.split("-")[0] == str(i), f"broker id {m.broker_id} for event {i}"
        if i in seen:
            assert seen[i] == m.event, f"event {i} repeated with another body"
            continue
        seen[i] = m.event
        firsts.append(i)
    assert firsts == sorted(firsts), "events out of order"
    assert set(firsts) == set(expected), f"missing {sorted(set(expected) - set(firsts))[:10]}"
    if not duplicates_kept:
        assert len(ids) == len(set(ids)), "an event is kept twice"


async def read_events(api: httpx.AsyncClient, after: int, count: int) -> dict[int, str]:
    """`count` events of /v1/events after `after`: id → the data line (the job JSON)."""
    out: dict[int, str] = {}
    seq = None
    async with api.stream("GET", "/v1/events", params={"last_event_id": str(after)}, timeout=60) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("id: "):
                seq = int(line[4:])
            elif line.startswith("data: ") and seq is not None:
                out[seq] = line[6:]
                if len(out) == count:
                    break
    return out
