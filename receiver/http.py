"""Small HTTP helpers shared by the routes: JSON errors, bounded body reads, auth checks."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from receiver.aio import read_capped
from receiver.errors import ReceiverError
from receiver.models import dumps


log = logging.getLogger("receiver.http")


class BodyTooLarge(ReceiverError):
    """A body over its limit (→ 413)."""


class FastJSONResponse(JSONResponse):
    """The same compact JSON as JSONResponse, rendered by orjson: for the webhook answer, on the hot path."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def secret_equals(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented secret with the real one."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (BodyTooLarge) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = await read_capped(request.stream(), limit)
    if body is None:
        raise BodyTooLarge
    return body


async def client_gone(request: Request, exc: Exception) -> Response:
    """A sender that hung up mid-body (or was dropped for sending too slowly): nothing was stored, and
    no one is left to answer. An ordinary event, not an error."""
    log.debug("%s %s: the client disconnected before its body was read", request.method, request.url.path)
    return Response(status_code=400)


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug: JSON like every other answer, and the connection closed, as its state is unknown. The
    traceback is still logged as an ERROR (by the server, once this answer is sent)."""
    return JSONResponse({"error": "internal_error", "message": "the receiver failed to answer this request"},
                        status_code=500, headers={"Connection": "close"})


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 as JSON, like every other answer."""
    status = getattr(exc, "status_code", 404)
    headers = getattr(exc, "headers", None)
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    return JSONResponse({"error": code, "message": str(getattr(exc, "detail", code))}, status_code=status,
                        headers=headers)
