"""The app itself: Starlette, with `POST /webhooks/{provider}` taken at the door.

Webhooks are most of what the receiver answers, and Starlette's layers before an endpoint (its error
middlewares, each wrapping `send`, and the router) cost about as much per request as the endpoint's
own parsing (docs/benchmarks.md). So a webhook goes straight to its endpoint; anything else, or a
webhook under a `root_path`, takes the usual way, which reaches the same endpoint. An exception from
the endpoint is answered by the app's own handler for it, as Starlette would have.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from receiver.ingest.webhooks import PREFIX, receive_webhook


class Receiver(Starlette):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] == "http"
            and path.startswith(PREFIX)
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and "/" not in path[len(PREFIX) :]
            and len(path) > len(PREFIX)
        ):
            scope["app"] = self
            scope["path_params"] = {"provider": path[len(PREFIX) :]}
            try:
                await receive_webhook(scope, receive, send)
            except Exception as exc:
                await self._answer(exc, scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _answer(self, exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's handler for `exc` (the closest class), as Starlette's middlewares would; an exception
        only the catch-all handles is raised again once answered, so the server logs its traceback."""
        handler_class = next(c for c in type(exc).__mro__ if c in self.exception_handlers)
        response = await self.exception_handlers[handler_class](Request(scope, receive), exc)
        await response(scope, receive, send)
        if handler_class is Exception:
            raise exc
