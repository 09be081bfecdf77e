"""Polls pending jobs at their providers, so a lost webhook or a missed stream event still completes the job.

A job is first polled once it is `reconcile_after_s` old (its `next_poll_at`, set by the store), then
again with exponential backoff while the provider says it is still running. Each poll is
`polling.poll_job`, the one Oxen's catch-up poll uses too; the store never changes a job that is
already terminal, so a poll racing a webhook is harmless.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random

from receiver.ingest.polling import poll_job
from receiver.models import Job
from receiver.notify import wait_for
from receiver.outage import Outage
from receiver.providers import POLLING_PROVIDERS
from receiver.runtime import Runtime
from receiver.settings import Settings
from receiver.util import backoff

log = logging.getLogger("receiver.ingest.reconciler")

BATCH = 100
CONCURRENCY = 4  # polls in flight per provider
MAX_INTERVAL_S = 1.0
MAX_BACKOFF_S = 3600.0
POLL_LEASE_S = 120.0  # longer than any poll can take; schedule_poll then sets the real next time


def poll_interval(settings: Settings) -> float:
    """How often to look for due jobs: every second, or sooner when jobs are due sooner (tests)."""
    return min(MAX_INTERVAL_S, max(0.05, settings.reconcile_after_s / 4))


def next_poll_delay(settings: Settings, polls_made: int, rand: backoff.Random = random.random) -> float:
    """Backoff between polls of one job: from reconcile_after_s (at most a minute) doubling up to an hour."""
    base = max(0.1, min(settings.reconcile_after_s, 60.0))
    return backoff.exponential(polls_made, base=base, cap=max(base, MAX_BACKOFF_S), rand=rand)


async def _reconcile(runtime: Runtime, job: Job) -> None:
    await poll_job(runtime, job, timeout=runtime.settings.provider_timeout_s)
    # Still pending (or partly done): poll again later. A no-op once the job is terminal.
    delay = next_poll_delay(runtime.settings, job.poll_count)
    await runtime.store.schedule_poll(job.id, next_poll_at=runtime.store.clock() + delay)


async def _reconcile_provider(
    runtime: Runtime, provider: str, *, interval: float, concurrency: int, batch: int
) -> None:
    """Poll one provider's due jobs, at most `concurrency` at once. Each poll runs on its own, within its
    deadline: a slow one holds its slot, never the others nor the next look for due jobs."""
    in_flight: dict[str, asyncio.Task[None]] = {}
    freed = asyncio.Event()
    outage = Outage(log, f"reconcile of {provider}")

    def finished_task(job_id: str, _: asyncio.Task[None]) -> None:
        in_flight.pop(job_id, None)
        freed.set()

    try:
        while not runtime.stopping.is_set():
            freed.clear()
            room = min(batch, concurrency - len(in_flight))
            claimed: list[Job] = []
            if room > 0:
                try:
                    # Claimed, so pushed POLL_LEASE_S ahead: no other replica (nor this loop) takes them
                    # meanwhile. Only as many as there are free slots, so none waits out its lease.
                    claimed = await runtime.store.claim_due_polls(
                        providers=[provider], limit=room, lease_s=POLL_LEASE_S
                    )
                    outage.ok()
                except (
                    Exception
                ) as exc:  # deliberate: whatever the store raises (asyncpg's too) must not end the worker
                    outage.failed(exc)
            for job in claimed:
                task = asyncio.create_task(_reconcile(runtime, job), name=f"poll-{job.id}")
                in_flight[job.id] = task
                task.add_done_callback(functools.partial(finished_task, job.id))
            if room > 0 and len(claimed) == room:
                continue  # maybe more are due
            await wait_for(freed, interval) if room <= 0 else await wait_for(runtime.stopping, interval)
    finally:
        for task in in_flight.values():
            task.cancel()
        await asyncio.gather(*in_flight.values(), return_exceptions=True)


async def run_reconciler(
    runtime: Runtime, *, interval_s: float | None = None, concurrency: int = CONCURRENCY, batch: int = BATCH
) -> None:
    """Poll due jobs of every provider that has polling and an API key, until the app stops; each provider
    on its own, so that one slow provider never delays another's polls."""
    providers = [p for p in POLLING_PROVIDERS if runtime.settings.api_key(p) is not None]
    if not providers:
        log.info("reconciler idle: no provider with a status endpoint has an API key")
        return
    interval = interval_s if interval_s is not None else poll_interval(runtime.settings)
    async with asyncio.TaskGroup() as loops:
        for provider in providers:
            loops.create_task(
                _reconcile_provider(runtime, provider, interval=interval, concurrency=concurrency, batch=batch),
                name=f"reconcile-{provider}",
            )
