"""`/v1` routes that change a job after it exists: patch, cancel, redeliver (one job or many)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver.models import JobStatus
from receiver.runtime import Runtime
from receiver.store import FinishedFilter
from receiver.web.http import error, read_body
from receiver.web.validation import PatchJob, Redeliveries, RedeliverTo, parse_body, parse_time

REDELIVERY_BATCH = 500  # jobs per transaction of `POST /v1/redeliveries`


def _not_found(job_id: str) -> Response:
    return error(404, "not_found", f"no job {job_id!r}")


async def patch_job(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    job_id = request.path_params["job_id"]
    spec = parse_body(PatchJob, await read_body(request, runtime.settings.max_body_bytes))
    changes = {name: getattr(spec, name) for name in spec.model_fields_set}
    job = await runtime.store.update_job(job_id, changes)
    if job is None:
        return _not_found(job_id)
    return JSONResponse(job.to_json())


async def cancel_job(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    job_id = request.path_params["job_id"]
    job, changed = await runtime.store.end_job(job_id, status=JobStatus.CANCELLED, error=None)
    if job is None:
        return _not_found(job_id)
    if not changed:
        return error(409, "already_terminal", f"the job is already {job.status.value}", job=job.to_json())
    return JSONResponse(job.to_json())


async def redeliver(request: Request) -> Response:
    """A terminal job's result again, as a new message: to its callback URL, or to the body's `url`."""
    runtime: Runtime = request.state.runtime
    job_id = request.path_params["job_id"]
    body = await read_body(request, runtime.settings.max_body_bytes)
    url = parse_body(RedeliverTo, body).url if body.strip() else None
    job = await runtime.store.get_job(job_id)
    if job is None:
        return _not_found(job_id)
    if not job.status.terminal:
        return error(409, "not_terminal", "the job has no result to send yet")
    if url is None and not (job.callback_url or runtime.settings.default_callback_url):
        return error(409, "no_callback_url", "the job has no callback_url and RECEIVER_DEFAULT_CALLBACK_URL is not set")
    if url:
        message, retried = await runtime.store.redeliver_to(job_id, url), False
    else:
        # A message still waiting for its retry is made due now rather than doubled by a second one.
        message, retried = await runtime.store.redeliver(job_id) or (None, False)
    if message is None:
        return error(409, "not_redeliverable", "the job cannot be redelivered")
    return JSONResponse(
        {"message_id": message.id, "url": message.url, "job_id": job_id, "retried": retried}, status_code=202
    )


async def redeliver_many(request: Request) -> Response:
    """Every terminal job with a destination that finished in [since, until), in batches of
    REDELIVERY_BATCH jobs, each its own transaction (a large count never makes one huge one)."""
    runtime: Runtime = request.state.runtime
    spec = parse_body(Redeliveries, await read_body(request, runtime.settings.max_body_bytes))
    filters = FinishedFilter(
        since=parse_time(spec.since),
        until=parse_time(spec.until) if spec.until else None,
        provider=spec.provider,
        delivery_status=spec.delivery_status,
    )
    count, after = 0, 0
    while True:
        queued, next_after = await runtime.store.redeliver_finished(filters, after_seq=after, limit=REDELIVERY_BATCH)
        count += queued
        if next_after is None:
            break
        after = next_after
        await asyncio.sleep(0)  # let other requests in between batches
    return JSONResponse({"count": count}, status_code=202)
