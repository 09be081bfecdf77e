"""The one path every inbound message takes: keep it, parse it, apply it, count it."""

from __future__ import annotations

import logging
from typing import Callable

from receiver.errors import InvalidPayload
from receiver.models import ApplyResult, Completion, Outcome, Receipt
from receiver.runtime import Runtime

log = logging.getLogger("receiver.ingest")


async def ingest(runtime: Runtime, receipt: Receipt, parse: Callable[[], list[Completion]]) -> ApplyResult:
    """Store `receipt` and apply what `parse()` makes of it, in one transaction.

    A body the adapter rejects is still kept, as an `invalid` receipt; the result then carries the reason.
    """
    try:
        completions = parse()
    except InvalidPayload as exc:
        receipt_id = await runtime.store.record_invalid(receipt, str(exc))
        runtime.metrics.receipts.labels(receipt.provider, receipt.source, "invalid").inc()
        log.warning("invalid %s %s kept as receipt %s: %s", receipt.provider, receipt.source, receipt_id, exc)
        return ApplyResult(receipt_id, Outcome.INVALID, [], [], error=str(exc))
    result = await runtime.store.apply(receipt, completions)
    runtime.metrics.receipts.labels(receipt.provider, receipt.source, result.outcome.value).inc()
    for job_id in result.terminal_job_ids:
        log.info("job %s finished (%s %s)", job_id, receipt.provider, receipt.source, extra={"job_id": job_id})
    return result
