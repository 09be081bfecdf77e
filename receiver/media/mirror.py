"""The mirror worker: copies each output of a succeeded job to the media store, then records it.

Work comes from the store's mirror tasks (claimed with a lease, so one replica at a time mirrors an
output; a task cut short by a crash is claimed again, at once on SQLite, after its lease elsewhere).
A transient failure (timeout, connection, 5xx, 429) is retried with backoff until `retry_for_s` after
the task was queued; a permanent one gives up at once. Either way `finish_mirror_task` records the
outcome, and the job's event and callback go out once its last output is done.
A sweep deletes objects older than the retention and marks them gone (their URLs then answer 410).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable

from receiver.errors import StoreError
from receiver.media.fetch import Fetcher, FetchLimits
from receiver.media.guard import MirrorFailure, check_content_type, parse_data_uri
from receiver.media.objects import STORE_ERRORS
from receiver.media.service import Media
from receiver.notify import EVENTS, wait_for
from receiver.outage import Outage
from receiver.runtime import Runtime
from receiver.store.base import MirrorTask
from receiver.store.mirror_fair import origin_of
from receiver.store.rules import MirrorResult
from receiver.tuning import MirrorTuning
from receiver.util import backoff

log = logging.getLogger("receiver.media.mirror")

DATA_CHUNK = 64 * 1024
INCOMING_TTL_S = 3600.0  # an upload unfinished for this long was cut short by a crash


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), DATA_CHUNK):
        yield data[start : start + DATA_CHUNK]


async def copy_output(fetcher: Fetcher, media: Media, url: str, hint: str | None) -> MirrorResult:
    """Fetch one output and store it; raises MirrorFailure."""
    if url[:5].lower() == "data:":
        parsed = parse_data_uri(url, max_bytes=fetcher.limits.max_bytes)
        content_type = check_content_type(parsed.media_type or "text/plain", hint)  # RFC 2397's default
        stored = await media.objects.put(_pieces(parsed.data), content_type=content_type)
    else:
        async with fetcher.get(url, hint=hint) as body:
            content_type = body.content_type
            stored = await media.objects.put(body.chunks(), content_type=content_type)
    return MirrorResult(media.stored_url(stored.sha256), stored.sha256, stored.size, content_type)


async def mirror_one(runtime: Runtime, media: Media, fetcher: Fetcher, task: MirrorTask, tuning: MirrorTuning) -> None:
    """One attempt at one task, ending in a recorded result or a scheduled retry."""
    store = runtime.store
    job = await store.get_job(task.job_id)
    hint = job.outputs[task.index].media_type if job is not None and task.index < len(job.outputs) else None
    result: MirrorResult | None
    try:
        async with asyncio.timeout(tuning.attempt_timeout_s):
            result = await copy_output(fetcher, media, task.url, hint)
    except MirrorFailure as failure:
        result = await _failed(runtime, task, tuning, failure)
    except TimeoutError:
        result = await _failed(
            runtime,
            task,
            tuning,
            MirrorFailure(f"the transfer took longer than {tuning.attempt_timeout_s:g} s", transient=True),
        )
    except asyncio.CancelledError:  # shutting down: hand the task back for the next start or another replica
        with contextlib.suppress(StoreError):
            await runtime.store.retry_mirror_task(task, next_attempt_at=runtime.store.clock(), error="interrupted")
        raise
    except Exception as exc:  # deliberate: the media store failed (disk full, S3 away), or a bug: retried, not lost
        log.warning("mirror of %s output %d: media store error: %s", task.job_id, task.index, type(exc).__name__)
        result = await _failed(
            runtime, task, tuning, MirrorFailure(f"the media store failed ({type(exc).__name__})", transient=True)
        )
    if result is None:
        runtime.metrics.mirrors.labels("retry").inc()
        return
    await store.finish_mirror_task(task, result)
    if result.error is None and task.last_error is not None:
        log.info("mirror of %s output %d stored after %d attempts", task.job_id, task.index, task.attempts)
    runtime.metrics.mirrors.labels("stored" if result.error is None else "gave_up").inc()


async def _failed(
    runtime: Runtime, task: MirrorTask, tuning: MirrorTuning, failure: MirrorFailure
) -> MirrorResult | None:
    """A result that gives up, or None once a retry is scheduled."""
    now = runtime.store.clock()
    elapsed = now - task.created_at
    if failure.transient:
        delay = backoff.exponential(
            task.attempts - 1, base=tuning.first_retry_s, cap=tuning.max_retry_s, rand=random.random
        )
        if elapsed + delay < tuning.retry_for_s or task.attempts < 2:
            if failure.reason != task.last_error:  # once per change, not once per retry
                log.info(
                    "mirror of %s output %d failed, retrying for up to %g s: %s",
                    task.job_id,
                    task.index,
                    tuning.retry_for_s,
                    failure.reason,
                )
            await runtime.store.retry_mirror_task(
                task,
                next_attempt_at=now + delay,
                error=failure.reason,
                shown=f"{failure.reason} (attempt {task.attempts} failed; being retried)",
            )
            return None
        reason = f"gave up after {task.attempts} attempts in {elapsed:.0f} s: {failure.reason}"
    else:
        reason = failure.reason
    log.info("mirror of %s output %d gave up: %s", task.job_id, task.index, reason)
    return MirrorResult(error=reason)


async def run_mirror(runtime: Runtime) -> None:
    """Claim and run mirror tasks, `concurrency` at a time and `per_origin_concurrency` of one origin (so
    a slow origin delays only its own outputs), until the app stops."""
    media = runtime.media
    if media is None:
        await settle_when_off(runtime)
        return
    tuning = runtime.mirror_tuning
    fetcher = await Fetcher(
        FetchLimits(
            max_bytes=runtime.settings.media_max_bytes,
            allow_private=runtime.settings.media_allow_private,
            read_timeout_s=tuning.read_timeout_s,
        )
    ).open()
    running: set[asyncio.Task[None]] = set()
    per_origin: Counter[str] = Counter()  # fetches under way by origin: a slow origin holds only its share

    def done(origin: str) -> Callable[[asyncio.Task[None]], None]:
        def release(job: asyncio.Task[None]) -> None:
            running.discard(job)
            per_origin[origin] -= 1
            if per_origin[origin] <= 0:
                del per_origin[origin]

        return release

    sweeper = asyncio.create_task(run_sweeps(runtime, media, tuning), name="media-sweeps")
    outage = Outage(log, "mirror task claims")
    try:
        while not runtime.stopping.is_set():
            wake = runtime.notifier.event(EVENTS)  # taken before the claim: no wake-up is missed
            free = tuning.concurrency - len(running)
            tasks: list[MirrorTask] = []
            if free > 0:
                try:
                    room = {origin: tuning.per_origin_concurrency - n for origin, n in per_origin.items()}
                    tasks = await runtime.store.claim_mirror_tasks(
                        limit=free,
                        lease_s=tuning.attempt_timeout_s + 60,
                        room=room,
                        per_origin=tuning.per_origin_concurrency,
                    )
                    outage.ok()
                except StoreError as exc:
                    outage.failed(exc)
            for task in tasks:
                origin = origin_of(task.url)
                job = asyncio.create_task(_guarded(runtime, media, fetcher, task, tuning), name="mirror-one")
                running.add(job)
                per_origin[origin] += 1
                job.add_done_callback(done(origin))
            if tasks and len(tasks) == free:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)  # full: go on when a slot frees
                continue
            waiter = asyncio.create_task(wait_for(wake, tuning.poll_s))
            try:
                await asyncio.wait({waiter, *running}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
    finally:
        sweeper.cancel()
        for worker in running:
            worker.cancel()
        await asyncio.gather(sweeper, *running, return_exceptions=True)
        await fetcher.close()


async def settle_when_off(runtime: Runtime) -> None:
    """Mirroring was turned off with tasks still queued: finish them, so their jobs' callbacks go out."""
    while not runtime.stopping.is_set():
        try:
            tasks = await runtime.store.claim_mirror_tasks(limit=100, lease_s=60)
            for task in tasks:
                await runtime.store.finish_mirror_task(
                    task, MirrorResult(error="mirroring is off (RECEIVER_MEDIA_URL)")
                )
        except StoreError as exc:
            log.warning("could not settle mirror tasks: %s", exc)
            return
        if len(tasks) < 100:
            return


