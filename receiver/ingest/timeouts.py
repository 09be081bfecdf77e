"""The job timeout: a job still pending `RECEIVER_JOB_TIMEOUT_S` after it was created fails, saying so.

A periodic sweep on every replica; each batch is one transaction that locks the jobs' keys and
re-reads them, so replicas sweeping at once (or a result arriving meanwhile) end each job once.
The same sweep forgets Idempotency-Keys past their 24 h.
"""

from __future__ import annotations

import logging

from receiver.errors import StoreError
from receiver.notify import wait_for
from receiver.outage import Outage
from receiver.runtime import Runtime

log = logging.getLogger("receiver.ingest.timeouts")

BATCH = 500
MAX_SWEEP_EVERY_S = 30.0
IDEMPOTENCY_TTL_S = 24 * 3600.0


def timeout_error(timeout_s: float) -> str:
    return f"timed out: no result within {timeout_s:g} s (RECEIVER_JOB_TIMEOUT_S)"


def sweep_every(timeout_s: float) -> float:
    """Often enough that a job fails within a few percent of its timeout (and at most 30 s late)."""
    return min(MAX_SWEEP_EVERY_S, max(0.05, timeout_s / 20))


async def sweep_once(runtime: Runtime) -> int:
    """Fail every job past its timeout, a batch per transaction; how many."""
    timeout_s = runtime.settings.job_timeout_s
    failed = 0
    while True:
        ids = await runtime.store.expire_jobs(
            created_before=runtime.store.clock() - timeout_s, error=timeout_error(timeout_s), limit=BATCH
        )
        for job_id in ids:
            log.warning("job %s timed out after %g s", job_id, timeout_s, extra={"job_id": job_id})
        failed += len(ids)
        if len(ids) < BATCH:
            return failed


async def run_job_timeouts(runtime: Runtime) -> None:
    every = sweep_every(runtime.settings.job_timeout_s)
    outage = Outage(log, "job timeout sweep")
    while not runtime.stopping.is_set():
        try:
            await sweep_once(runtime)
            await runtime.store.prune_idempotency_keys(older_than=runtime.store.clock() - IDEMPOTENCY_TTL_S)
            outage.ok()
        except StoreError as exc:
            outage.failed(exc)
        await wait_for(runtime.stopping, every)
