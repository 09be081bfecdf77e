"""Oxen: `media_generation_completed` on the SSE stream, and `GET /api/ai/queue/{id}` polling.

The stream says `model`/`url`, polling says `model_name`/`result_url`; both become one Completion.
"""

from __future__ import annotations

from urllib.parse import quote

from receiver.errors import InvalidPayload
from receiver.models import Completion, JobStatus, Output
from receiver.providers._parse import error_text, guess_media_type, load_object, object_list, require_id, status_of
from receiver.providers._record import Provider
from receiver.providers._request import GenerationSpec, ProviderRequest, Submitted, merge

COMPLETED_EVENT = "media_generation_completed"
STREAM_PATH = "/api/events"  # the account's Server-Sent Events, `COMPLETED_EVENT` among them

_STATUS = {
    "queued": JobStatus.PENDING,
    "processing": JobStatus.PENDING,
    "running": JobStatus.PENDING,
    "succeeded": JobStatus.SUCCEEDED,
    "completed": JobStatus.SUCCEEDED,
    "failed": JobStatus.FAILED,
    "cancelled": JobStatus.CANCELLED,
    "canceled": JobStatus.CANCELLED,
}


def _parse(body: bytes, url_field: str) -> Completion:
    obj = load_object(body)
    generation_id = require_id(obj, "generation_id")
    status = status_of(obj, _STATUS, fold=str.lower)
    if status is JobStatus.SUCCEEDED:
        url = obj.get(url_field) or obj.get("url") or obj.get("result_url")
        if not isinstance(url, str) or not url:
            raise InvalidPayload(f"'{url_field}' must be a URL when status is succeeded")
        word = obj.get("media_type") if isinstance(obj.get("media_type"), str) else None
        return Completion("oxen", generation_id, status, outputs=(Output(url, guess_media_type(url, word)),))
    if status is JobStatus.FAILED:
        message = error_text(obj.get("error")) or error_text(obj.get("error_message")) or "Oxen generation failed"
        return Completion("oxen", generation_id, status, error=message)
    if status is JobStatus.CANCELLED:
        return Completion("oxen", generation_id, status, error=error_text(obj.get("error_message")))
    return Completion("oxen", generation_id, status)


def parse_stream_event(data: bytes) -> Completion:
    """Parse the `data:` of a `media_generation_completed` event."""
    return _parse(data, "url")


def parse_status(body: bytes) -> Completion:
    """Parse a `GET /api/ai/queue/{generation_id}` answer."""
    return _parse(body, "result_url")


# -- submitting and polling ------------------------------------------------------------------------

BASE_URL = "https://hub.oxen.ai"  # every path below is joined to it; RECEIVER_OXEN_BASE_URL overrides it

TEXT_MODEL = "xai-grok-imagine-image"
EDIT_MODEL = "xai-grok-imagine-image-edit"


def stream_headers(api_key: str) -> dict[str, str]:
    """How the stream (`STREAM_PATH`) is authenticated."""
    return {"Authorization": f"Bearer {api_key}"}


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def build_submit(spec: GenerationSpec, *, api_key: str, webhook_url: str, request_id: str) -> ProviderRequest:
    """`POST /api/ai/queue`. No webhook: results come on the event stream (and from polling)."""
    body = merge({"model": EDIT_MODEL if spec.input_image else TEXT_MODEL}, spec.params)
    if spec.model:
        body["model"] = spec.model
    body["prompt"] = spec.prompt
    if spec.input_image:
        body["input_image"] = spec.input_image
    return ProviderRequest("POST", "/api/ai/queue", _headers(api_key), body)


def parse_submit(request: ProviderRequest, body: bytes) -> list[Submitted]:
    """`{"generations": [{"generation_id", "status": "queued"}, …]}`: one job per generation."""
    return [Submitted(require_id(item, "generation_id")) for item in object_list(load_object(body), "generations")]


def build_poll(provider_job_id: str, *, api_key: str) -> ProviderRequest:
    return ProviderRequest("GET", f"/api/ai/queue/{quote(provider_job_id, safe='')}", _headers(api_key))


def parse_poll(body: bytes) -> list[Completion]:
    return [parse_status(body)]


PROVIDER = Provider(
    name="oxen",
    order=50,
    base_url=BASE_URL,
    build_submit=build_submit,
    submit_answer=parse_submit,
    poll=build_poll,
    poll_answer=parse_poll,
)
