"""`POST /webhooks/{provider}`: authenticate, bound, parse (pure adapter), store, then answer.

The hottest route, so a plain ASGI endpoint: no Request or Response objects on the way of a webhook
that is accepted, and the app takes it at the door (`front.py`), past Starlette's middleware and router
(measured in docs/benchmarks.md). Errors still go through the app's exception handlers (store
unavailable, client gone, body too large), like every other route's.
"""

from __future__ import annotations

import orjson
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from receiver.web.http import error, query_value, receive_body, secret_equals
from receiver.ingest.inbound import ingest, parse
from receiver.models import Outcome, Receipt
from receiver.providers import REGISTRY, WEBHOOK_PROVIDERS
from receiver.runtime import Runtime

# Headers worth keeping with a receipt for later diagnosis (never credentials), as ASGI names them.
_KEPT_HEADERS = frozenset({
    b"content-type", b"user-agent", b"x-webhook-event", b"x-webhook-signature",
    b"webhook-id", b"webhook-timestamp", b"webhook-signature",
})
_JSON_HEADERS = [(b"content-type", b"application/json")]
PREFIX = "/webhooks/"
PATH = PREFIX + "{provider}"  # the route: what `front.py` takes at the door, and Starlette's way to the same endpoint


class WebhookEndpoint:
    """The route's ASGI app (a class, so Starlette's `Route` passes it scope, receive and send as they are)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive_webhook(scope, receive, send)


async def receive_webhook(scope: Scope, receive: Receive, send: Send) -> None:
    runtime: Runtime = scope["state"]["runtime"]
    settings = runtime.settings
    provider = scope["path_params"]["provider"]
    known = REGISTRY.get(provider)
    if known is None or not known.webhooks:
        runtime.metrics.webhooks_rejected.labels("unknown", "unknown_provider").inc()  # no label per made-up name
        answer = error(404, "unknown_provider", f"no webhook for provider {provider!r}; one of {sorted(WEBHOOK_PROVIDERS)}")
        return await answer(scope, receive, send)
    if not secret_equals(query_value(scope["query_string"], "token"), runtime.secrets.webhook_token):
        runtime.metrics.webhooks_rejected.labels(provider, "unauthorized").inc()
        return await error(401, "unauthorized", "missing or wrong ?token=")(scope, receive, send)
    headers = Headers(scope=scope)
    body = await receive_body(receive, headers.get("content-length"), settings.max_body_bytes)  # BodyTooLarge: 413

    secret = getattr(settings, known.webhook_secret) if known.webhook_secret else None
    if secret is not None and not known.verify_webhook(secret.get_secret_value(), body, headers):
        runtime.metrics.webhooks_rejected.labels(provider, "bad_signature").inc()
        return await error(401, "bad_signature", "the webhook's signature is missing, stale or wrong")(scope, receive, send)

    kept = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _KEPT_HEADERS}
    receipt = Receipt(provider=provider, source="webhook", body=body, headers=kept)
    result = await ingest(runtime, receipt, parse(receipt, lambda: known.parse_webhook(headers, body)))
    if result.outcome is Outcome.INVALID:
        answer = error(400, "invalid_payload", result.error or "invalid body", receipt_id=result.receipt_id)
        return await answer(scope, receive, send)
    payload = orjson.dumps({"receipt_id": result.receipt_id, "outcome": result.outcome.value, "job_ids": result.job_ids})
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(payload)).encode()), *_JSON_HEADERS]})
    await send({"type": "http.response.body", "body": payload})
