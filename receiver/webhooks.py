"""`POST /webhooks/{provider}`: authenticate, bound, parse (pure adapter), store, then answer."""

from __future__ import annotations

import standardwebhooks
from starlette.requests import Request
from starlette.responses import Response

from receiver.http import BodyTooLarge, FastJSONResponse, error, read_body, secret_equals
from receiver.ingest import ingest
from receiver.models import Outcome, Receipt
from receiver.providers import WEBHOOK_PARSERS, apiframe
from receiver.runtime import Runtime

# Headers worth keeping with a receipt for later diagnosis (never credentials).
_KEPT_HEADERS = (
    "content-type", "user-agent", "x-webhook-event", "x-webhook-signature",
    "webhook-id", "webhook-timestamp", "webhook-signature",
)


def _lumenfall_signature_valid(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        standardwebhooks.Webhook(secret).verify(body, headers, json_parse=False)
    except Exception:  # malformed headers, bad base64, non-UTF-8 body: all simply "not verified"
        return False
    return True


async def receive_webhook(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    settings = runtime.settings
    provider = request.path_params["provider"]
    parse = WEBHOOK_PARSERS.get(provider)
    if parse is None:
        runtime.metrics.webhooks_rejected.labels("unknown", "unknown_provider").inc()  # no label per made-up name
        return error(404, "unknown_provider", f"no webhook for provider {provider!r}; one of {sorted(WEBHOOK_PARSERS)}")
    if not secret_equals(request.query_params.get("token"), runtime.secrets.webhook_token):
        runtime.metrics.webhooks_rejected.labels(provider, "unauthorized").inc()
        return error(401, "unauthorized", "missing or wrong ?token=")
    try:
        body = await read_body(request, settings.max_body_bytes)
    except BodyTooLarge:
        runtime.metrics.webhooks_rejected.labels(provider, "body_too_large").inc()
        return error(413, "body_too_large", f"body exceeds {settings.max_body_bytes} bytes")

    headers = {k: v for k, v in request.headers.items() if k in _KEPT_HEADERS}
    if provider == "apiframe" and settings.apiframe_api_key is not None:
        if not apiframe.signature_valid(
            settings.apiframe_api_key.get_secret_value(), body, request.headers.get(apiframe.SIGNATURE_HEADER)
        ):
            runtime.metrics.webhooks_rejected.labels(provider, "bad_signature").inc()
            return error(401, "bad_signature", "X-Webhook-Signature does not match the body")
    if provider == "lumenfall" and settings.lumenfall_webhook_secret is not None:
        if not _lumenfall_signature_valid(settings.lumenfall_webhook_secret.get_secret_value(), body, headers):
            runtime.metrics.webhooks_rejected.labels(provider, "bad_signature").inc()
            return error(401, "bad_signature", "Standard Webhooks signature missing, stale or wrong")

    receipt = Receipt(provider=provider, source="webhook", body=body, headers=headers)
    result = await ingest(runtime, receipt, lambda: parse(request.headers, body))
    if result.outcome is Outcome.INVALID:
        return error(400, "invalid_payload", result.error or "invalid body", receipt_id=result.receipt_id)
    return FastJSONResponse(
        {"receipt_id": result.receipt_id, "outcome": result.outcome.value, "job_ids": result.job_ids},
        status_code=200,
    )
