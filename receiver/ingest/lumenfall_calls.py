"""Lumenfall's synchronous generations: the call runs in the background and its answer completes the job.

`POST /v1/generations` registers the job (owned by this replica, under an id we make) and answers 202 at
once; the call itself may take minutes. A call cut short by a shutdown fails its job; one cut off by a
crash is failed by whichever replica finds it orphaned (`fail_orphaned_lumenfall_calls`), as Lumenfall
has no status endpoint to ask.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from receiver import logs
from receiver.errors import ProviderError, StoreError
from receiver.ingest.inbound import ingest, parse
from receiver.ingest.provider_calls import MAX_IMAGE_ANSWER_BYTES, send
from receiver.models import Completion, Job, Outcome, Receipt, dumps
from receiver.notify import wait_for
from receiver.outage import Outage
from receiver.providers import lumenfall
from receiver.providers._request import ProviderRequest, refusal_message
from receiver.runtime import Runtime

log = logging.getLogger("receiver.api.generations")  # part of POST /v1/generations, for whoever reads the logs

INTERRUPTED = "the receiver stopped before Lumenfall answered"
CRASHED = "the receiver restarted before Lumenfall answered"
ORPHAN_CHECK_S = 10.0


async def start_call(
    runtime: Runtime, request: ProviderRequest, *, unique: str, callback_url: str | None, metadata: dict[str, Any]
) -> Job:
    """Register the job (its id made from `unique`), then run `request` in the background."""
    job_id = lumenfall.new_job_id(unique)
    job, _ = await runtime.store.register_job(
        provider="lumenfall",
        provider_job_id=job_id,
        callback_url=callback_url,
        metadata=metadata,
        expected_outputs=None,
        owner=runtime.store.replica_id,
    )
    runtime.spawn(_run_call(runtime, request, job_id), name=f"lumenfall-{job_id}")
    runtime.metrics.submissions.labels("lumenfall", "started").inc()
    return job


async def _run_call(runtime: Runtime, request: ProviderRequest, job_id: str) -> None:
    try:
        try:
            response = await send(
                runtime,
                "lumenfall",
                request,
                timeout=runtime.settings.lumenfall_timeout_s,
                max_bytes=MAX_IMAGE_ANSWER_BYTES,
            )
        except ProviderError as exc:
            await _fail(runtime, job_id, exc.message)
            return
        body = response.content
        receipt = Receipt("lumenfall", "response", body, {"content-type": response.headers.get("content-type", "")})
        if response.is_success:
            result = await ingest(
                runtime, receipt, parse(receipt, lambda: [lumenfall.parse_image_response(job_id, body)])
            )
            if result.outcome is Outcome.INVALID:
                # Kept as an invalid receipt; the job must still end, as nothing else will ever answer for it.
                await _fail(runtime, job_id, f"unusable answer from Lumenfall: {result.error}")
        else:
            message = logs.masker_for(runtime.settings, runtime.secrets).redact(
                refusal_message(response.status_code, body)
            )
            await ingest(runtime, receipt, [lumenfall.failed_response(job_id, message)])
    except asyncio.CancelledError:
        await asyncio.shield(_fail(runtime, job_id, INTERRUPTED))
        raise
    except Exception:  # deliberate: whatever broke (the store, a bug), the job must end rather than hang pending
        log.exception("Lumenfall generation %s broke", job_id, extra={"job_id": job_id})
        await _fail(runtime, job_id, "the receiver could not complete the Lumenfall call")


async def _fail(runtime: Runtime, job_id: str, message: str) -> None:
    """Fail the job with `message`, keeping a receipt that says why (a no-op if it already ended)."""
    completion: Completion = lumenfall.failed_response(job_id, message)
    note = dumps({"error": message, "noted_by": "receiver"}).encode()
    try:
        await ingest(
            runtime, Receipt("lumenfall", "response", note, {"content-type": "application/json"}), [completion]
        )
    except StoreError as exc:  # the store is away: the job timeout (RECEIVER_JOB_TIMEOUT_S) ends it then
        log.error("could not record the failure of Lumenfall job %s: %s", job_id, exc)


async def fail_orphaned_lumenfall_calls(runtime: Runtime) -> None:
    """A receiver-run Lumenfall call still pending whose replica is gone (a crash: a clean shutdown fails
    its own) will never be answered, and Lumenfall has no status endpoint to ask: end it as failed.
    Checked at start and then periodically, so a dead replica's calls end on a live one."""
    outage = Outage(log, "orphaned Lumenfall calls check")
    while not runtime.stopping.is_set():
        try:
            for job in await runtime.store.orphaned_jobs("lumenfall"):
                if job.provider_job_id.startswith(lumenfall.RECEIVER_ID_PREFIX):
                    log.warning("Lumenfall job %s was cut off by a crash: failing it", job.id, extra={"job_id": job.id})
                    await _fail(runtime, job.provider_job_id, CRASHED)
            outage.ok()
        except StoreError as exc:
            outage.failed(exc)
        await wait_for(runtime.stopping, ORPHAN_CHECK_S)
