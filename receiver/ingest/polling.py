"""Asking a provider about one job: the one poll the reconciler and Oxen's catch-up poll share.

Only a terminal answer is stored (as a `poll` receipt) and applied; "still running" is not stored, as a
receipt per poll would be noise. An answer that cannot be read, or that speaks of another job, is kept
as an `invalid` receipt and changes nothing. A failed call changes nothing either: an outage, a refusal,
or a 404 (for every provider alike: it does not know the id, which is not the job's status) is an
`error`, and the job is polled again later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from receiver.errors import InvalidPayload, ProviderError
from receiver.ingest.inbound import ingest, parse
from receiver.ingest.provider_calls import call
from receiver.models import ApplyResult, Completion, Job, JobStatus, PollResult, Receipt
from receiver.providers import REGISTRY
from receiver.runtime import Runtime

log = logging.getLogger("receiver.ingest.reconciler")  # the name operators know polls by, from either caller


@dataclass(frozen=True, slots=True)
class Polled:
    """What one poll came to; `applied` is the ingest of a terminal or invalid answer."""

    result: PollResult
    applied: ApplyResult | None = None

    @property
    def finished(self) -> bool:
        """The poll ended the job (not a duplicate of an answer already applied)."""
        return self.applied is not None and bool(self.applied.terminal_job_ids)


async def poll_job(runtime: Runtime, job: Job, *, timeout: float) -> Polled:
    """Poll `job` at its provider within `timeout`, ingest a terminal answer, and count the poll."""
    try:
        polled = await _poll(runtime, job, timeout=timeout)
    except Exception:  # deliberate: a bug (or a store hiccup) on one job must not end the loop polling the others
        log.exception("polling %s job %s broke", job.provider, job.id, extra={"job_id": job.id})
        polled = Polled("error")
    runtime.metrics.reconcile_polls.labels(job.provider, polled.result).inc()
    return polled


async def _poll(runtime: Runtime, job: Job, *, timeout: float) -> Polled:
    provider = REGISTRY[job.provider]
    api_key = runtime.settings.api_key(job.provider)
    if not provider.polls or api_key is None:
        return Polled("error")
    request = provider.build_poll(job.provider_job_id, api_key=api_key.get_secret_value())
    try:
        response = await call(runtime, job.provider, request, timeout=timeout)
    except ProviderError as exc:
        if exc.status == 404:
            log.warning(
                "%s does not know %s (404): job %s left as it is",
                job.provider,
                job.provider_job_id,
                job.id,
                extra={"job_id": job.id},
            )
        else:
            log.info(
                "polling %s job %s failed (status %s): %s",
                job.provider,
                job.id,
                exc.status,
                exc.message,
                extra={"job_id": job.id},
            )
        return Polled("error")
    body = response.content
    receipt = Receipt(job.provider, "poll", body, {"content-type": response.headers.get("content-type", "")})

    parsed = parse(receipt, lambda: _about(job, provider.parse_poll(body)))
    if isinstance(parsed, InvalidPayload):
        return Polled("invalid", await ingest(runtime, receipt, parsed))  # kept as an invalid receipt
    if all(c.status is JobStatus.PENDING for c in parsed):
        return Polled("pending")
    return Polled("terminal", await ingest(runtime, receipt, parsed))


def _about(job: Job, completions: list[Completion]) -> list[Completion]:
    """The answer's completions, if every one is about the job asked about."""
    for completion in completions:
        if completion.provider_job_id != job.provider_job_id:
            raise InvalidPayload(f"a poll of {job.provider_job_id!r} answered about {completion.provider_job_id!r}")
    return completions
