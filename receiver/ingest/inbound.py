"""The one path every inbound message takes: keep it, parse it, apply it, count it."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from receiver.errors import InvalidPayload
from receiver.models import ApplyResult, Completion, Outcome, Receipt
from receiver.runtime import Runtime

log = logging.getLogger("receiver.ingest.inbound")


Parsed = list[Completion] | InvalidPayload  # what an adapter made of a message: its completions, or why not


def parse(receipt: Receipt, adapter: Callable[[], list[Completion]]) -> Parsed:
    """Run a pure adapter over a message, once: its completions, or why the message is invalid. An
    adapter bug (any other exception) is logged loudly and makes the message invalid too, so its bytes
    are still kept and the sender gets a 400, not a 500."""
    try:
        return adapter()
    except InvalidPayload as exc:
        return exc
    except Exception as exc:  # deliberate: a bug in an adapter must not lose the message
        log.exception("%s adapter failed on a %s message", receipt.provider, receipt.source)
        return InvalidPayload(f"unreadable {receipt.provider} message ({type(exc).__name__})")


async def ingest(runtime: Runtime, receipt: Receipt, parsed: Parsed) -> ApplyResult:
    """Store `receipt` and apply what its adapter made of it (`parse`), in one transaction.

    A message the adapter refused is still kept, as an `invalid` receipt; the result then carries the reason.
    """
    try:
        completions = parsed if isinstance(parsed, InvalidPayload) else _storable(parsed)
    except InvalidPayload as exc:
        completions = exc
    if isinstance(completions, InvalidPayload):
        reason = str(completions)
        receipt_id = await runtime.store.record_invalid(receipt, reason)
        runtime.metrics.count_receipt(receipt.provider, receipt.source, "invalid")
        log.warning("invalid %s %s kept as receipt %s: %s", receipt.provider, receipt.source, receipt_id, reason)
        return ApplyResult(receipt_id, Outcome.INVALID, [], [], error=reason)
    result = await runtime.store.apply(receipt, completions)
    runtime.metrics.count_receipt(receipt.provider, receipt.source, result.outcome._value_)
    if result.terminal_job_ids and log.isEnabledFor(logging.INFO):
        runtime.finished_lines.add(result.terminal_job_ids, f"{receipt.provider} {receipt.source}")
    return result


MAX_URL_CHARS = 8192  # an http(s) output URL; data: URIs are bounded by the message itself
_URL_SCHEMES = ("http://", "https://")


def _storable(completions: list[Completion]) -> list[Completion]:
    """The completions, once their text can be stored and their URLs used downstream.

    JSON may escape a lone surrogate (`"\\ud800"`), which no UTF-8 column takes: an id or URL holding one
    is invalid, an error message is mended. An output URL must be http(s) (at most MAX_URL_CHARS) or a
    `data:` URI: anything else (`javascript:`, `file:`) is never passed on."""
    mended: list[Completion] = []
    for completion in completions:
        texts = [completion.provider_job_id]
        texts += [t for o in completion.outputs for t in (o.url, o.key, o.media_type) if t is not None]
        if not all(map(storable_text, texts)):
            raise InvalidPayload("an id or URL holds an unpaired UTF-16 surrogate")
        for output in completion.outputs:
            problem = url_problem(output.url)
            if problem is not None:
                raise InvalidPayload(f"output URL {output.url[:100]!r}: {problem}")
        if completion.error is not None and not storable_text(completion.error):
            completion = dataclasses.replace(completion, error=completion.error.encode("utf-8", "replace").decode())
        mended.append(completion)
    return mended


def url_problem(url: str) -> str | None:
    """Why an output URL cannot be handed downstream, or None."""
    lowered = url[:8].lower()
    if lowered.startswith("data:"):
        return None
    if not lowered.startswith(_URL_SCHEMES):
        return "must be http(s):// or a data: URI"
    if len(url) > MAX_URL_CHARS:
        return f"longer than {MAX_URL_CHARS} characters"
    return None


def storable_text(text: str) -> bool:
    """False for text holding a lone surrogate, which no UTF-8 column (or JSON answer) takes."""
    if text.isascii():  # a flag of the string, no scan: most ids and URLs
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
