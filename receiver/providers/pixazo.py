"""Pixazo: webhook to the `X-Webhook-URL` given at submit; body has the status response's shape."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote

from receiver.errors import InvalidPayload
from receiver.models import Completion, JobStatus, Output
from receiver.providers._parse import error_text, guess_media_type, load_object, require_id, status_of, url_list
from receiver.providers._record import Provider
from receiver.providers._request import BadGeneration, GenerationSpec, ProviderRequest, Submitted, merge

_STATUS = {
    "QUEUED": JobStatus.PENDING,
    "PENDING": JobStatus.PENDING,
    "PROCESSING": JobStatus.PENDING,
    "IN_PROGRESS": JobStatus.PENDING,
    "COMPLETED": JobStatus.SUCCEEDED,
    "SUCCEEDED": JobStatus.SUCCEEDED,
    "FAILED": JobStatus.FAILED,
    "ERROR": JobStatus.FAILED,  # a system error on Pixazo's side (not charged), output null
    "CANCELLED": JobStatus.CANCELLED,
    "CANCELED": JobStatus.CANCELLED,
}


def parse_status(body: bytes) -> Completion:
    """Parse a webhook body or a `GET /v2/requests/status/{id}` answer (same shape)."""
    obj = load_object(body)
    request_id = require_id(obj, "request_id")
    status = status_of(obj, _STATUS, fold=str.upper)
    if status is JobStatus.SUCCEEDED:
        output = obj.get("output")
        if not isinstance(output, dict):
            raise InvalidPayload("'output' must be an object when status is COMPLETED")
        urls = url_list(output.get("media_url"), "output.media_url")
        if not urls:
            raise InvalidPayload("'output.media_url' is empty on a COMPLETED request")
        declared = output.get("media_type") if isinstance(output.get("media_type"), str) else None
        outputs = tuple([Output(url=u, media_type=declared or guess_media_type(u)) for u in urls])
        return Completion("pixazo", request_id, status, outputs=outputs)
    if status is JobStatus.FAILED:
        message = error_text(obj.get("error")) or error_text(obj.get("message")) or f"Pixazo status {obj['status']}"
        return Completion("pixazo", request_id, status, error=message)
    return Completion("pixazo", request_id, status)


def parse_webhook(headers: Mapping[str, str], body: bytes) -> list[Completion]:
    return [parse_status(body)]


# -- submitting and polling ------------------------------------------------------------------------

BASE_URL = "https://gateway.pixazo.ai"  # every path below is joined to it; RECEIVER_PIXAZO_BASE_URL overrides it

TEXT_MODEL = "grok-imagine-pro-text-to-image-quality"
EDIT_MODEL = "grok-imagine-pro-edit-quality"
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _headers(api_key: str) -> dict[str, str]:
    return {"Ocp-Apim-Subscription-Key": api_key, "Cache-Control": "no-cache"}


def build_submit(spec: GenerationSpec, *, api_key: str, webhook_url: str, request_id: str) -> ProviderRequest:
    """Text to image, or edit when there is an input image. Pixazo names the model in the path."""
    model = spec.model or (EDIT_MODEL if spec.input_image else TEXT_MODEL)
    if not _SEGMENT.fullmatch(model):
        raise BadGeneration("model", "a Pixazo model id is letters, digits, '.', '_' or '-'")
    body = merge({}, spec.params)
    body["prompt"] = spec.prompt
    if spec.input_image:
        body["image_urls"] = [spec.input_image]
    headers = {**_headers(api_key), "X-Webhook-URL": webhook_url}
    return ProviderRequest("POST", f"/{model}/v1/{model}-request", headers, body)


def parse_submit(request: ProviderRequest, body: bytes) -> list[Submitted]:
    """`{"request_id", "status": "QUEUED", "polling_url"}`."""
    return [Submitted(require_id(load_object(body), "request_id"))]


def build_poll(provider_job_id: str, *, api_key: str) -> ProviderRequest:
    return ProviderRequest("GET", f"/v2/requests/status/{quote(provider_job_id, safe='')}", _headers(api_key))


def parse_poll(body: bytes) -> list[Completion]:
    return [parse_status(body)]


PROVIDER = Provider(
    name="pixazo",
    order=10,
    base_url=BASE_URL,
    build_submit=build_submit,
    submit_answer=parse_submit,
    webhook=parse_webhook,
    poll=build_poll,
    poll_answer=parse_poll,
)
