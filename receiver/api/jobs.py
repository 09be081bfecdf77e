"""The `/v1` API: jobs, deliveries, receipts. Every route needs `Authorization: Bearer API_TOKEN`."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver.models import DeliveryStatus, Job, JobStatus, Outcome, iso_time
from receiver.notify import job_key, wait_for
from receiver.providers import PROVIDER_NAMES
from receiver.runtime import Runtime
from receiver.store import JobFilter
from receiver.store.base import Page
from receiver.web.http import error, read_body
from receiver.web.validation import (
    RegisterJob,
    known_params,
    parse_body,
    query_choice,
    query_cursor,
    query_float,
    query_int,
    query_text,
    query_time,
)

MAX_WAIT_S = 60.0
_STATUSES = tuple(s.value for s in JobStatus)
_OUTCOMES = tuple(o.value for o in Outcome)
_DELIVERY_STATUSES = tuple(d.value for d in DeliveryStatus)
_JOB_PARAMS = frozenset(
    {"provider", "status", "delivery_status", "provider_job_id", "since", "until", "limit", "cursor", "prefix"}
)
_RECEIPT_PARAMS = frozenset({"provider", "outcome", "job_id", "limit", "cursor"})


async def register_job(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    spec = parse_body(RegisterJob, await read_body(request, runtime.settings.max_body_bytes))
    job, created = await runtime.store.register_job(
        provider=spec.provider,
        provider_job_id=spec.provider_job_id,
        callback_url=spec.callback_url,
        metadata=spec.metadata,
        expected_outputs=spec.expected_outputs,
    )
    return JSONResponse(job.to_json(), status_code=201 if created else 200)


async def get_job(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    job_id = request.path_params["job_id"]
    wait = query_float(request.query_params, "wait", low=0, high=MAX_WAIT_S)
    job = await runtime.store.get_job(job_id)
    if job is None:
        return error(404, "not_found", f"no job {job_id!r}")
    if wait and not job.status.terminal:
        # Take the wake-up, then read again, so a completion between the read and the wait is not
        # missed. Only for a job that exists and is pending: the notifier keeps an entry per key.
        job = await _wait_until_terminal(runtime, job, wait)
    return JSONResponse(job.to_json())


async def _wait_until_terminal(runtime: Runtime, job: Job, wait: float) -> Job:
    """The job once terminal, or as it stands after `wait` seconds or at shutdown. With replicas, a
    completion on another one wakes us by NOTIFY; the store is also re-read every backstop_s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    step = runtime.store.backstop_s or wait
    while not job.status.terminal:
        left = deadline - loop.time()
        woken = runtime.notifier.event(job_key(job.id))
        # After taking the wake-up: shutdown sets `stopping` before it wakes every waiter.
        if left <= 0 or runtime.stopping.is_set():
            break
        job = await runtime.store.get_job(job.id) or job
        if job.status.terminal:
            break
        await wait_for(woken, min(step, left))
        job = await runtime.store.get_job(job.id) or job
    return job


async def list_jobs(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    q = request.query_params
    known_params(q, _JOB_PARAMS)
    filters = JobFilter(
        provider=query_choice(q, "provider", PROVIDER_NAMES),
        status=query_choice(q, "status", _STATUSES),
        delivery_status=query_choice(q, "delivery_status", _DELIVERY_STATUSES),
        provider_job_id=query_text(q, "provider_job_id"),
        since=query_time(q, "since"),
        until=query_time(q, "until"),
        prefix=query_text(q, "prefix", max_length=255),
    )
    cursor = query_cursor(q)
    page = await runtime.store.list_jobs(
        filters=filters,
        limit=query_int(q, "limit", 50, low=1, high=500),
        cursor=cursor,
        count=cursor is None,
    )
    return JSONResponse({"jobs": [j.to_json() for j in page.items], "next_cursor": page.next_cursor, **_total(page)})


def _total(page: Page[Any]) -> dict[str, Any]:
    """The first page says how many match: exact up to COUNT_CAP, else COUNT_CAP with `total_exact` false."""
    return {} if page.total is None else {"total": page.total, "total_exact": page.total_exact}


async def list_deliveries(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    job_id = request.path_params["job_id"]
    if await runtime.store.get_job(job_id) is None:
        return error(404, "not_found", f"no job {job_id!r}")
    attempts = await runtime.store.list_deliveries(job_id)
    # Then each message still to be sent, after the attempts made: `next_attempt_at` says when it is due,
    # `attempt` the number its next attempt will have, and having made no attempt yet it has no answer.
    waiting = [
        {
            "message_id": m.id,
            "url": m.url,
            "attempt": m.attempts + 1,
            "status_code": None,
            "error": None,
            "at": None,
            "next_attempt_at": iso_time(m.next_attempt_at),
        }
        for m in await runtime.store.waiting_messages(job_id)
    ]
    return JSONResponse({"deliveries": [a.to_json() for a in attempts] + waiting})


async def list_receipts(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    q = request.query_params
    known_params(q, _RECEIPT_PARAMS)
    outcome = query_choice(q, "outcome", _OUTCOMES)
    cursor = query_cursor(q)
    page = await runtime.store.list_receipts(
        provider=query_choice(q, "provider", PROVIDER_NAMES),
        outcome=Outcome(outcome) if outcome else None,
        limit=query_int(q, "limit", 50, low=1, high=500),
        cursor=cursor,
        job_id=query_text(q, "job_id"),
        count=cursor is None,
    )
    return JSONResponse(
        {"receipts": [r.to_json() for r in page.items], "next_cursor": page.next_cursor, **_total(page)}
    )


_REFUSAL_PARAMS = frozenset({"provider", "reason", "limit", "cursor"})
REFUSAL_REASONS = ("unknown_provider", "unauthorized", "bad_signature", "too_large", "invalid_body")


async def list_refusals(request: Request) -> Response:
    """`GET /v1/refusals`: refused inbound requests (the newest kept), newest first, credentials masked."""
    runtime: Runtime = request.state.runtime
    q = request.query_params
    known_params(q, _REFUSAL_PARAMS)
    cursor = query_cursor(q)
    page = await runtime.store.list_refusals(
        provider=query_text(q, "provider", max_length=64),
        reason=query_choice(q, "reason", REFUSAL_REASONS),
        limit=query_int(q, "limit", 50, low=1, high=100),
        cursor=cursor,
        count=cursor is None,
    )
    return JSONResponse(
        {"refusals": [r.to_json() for r in page.items], "next_cursor": page.next_cursor, **_total(page)}
    )
