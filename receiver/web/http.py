"""Small HTTP helpers shared by the routes: JSON errors, bounded body reads, auth checks."""

from __future__ import annotations

import hmac
import logging
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive

from receiver.errors import ReceiverError

log = logging.getLogger("receiver.web.http")


# A Content-Length is whatever a client wrote: kept as a number a database column can hold.
MAX_DECLARED_BYTES = 2**62


class BodyTooLarge(ReceiverError):
    """A body over its limit (→ 413); `head` holds the first bytes read, if any (for the refusal record)."""

    def __init__(self, head: bytes = b"", size: int = 0) -> None:
        super().__init__("body too large")
        self.head = head
        self.size = size


HEAD_BYTES = 64 * 1024


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def secret_equals(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented secret with the real one."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def query_value(query_string: bytes, name: str) -> str | None:
    """The last `name` in a raw query string, decoded as Starlette's `request.query_params` decodes it."""
    text = query_string.decode("latin-1")
    if "%" in text or "+" in text:  # something to unquote: the standard library's way
        return dict(parse_qsl(text, keep_blank_values=True)).get(name)
    found = None
    for pair in text.split("&"):  # what parse_qsl does when nothing needs unquoting, at a fraction of its cost
        key, _, value = pair.partition("=")
        if key == name and pair:
            found = value
    return found


def header_value(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first header `name` (lower case) of an ASGI scope's `headers`, as Starlette's `Headers.get`
    reads it, without its mapping's lookup (on the path of every webhook)."""
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (BodyTooLarge) as soon as it passes `limit` bytes."""
    return await receive_body(request.receive, request.headers.get("content-length"), limit)


async def receive_body(receive: Receive, content_length: str | None, limit: int) -> bytes:
    """`read_body` for a plain ASGI endpoint: a declared length over `limit` is refused before any byte is
    read, a streamed one as soon as it passes it; a client that hangs up raises ClientDisconnect."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise BodyTooLarge(size=min(int(content_length), MAX_DECLARED_BYTES))
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(b"".join(chunks)[:HEAD_BYTES], size)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def receive_head(receive: Receive, limit: int) -> tuple[bytes, int]:
    """The first `limit` bytes of a body, and how many bytes were read; stops reading there (a refused
    request's body is kept only that far)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)[:limit], size


async def client_gone(request: Request, exc: Exception) -> Response:
    """A sender that hung up mid-body (or was dropped for sending too slowly): nothing was stored, and
    no one is left to answer. An ordinary event, not an error."""
    log.debug("%s %s: the client disconnected before its body was read", request.method, request.url.path)
    return Response(status_code=400)


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug: JSON like every other answer, and the connection closed, as its state is unknown. The
    traceback is still logged as an ERROR (by the server, once this answer is sent)."""
    return JSONResponse(
        {"error": "internal_error", "message": "the receiver failed to answer this request"},
        status_code=500,
        headers={"Connection": "close"},
    )


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 as JSON, like every other answer."""
    status = getattr(exc, "status_code", 404)
    headers = getattr(exc, "headers", None)
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    return JSONResponse(
        {"error": code, "message": str(getattr(exc, "detail", code))}, status_code=status, headers=headers
    )
