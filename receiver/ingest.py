"""The one path every inbound message takes: keep it, parse it, apply it, count it."""

from __future__ import annotations

import dataclasses
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
        completions = _storable(parse())
    except Exception as exc:
        if isinstance(exc, InvalidPayload):
            reason = str(exc)
        else:  # an adapter bug: still keep the bytes, answer 400, and say so loudly
            log.exception("%s adapter failed on a %s message", receipt.provider, receipt.source)
            reason = f"unreadable {receipt.provider} message ({type(exc).__name__})"
        receipt_id = await runtime.store.record_invalid(receipt, reason)
        runtime.metrics.receipts.labels(receipt.provider, receipt.source, "invalid").inc()
        log.warning("invalid %s %s kept as receipt %s: %s", receipt.provider, receipt.source, receipt_id, reason)
        return ApplyResult(receipt_id, Outcome.INVALID, [], [], error=reason)
    result = await runtime.store.apply(receipt, completions)
    runtime.metrics.receipts.labels(receipt.provider, receipt.source, result.outcome.value).inc()
    for job_id in result.terminal_job_ids:
        log.info("job %s finished (%s %s)", job_id, receipt.provider, receipt.source, extra={"job_id": job_id})
    return result


def _storable(completions: list[Completion]) -> list[Completion]:
    """The completions, once their text can be stored: JSON may escape a lone surrogate (`"\\ud800"`), which
    no UTF-8 column takes. An id or URL holding one is invalid; an error message is mended."""
    mended: list[Completion] = []
    for completion in completions:
        texts = [completion.provider_job_id]
        texts += [t for o in completion.outputs for t in (o.url, o.key, o.media_type) if t is not None]
        if not all(_encodable(t) for t in texts):
            raise InvalidPayload("an id or URL holds an unpaired UTF-16 surrogate")
        if completion.error is not None and not _encodable(completion.error):
            completion = dataclasses.replace(completion, error=completion.error.encode("utf-8", "replace").decode())
        mended.append(completion)
    return mended


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
