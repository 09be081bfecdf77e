"""The Inspector: a static page at `/ui/` (files in receiver/ui) and the `/v1/stats` summary it shows."""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver.errors import StoreError
from receiver.providers import REGISTRY
from receiver.runtime import Runtime
from receiver.sinks.publisher import sinks_listing
from receiver.store import describe_store
from receiver.web.http import http_error
from receiver.web.validation import known_params

UI_DIR = Path(__file__).parent.parent / "ui"

# The page loads nothing from another host and runs only its own script; images may come from
# provider CDNs (outputs not mirrored yet), so img-src is the one open directive.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:; "
    "media-src 'self' https: http: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
UI_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # provider CDNs need not learn where the page lives
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-cache"),  # revalidate (ETag), so an upgrade shows at once
)


class SecurityHeaders:
    """ASGI wrapper adding UI_HEADERS to every response of the wrapped app (404s included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in UI_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + list(UI_HEADERS)}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except HTTPException as exc:  # StaticFiles' 404/405: answered here (JSON, as elsewhere) with the headers
            await (await http_error(Request(scope), exc))(scope, receive, send_with_headers)


def ui_mount() -> Mount:
    """`/ui/` serving receiver/ui (index.html for the directory itself)."""
    return Mount("/ui", app=SecurityHeaders(StaticFiles(directory=UI_DIR, html=True)), name="ui")


# The providers in listing order, and which take webhooks: the page's filters and `Copy as curl` follow it.
PROVIDERS_LISTING = [{"name": p.name, "webhooks": p.webhooks} for p in REGISTRY.values()]


async def stats(request: Request) -> Response:
    """`GET /v1/stats`: which store (never its password) and whether it answers, the Oxen stream's state,
    jobs by status, callback backlog (count, oldest age), the providers: all the inspector's glance, behind
    the token."""
    runtime: Runtime = request.state.runtime
    known_params(request.query_params, frozenset())
    try:
        await runtime.store.ping()
    except StoreError:
        return JSONResponse(
            {
                "store": describe_store(runtime.settings.database_url),
                "store_state": "unreachable",
                "public_url": runtime.settings.base_public_url,
                "mirroring": runtime.media is not None,
                "oxen_stream": runtime.oxen.state,
                "oxen_stream_error": runtime.oxen.last_error,
                "jobs": {},
                "delivery_backlog": {"count": 0, "oldest_age_s": None},
                "providers": PROVIDERS_LISTING,
            }
        )
    count, oldest = await runtime.store.delivery_backlog()
    age = round(max(0.0, runtime.store.clock() - oldest), 3) if oldest is not None else None
    return JSONResponse(
        {
            "store": describe_store(runtime.settings.database_url),
            "store_state": "ok",
            "public_url": runtime.settings.base_public_url,  # for the page's `Copy as curl`
            "mirroring": runtime.media is not None,  # else outputs are never mirrored: not "mirroring…"
            "oxen_stream": runtime.oxen.state,
            "oxen_stream_error": runtime.oxen.last_error,
            "jobs": await runtime.store.job_counts(),
            "delivery_backlog": {"count": count, "oldest_age_s": age},
            "sinks": await sinks_listing(runtime),
            "providers": PROVIDERS_LISTING,
        }
    )
