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

from receiver.ingest.inbound import ingest, parse
from receiver.models import Outcome, Receipt
from receiver.providers import REGISTRY, WEBHOOK_PROVIDERS
from receiver.refusals import BODY_KEPT_BYTES
from receiver.runtime import Runtime
from receiver.store.refusal_rows import Refusal
from receiver.web.http import (
    MAX_DECLARED_BYTES,
    BodyTooLarge,
    error,
    header_value,
    query_value,
    receive_body,
    receive_head,
    secret_equals,
)
from receiver.web.masking import masked_headers, masked_query

# Headers worth keeping with a receipt for later diagnosis (never credentials), as ASGI names them.
_KEPT_HEADERS = frozenset(
    {
        b"content-type",
        b"user-agent",
        b"x-webhook-event",
        b"x-webhook-signature",
        b"webhook-id",
        b"webhook-timestamp",
        b"webhook-signature",
    }
)
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
        message = f"no webhook for provider {provider!r}; one of {sorted(WEBHOOK_PROVIDERS)}"
        return await _refuse(scope, receive, send, 404, "unknown_provider", message)
    if not secret_equals(query_value(scope["query_string"], "token"), runtime.secrets.webhook_token):
        runtime.metrics.webhooks_rejected.labels(provider, "unauthorized").inc()
        return await _refuse(scope, receive, send, 401, "unauthorized", "missing or wrong ?token=")
    headers = Headers(scope=scope)
    try:
        body = await receive_body(receive, header_value(scope["headers"], b"content-length"), settings.max_body_bytes)
    except BodyTooLarge as exc:  # answered 413 by the app's handler; kept as a refusal first (a queue append)
        _keep(runtime, scope, 413, "too_large", f"body over {settings.max_body_bytes} bytes", exc.head, exc.size)
        raise

    secret = settings.provider_secret(provider, known.webhook_secret) if known.webhook_secret else None
    if secret is not None and not known.verify_webhook(secret.get_secret_value(), body, headers):
        runtime.metrics.webhooks_rejected.labels(provider, "bad_signature").inc()
        message = "the webhook's signature is missing, stale or wrong"
        await error(401, "bad_signature", message)(scope, receive, send)
        return _keep(runtime, scope, 401, "bad_signature", message, body[:BODY_KEPT_BYTES], len(body))

    kept = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _KEPT_HEADERS}
    receipt = Receipt(provider=provider, source="webhook", body=body, headers=kept)
    result = await ingest(runtime, receipt, parse(receipt, lambda: known.parse_webhook(headers, body)))
    if result.outcome is Outcome.INVALID:
        message = result.error or "invalid body"
        answer = error(400, "invalid_payload", message, receipt_id=result.receipt_id)
        await answer(scope, receive, send)
        return _keep(
            runtime,
            scope,
            400,
            "invalid_body",
            message,
            body[:BODY_KEPT_BYTES],
            len(body),
            receipt_id=result.receipt_id,
        )
    payload = orjson.dumps(
        {"receipt_id": result.receipt_id, "outcome": result.outcome._value_, "job_ids": result.job_ids}
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(payload)).encode()), *_JSON_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
    """Answer a request refused before its body was read, keeping the body's first bytes with the refusal:
    they are read (up to BODY_KEPT_BYTES, what the client sends anyway) before the answer, as a server
    cannot read a body once it has answered."""
    head, size = await receive_head(receive, BODY_KEPT_BYTES)
    await error(status, code, message)(scope, receive, send)
    declared = Headers(scope=scope).get("content-length")
    _keep(
        scope["state"]["runtime"],
        scope,
        status,
        code,
        message,
        head,
        max(size, min(int(declared), MAX_DECLARED_BYTES)) if declared and declared.isdigit() else size,
    )


def _keep(
    runtime: Runtime,
    scope: Scope,
    status: int,
    reason: str,
    detail: str,
    body: bytes,
    size: int,
    *,
    receipt_id: int | None = None,
) -> None:
    """Queue a masked copy of a refused request for the store (never waits: see receiver.refusals)."""
    runtime.refusals.offer(
        Refusal(
            provider=scope["path_params"]["provider"][:64],
            reason=reason,
            status=status,
            detail=detail[:512],
            method=scope["method"],
            path=scope["path"][:512],
            query=masked_query(scope["query_string"]),
            headers=masked_headers(scope["headers"]),
            body=body,
            body_bytes=size,
            received_at=runtime.store.clock(),
            receipt_id=receipt_id,
        )
    )
