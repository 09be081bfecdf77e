"""Small asyncio helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Sequence


async def wait_for(event: asyncio.Event, timeout: float) -> bool:
    """True if `event` fired within `timeout` seconds. (`asyncio.timeout`, not `wait_for`: on 3.11
    `wait_for` can swallow a cancellation that arrives as the event fires, and a worker never stops.)"""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def wait_any(events: Sequence[asyncio.Event], timeout: float | None) -> None:
    """Until any of `events` fires, or `timeout` seconds pass."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def read_capped(chunks: AsyncIterable[bytes], limit: int) -> bytes | None:
    """All of `chunks` (a body being read), or None as soon as they pass `limit` bytes."""
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)
