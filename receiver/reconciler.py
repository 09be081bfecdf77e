"""Polls pending jobs at their providers, so a lost webhook or a missed stream event still completes the job.

A job is first polled once it is `reconcile_after_s` old (its `next_poll_at`, set by the store), then
again with exponential backoff while the provider says it is still running. Only terminal answers are
ingested; the store never changes a job that is already terminal, so a poll racing a webhook is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Protocol

from receiver import backoff
from receiver.errors import InvalidPayload, ProviderError, StoreUnavailable
from receiver.ingest import ingest
from receiver.models import Completion, Job, JobStatus, Receipt
from receiver.notify import wait_for
from receiver.oxen_stream import poll_oxen_job
from receiver.provider_calls import call
from receiver.providers import apiframe, oxen, pixazo, runware
from receiver.providers._request import ProviderRequest
from receiver.runtime import Runtime
from receiver.settings import Settings

log = logging.getLogger("receiver.reconciler")

BATCH = 100
CONCURRENCY = 4  # polls in flight per provider
MAX_INTERVAL_S = 1.0
MAX_BACKOFF_S = 3600.0
POLL_LEASE_S = 120.0  # longer than any poll can take; schedule_poll then sets the real next time


class Poller(Protocol):
    def build_poll(self, provider_job_id: str, *, api_key: str) -> ProviderRequest: ...
    def parse_poll(self, body: bytes) -> list[Completion]: ...


# Lumenfall answers synchronously and has no status endpoint for images: nothing to poll.
# Oxen jobs go through oxen_stream.poll_oxen_job, which the stream's catch-up poll shares.
POLLERS: dict[str, Poller] = {"pixazo": pixazo, "runware": runware, "apiframe": apiframe, "oxen": oxen}


def poll_interval(settings: Settings) -> float:
    """How often to look for due jobs: every second, or sooner when jobs are due sooner (tests)."""
    return min(MAX_INTERVAL_S, max(0.05, settings.reconcile_after_s / 4))


def next_poll_delay(settings: Settings, polls_made: int, rand: backoff.Random = random.random) -> float:
    """Backoff between polls of one job: from reconcile_after_s (at most a minute) doubling up to an hour."""
    base = max(0.1, min(settings.reconcile_after_s, 60.0))
    return backoff.exponential(polls_made, base=base, cap=max(base, MAX_BACKOFF_S), rand=rand)


async def poll_job(runtime: Runtime, job: Job) -> str:
    """Ask the provider about one job and ingest a terminal answer. Returns terminal|pending|invalid|error."""
    if job.provider == "oxen":  # the stream consumer's catch-up poll: one Oxen poll in the code base
        try:
            applied = await poll_oxen_job(runtime, job, timeout=runtime.settings.provider_timeout_s)
        except ProviderError as exc:
            log.info("polling oxen job %s failed (status %s): %s", job.id, exc.status, exc.message,
                     extra={"job_id": job.id})
            return "error"
        return "pending" if applied is None else "terminal"
    poller = POLLERS[job.provider]
    api_key = runtime.settings.api_key(job.provider)
    if api_key is None:
        return "error"
    request = poller.build_poll(job.provider_job_id, api_key=api_key.get_secret_value())
    try:
        response = await call(runtime, job.provider, request, timeout=runtime.settings.provider_timeout_s)
    except ProviderError as exc:
        # Not the job's status (an unknown id, an outage): try again later, change nothing.
        log.info("polling %s job %s failed (status %s): %s", job.provider, job.id, exc.status, exc.message,
                 extra={"job_id": job.id})
        return "error"
    body = response.content
    receipt = Receipt(job.provider, "poll", body, {"content-type": response.headers.get("content-type", "")})
    try:
        completions = poller.parse_poll(body)
    except InvalidPayload:
        await ingest(runtime, receipt, lambda: poller.parse_poll(body))  # kept as an invalid receipt
        return "invalid"
    if all(c.status is JobStatus.PENDING for c in completions):
        return "pending"  # not stored: a receipt per "still running" would only be noise
    await ingest(runtime, receipt, lambda: completions)
    return "terminal"


async def _reconcile(runtime: Runtime, job: Job) -> None:
    try:
        result = await poll_job(runtime, job)
    except Exception:
        log.exception("polling %s job %s broke", job.provider, job.id, extra={"job_id": job.id})
        result = "error"
    runtime.metrics.reconcile_polls.labels(job.provider, result).inc()
    # Still pending (or partly done): poll again later. A no-op once the job is terminal.
    delay = next_poll_delay(runtime.settings, job.poll_count)
    await runtime.store.schedule_poll(job.id, next_poll_at=runtime.store.clock() + delay)


async def _reconcile_provider(runtime: Runtime, provider: str, *, interval: float, concurrency: int,
                              batch: int) -> None:
    """Poll one provider's due jobs, at most `concurrency` at once. Each poll runs on its own, within its
    deadline: a slow one holds its slot, never the others nor the next look for due jobs."""
    in_flight: dict[str, asyncio.Task[None]] = {}
    freed = asyncio.Event()

    def finished(job_id: str) -> None:
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
                    claimed = await runtime.store.claim_due_polls(providers=[provider], limit=room,
                                                                  lease_s=POLL_LEASE_S)
                except StoreUnavailable as exc:
                    log.warning("reconcile pass for %s skipped: %s", provider, exc)
                except Exception:  # a store hiccup must not end the worker
                    log.exception("reconcile pass for %s failed", provider)
            for job in claimed:
                task = asyncio.create_task(_reconcile(runtime, job), name=f"poll-{job.id}")
                in_flight[job.id] = task
                task.add_done_callback(lambda _, job_id=job.id: finished(job_id))
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
    providers = [p for p in POLLERS if runtime.settings.api_key(p) is not None]
    if not providers:
        log.info("reconciler idle: no provider with a status endpoint has an API key")
        return
    interval = interval_s if interval_s is not None else poll_interval(runtime.settings)
    async with asyncio.TaskGroup() as loops:
        for provider in providers:
            loops.create_task(_reconcile_provider(runtime, provider, interval=interval, concurrency=concurrency,
                                                  batch=batch), name=f"reconcile-{provider}")
