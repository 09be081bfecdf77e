"""Apiframe v2: webhook events completed/failed/progress, signed with HMAC-SHA256 keyed by SHA256(api key)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

from receiver.errors import InvalidPayload
from receiver.models import IDEMPOTENCY_KEY_MAX_LENGTH, Completion, JobStatus, Output
from receiver.providers._parse import error_text, guess_media_type, load_object, url_list
from receiver.providers._record import Provider
from receiver.providers._request import BadGeneration, GenerationSpec, ProviderRequest, Submitted, merge

SIGNATURE_HEADER = "x-webhook-signature"

_EVENTS = {"completed": JobStatus.SUCCEEDED, "failed": JobStatus.FAILED, "progress": JobStatus.PENDING}
_STATUS = {
    "QUEUED": JobStatus.PENDING,
    "PENDING": JobStatus.PENDING,
    "PROCESSING": JobStatus.PENDING,
    "COMPLETED": JobStatus.SUCCEEDED,
    "FAILED": JobStatus.FAILED,
    "CANCELLED": JobStatus.CANCELLED,
    "CANCELED": JobStatus.CANCELLED,
}


def signature_valid(api_key: str, body: bytes, header: str | None) -> bool:
    """`X-Webhook-Signature: sha256=<hex>` (or bare hex) over the raw body; constant-time."""
    if not header:
        return False
    value = header.strip()
    if value.lower().startswith("sha256="):
        value = value[len("sha256=") :]
    key = hashlib.sha256(api_key.encode("utf-8")).digest()
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), value.lower().encode("utf-8", "replace"))


def verify_webhook(api_key: str, body: bytes, headers: Mapping[str, str]) -> bool:
    return signature_valid(api_key, body, headers.get(SIGNATURE_HEADER))


def sign(api_key: str, body: bytes) -> str:
    """The header value Apiframe would send; used by tests and the fake server."""
    key = hashlib.sha256(api_key.encode("utf-8")).digest()
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def parse_job(body: bytes) -> Completion:
    """Parse a webhook body (`jobId`, `event`) or a `GET /v2/jobs/{id}` answer (`id`, `status`)."""
    obj = load_object(body)
    job_id = obj.get("jobId", obj.get("id"))
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        job_id = str(job_id)
    if not isinstance(job_id, str) or not job_id.strip():
        raise InvalidPayload("'jobId' must be a non-empty string")
    job_id = job_id.strip()
    event, status_word = obj.get("event"), obj.get("status")
    if isinstance(status_word, str) and status_word.upper() in _STATUS:
        status = _STATUS[status_word.upper()]
    elif isinstance(event, str) and event.lower() in _EVENTS:
        status = _EVENTS[event.lower()]
    else:
        raise InvalidPayload(f"unknown Apiframe event/status: {event!r}/{status_word!r}")
    if status is JobStatus.SUCCEEDED:
        # `result` is a URL string in every example but untyped in the schema: accept a list too.
        urls = url_list(obj.get("result"), "result")
        if not urls:
            raise InvalidPayload("'result' is missing on a completed job")
        return Completion("apiframe", job_id, status, outputs=tuple(Output(u, guess_media_type(u)) for u in urls))
    if status is JobStatus.FAILED:
        return Completion("apiframe", job_id, status, error=error_text(obj.get("error")) or "Apiframe job failed")
    if status is JobStatus.CANCELLED:
        return Completion("apiframe", job_id, status, error=error_text(obj.get("error")))
    return Completion("apiframe", job_id, status)


def parse_webhook(headers: Mapping[str, str], body: bytes) -> list[Completion]:
    return [parse_job(body)]


# -- submitting and polling ------------------------------------------------------------------------

BASE_URL = "https://api.apiframe.ai"  # every path below is joined to it; RECEIVER_APIFRAME_BASE_URL overrides it

MODEL = "grok-imagine-image"
WEBHOOK_EVENTS = ("completed", "failed")


def _headers(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key}


def build_submit(spec: GenerationSpec, *, api_key: str, webhook_url: str, request_id: str) -> ProviderRequest:
    """`POST /v2/images/generate`; `request_id` is the Idempotency-Key, so a retried submit is charged once."""
    if not 0 < len(request_id) <= IDEMPOTENCY_KEY_MAX_LENGTH:
        raise BadGeneration("Idempotency-Key", f"must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters")
    body = merge({"model": MODEL}, spec.params)
    if spec.model:
        body["model"] = spec.model
    body["prompt"] = spec.prompt
    if spec.input_image:
        body["grokParams"] = merge(body.get("grokParams") or {}, {"image": spec.input_image})
    body.update(webhookUrl=webhook_url, webhookEvents=list(WEBHOOK_EVENTS))
    return ProviderRequest("POST", "/v2/images/generate", {**_headers(api_key), "Idempotency-Key": request_id}, body)


def parse_submit(request: ProviderRequest, body: bytes) -> list[Submitted]:
    """`{"jobId", "status": "QUEUED"}`."""
    obj = load_object(body)
    job_id = obj.get("jobId", obj.get("id"))
    if not isinstance(job_id, str) or not job_id.strip():
        raise InvalidPayload("'jobId' must be a non-empty string")
    return [Submitted(job_id.strip())]


def build_poll(provider_job_id: str, *, api_key: str) -> ProviderRequest:
    return ProviderRequest("GET", f"/v2/jobs/{quote(provider_job_id, safe='')}", _headers(api_key))


def parse_poll(body: bytes) -> list[Completion]:
    return [parse_job(body)]


PROVIDER = Provider(
    name="apiframe",
    order=30,
    base_url=BASE_URL,
    build_submit=build_submit,
    submit_answer=parse_submit,
    webhook=parse_webhook,
    webhook_signature=verify_webhook,
    webhook_secret="api_key",  # Apiframe signs with (a hash of) the API key itself
    poll=build_poll,
    poll_answer=parse_poll,
    forwards_idempotency_key=True,
)
