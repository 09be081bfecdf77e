"""Oxen: `media_generation_completed` on the SSE stream, and `GET /api/ai/queue/{id}` polling.

The stream says `model`/`url`, polling says `model_name`/`result_url`; both become one Completion.
"""

from __future__ import annotations

from receiver.errors import InvalidPayload
from receiver.models import Completion, JobStatus, Output
from receiver.providers._parse import error_text, guess_media_type, load_object, require_id

COMPLETED_EVENT = "media_generation_completed"

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
    raw = obj.get("status")
    if not isinstance(raw, str) or raw.lower() not in _STATUS:
        raise InvalidPayload(f"'status' must be one of {sorted(_STATUS)}, got {raw!r}")
    status = _STATUS[raw.lower()]
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