async def _guarded(runtime: Runtime, media: Media, fetcher: Fetcher, task: MirrorTask, tuning: MirrorTuning) -> None:
    try:
        await mirror_one(runtime, media, fetcher, task, tuning)
    except StoreError as exc:  # the task stays leased and is claimed again once its lease ends
        log.warning("mirror of %s output %d not recorded: %s", task.job_id, task.index, exc)


async def run_sweeps(runtime: Runtime, media: Media, tuning: MirrorTuning) -> None:
    """Delete objects past the retention (RECEIVER_MEDIA_RETENTION_DAYS; 0 keeps them), and uploads a
    killed process left half-way."""
    retention_s = runtime.settings.media_retention_days * 86400
    every = min(tuning.sweep_every_s, max(0.1, retention_s / 4)) if retention_s > 0 else tuning.sweep_every_s
    while not runtime.stopping.is_set():
        now = runtime.store.clock()
        try:
            if retention_s > 0:
                await sweep(runtime, media, before=now - retention_s)
            await media.objects.forget_incoming(older_than=now - INCOMING_TTL_S)
        except StoreError as exc:
            log.warning("media sweep failed: %s", exc)
        except Exception as exc:  # deliberate: the media store away (or a bug) must not end the sweeps
            log.warning("media sweep failed: %s", type(exc).__name__)
        await wait_for(runtime.stopping, every)


async def sweep(runtime: Runtime, media: Media, *, before: float) -> int:
    """One sweep: objects created before `before` marked deleted, then removed; returns how many."""
    removed = 0
    while True:
        expired = await runtime.store.expire_media(before=before, limit=200)
        for obj in expired:
            try:
                await media.objects.delete(obj.sha256)
            except STORE_ERRORS as exc:  # marked gone already; the bytes stay behind, which is only space
                log.warning("could not delete media object %s: %s", obj.sha256, type(exc).__name__)
        removed += len(expired)
        if len(expired) < 200:
            return removed
