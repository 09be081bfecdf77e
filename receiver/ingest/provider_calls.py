"""Calls the receiver makes to providers (submit, poll, Lumenfall's generation): one place for bounds.

Every call has a whole-call deadline, from connecting to the answer's last byte (httpx's own timeouts
only bound each wait for the next byte, so an answer that trickles would hold a call forever), and
every answer a size cap, read as a stream and given up as soon as it passes the cap.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx

from receiver.errors import ProviderError
from receiver.providers._request import ProviderRequest, refusal_message
from receiver.runtime import Runtime
from receiver.util.aio import read_capped

log = logging.getLogger("receiver.ingest.provider_calls")

MAX_ANSWER_BYTES = 8 * 1024 * 1024  # a submit or poll answer: a few KiB in practice
MAX_IMAGE_ANSWER_BYTES = 32 * 1024 * 1024  # Lumenfall's answer may carry the images themselves (b64_json)


@dataclass(frozen=True, slots=True)
class Answer:
    """A provider's whole answer, read within the deadline and the cap."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300


async def send(
    runtime: Runtime, provider: str, request: ProviderRequest, *, timeout: float, max_bytes: int = MAX_ANSWER_BYTES
) -> Answer:
    """Send `request` to `provider`'s base URL; a deadline passed, a network error or an answer over
    `max_bytes` is a ProviderError without status."""
    url = runtime.settings.base_url(provider) + request.path
    try:
        async with asyncio.timeout(timeout):
            async with runtime.http.stream(
                request.method, url, headers=request.headers, json=request.json, timeout=timeout
            ) as response:
                body = await read_capped(response.aiter_bytes(), max_bytes)
                if body is None:
                    log.warning(
                        "%s answered %s %s with more than %d bytes: call abandoned",
                        provider,
                        request.method,
                        request.path,
                        max_bytes,
                    )
                    raise ProviderError(f"{provider}'s answer exceeds {max_bytes} bytes")
                return Answer(response.status_code, response.headers, body)
    except (TimeoutError, httpx.TimeoutException):
        raise ProviderError(f"{provider} did not answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise ProviderError(f"cannot reach {provider}: {type(exc).__name__}: {exc}") from None


async def call(runtime: Runtime, provider: str, request: ProviderRequest, *, timeout: float) -> Answer:
    """`send`, and any non-2xx answer is a ProviderError with the provider's status and message."""
    response = await send(runtime, provider, request, timeout=timeout)
    if not response.is_success:
        raise ProviderError(refusal_message(response.status_code, response.content), status=response.status_code)
    return response
