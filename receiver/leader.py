"""One replica at a time: run a worker only while holding its named lease in the store.

A lease row with a fencing term (`Store.acquire_lease`) rather than a session advisory lock: it
needs no dedicated connection, survives a connection pooler in transaction mode (PgBouncer), and
works the same on SQLite. A holder renews every `renew_s`; a dead one loses it `ttl_s` after its
last renewal, so another replica takes over within ttl_s + renew_s. A holder that cannot renew in
time stops its worker before the lease can pass to another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from receiver.errors import StoreError
from receiver.notify import wait_for
from receiver.outage import Outage
from receiver.runtime import Runtime

log = logging.getLogger("receiver.leader")


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    ttl_s: float = 15.0
    renew_s: float = 5.0


async def lead(
    runtime: Runtime,
    name: str,
    work: Callable[[Runtime], Coroutine[Any, Any, None]],
    *,
    on_standby: Callable[[], None],
    timing: LeaseTiming = LeaseTiming(),
) -> None:
    """Run `work` whenever this replica holds the lease `name`; call `on_standby` while another does."""
    store = runtime.store
    outage = Outage(log, f"{name} lease")
    while not runtime.stopping.is_set():
        term = await _acquire(runtime, name, timing, outage)
        if term is None:
            on_standby()
            await wait_for(runtime.stopping, timing.renew_s)
            continue
        log.info("this replica now runs %s (lease term %d)", name, term)
        task = asyncio.create_task(work(runtime), name=name)
        renewed_at = time.monotonic()
        try:
            while not task.done():
                await asyncio.wait([task], timeout=timing.renew_s)
                if task.done():
                    break
                again = await _acquire(runtime, name, timing, outage)
                if again == term:
                    renewed_at = time.monotonic()
                elif again is not None or time.monotonic() - renewed_at > timing.ttl_s - timing.renew_s:
                    log.warning("lost the %s lease (term %d): stopping it here", name, term)
                    break
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if runtime.stopping.is_set():
                try:  # hand over at once instead of after ttl_s
                    await asyncio.shield(store.release_lease(name))
                except StoreError:
                    pass
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.error("%s stopped: %r", name, task.exception())
            await wait_for(runtime.stopping, timing.renew_s)


async def _acquire(runtime: Runtime, name: str, timing: LeaseTiming, outage: Outage) -> int | None:
    try:
        term = await runtime.store.acquire_lease(name, ttl_s=timing.ttl_s)
    except StoreError as exc:
        outage.failed(exc)
        return None
    outage.ok()
    return term
