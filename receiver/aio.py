"""Small asyncio helpers."""

from __future__ import annotations

import asyncio


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
