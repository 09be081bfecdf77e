"""One callback attempt over HTTP (aiohttp): POST, bounded read of the answer, a short result text."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import standardwebhooks

from receiver.signing import signature_headers
from receiver.store.base import Exchange, Message
from receiver.tuning import DeliveryLimits
from receiver.util.backoff import parse_retry_after
from receiver.web.masking import masked_headers

ERROR_TEXT_CHARS = 200
DRAIN_BYTES = 65536  # a 2xx body up to this long is read, to keep its connection
USER_AGENT = "receiver-callbacks/1"


def signed_headers(webhook: standardwebhooks.Webhook, message_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt (the timestamp is fresh, the id is not)."""
    return {**signature_headers(webhook, message_id, body, at), "user-agent": USER_AGENT}


RESPONSE_KEPT_BYTES = 4096  # of an answer's body, kept with the attempt for the inspector


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    retry_after: float | None = None
    permanent: bool = False
    exchange: Exchange | None = field(default=None, compare=False)  # a record of the attempt, not its result


def _answer_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    return masked_headers((k, v) for k, v in response.raw_headers)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= ERROR_TEXT_CHARS else text[: ERROR_TEXT_CHARS - 1] + "…"


def describe_error(exc: BaseException) -> str:
    """A short text for a failed attempt: what went wrong, never the exception's repr (which names hosts,
    addresses and TLS internals of the destination's network)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "connection failed: name not resolved"
    if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)):
        return "connection failed: TLS error"
    if isinstance(exc, aiohttp.ClientConnectorError):  # its strerror names the address: only the errno's text
        errno = exc.os_error.errno
        return f"connection failed: {os.strerror(errno) if errno else type(exc.os_error).__name__}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed before an answer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "answer broken off"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "unreadable HTTP answer"
    if isinstance(exc, OSError) and exc.errno:
        return f"connection error: {os.strerror(exc.errno)}"
    return type(exc).__name__


async def _peek(response: aiohttp.ClientResponse, head: bytearray) -> str:
    """The start of an error answer's body (into `head`, up to RESPONSE_KEPT_BYTES), and a short text of it
    for the attempt record; never the whole of a big body."""
    while len(head) < RESPONSE_KEPT_BYTES:
        chunk = await response.content.readany()
        if not chunk:
            break
        head += chunk
    del head[RESPONSE_KEPT_BYTES:]
    return _short(bytes(head[: ERROR_TEXT_CHARS * 4]).decode("utf-8", "replace"))


async def _drain(response: aiohttp.ClientResponse, head: bytearray) -> None:
    """Read the rest of a 2xx's (small) body, its start into `head`: a connection goes back to the pool
    only once its answer was read whole. A body too long or broken off costs only that connection: the
    2xx is what counts."""
    read = 0
    try:
        while chunk := await response.content.readany():
            if len(head) < RESPONSE_KEPT_BYTES:
                head += chunk[: RESPONSE_KEPT_BYTES - len(head)]
            read += len(chunk)
            if read > DRAIN_BYTES:
                response.close()
                return
    except aiohttp.ClientError:
        response.close()


async def send(
    session: aiohttp.ClientSession,
    webhook: standardwebhooks.Webhook,
    message: Message,
    *,
    timeout: float,
) -> AttemptResult:
    """POST one message; every way it can go wrong becomes an `AttemptResult`, never an exception."""
    headers = signed_headers(webhook, message.id, message.body, datetime.now(UTC))
    status: int | None = None
    answer: dict[str, str] | None = None
    head = bytearray()

    def result(
        status_code: int | None, error: str | None, retry_after: float | None = None, *, permanent: bool = False
    ) -> AttemptResult:
        exchange = Exchange(headers, answer, bytes(head) if answer is not None else None)
        return AttemptResult(status_code, error, retry_after, permanent, exchange)

    try:
        # One deadline for the whole attempt (connect, send, answer, body): a trickling body cannot outlive it.
        async with asyncio.timeout(timeout):
            async with session.post(message.url, data=message.body, headers=headers, allow_redirects=False) as response:
                status = response.status
                answer = _answer_headers(response)
                if 200 <= status < 300:
                    await _drain(response, head)
                    return result(status, None)
                retry_after = parse_retry_after(response.headers.get("retry-after"), now=time.time())
                detail = await _peek(response, head)
    except TimeoutError:
        if status is not None and 200 <= status < 300:
            return result(status, None)  # answered 2xx; only the rest of its body was slow
        return result(None, f"timeout after {timeout:g}s")
    except aiohttp.NonHttpUrlClientError:
        return result(None, "unusable callback URL: not http or https", permanent=True)
    except Exception as exc:
        if status is None and isinstance(exc, (aiohttp.InvalidURL, ValueError)):  # yarl's are ValueErrors
            return result(None, "unusable callback URL", permanent=True)  # not the URL: it may hold a token
        if status is None:
            return result(None, describe_error(exc))
        if 200 <= status < 300:
            return result(status, None)
        return result(status, f"HTTP {status}, then {describe_error(exc)}")
    return result(status, f"HTTP {status}" + (f": {detail}" if detail else ""), retry_after)


def open_session(limits: DeliveryLimits) -> aiohttp.ClientSession:
    """The one pooled client of the delivery worker: kept-alive connections, bounded like the worker.

    Proxy variables (HTTP_PROXY, …) are honoured when set; looking them up costs a scan of the
    environment per request, so only then.
    """
    connector = aiohttp.TCPConnector(limit=limits.max_concurrency, limit_per_host=limits.per_host_concurrency)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
        trust_env=bool(urllib.request.getproxies()),
    )
