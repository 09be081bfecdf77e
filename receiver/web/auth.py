"""The `/v1` plumbing shared by every API route: the bearer-token check and the 422/413 answers."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.web.http import BodyTooLarge, bearer_token, error, secret_equals
from receiver.web.validation import Invalid


class BearerAuth:
    """ASGI middleware for the `/v1` mount: `Authorization: Bearer API_TOKEN` or 401, before any route runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            runtime = scope["state"]["runtime"]
            if not secret_equals(bearer_token(Request(scope)), runtime.secrets.api_token):
                response = error(401, "unauthorized", "missing or wrong Authorization: Bearer token")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def invalid_request(request: Request, exc: Exception) -> Response:
    """A bad body or query: the 422 the validator built, naming the field."""
    assert isinstance(exc, Invalid)
    return exc.response


async def body_too_large(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BodyTooLarge)
    limit = request.state.runtime.settings.max_body_bytes
    return error(413, "body_too_large", f"body exceeds {limit} bytes")
