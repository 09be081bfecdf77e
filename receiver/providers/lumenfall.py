"""Lumenfall: images answer synchronously; its async (video) API posts Standard Webhooks."""

from __future__ import annotations

from collections.abc import Mapping

import standardwebhooks

from receiver.errors import InvalidPayload
from receiver.models import Completion, JobStatus, Output
from receiver.providers._parse import error_text, guess_media_type, load_object, object_list, require_id
from receiver.providers._record import Provider
from receiver.providers._request import BadGeneration, GenerationSpec, ProviderRequest, merge

_EVENTS = {
    "video.completed": JobStatus.SUCCEEDED,
    "video.failed": JobStatus.FAILED,
    "video.cancelled": JobStatus.CANCELLED,
    "video.canceled": JobStatus.CANCELLED,
}

BASE_URL = (
    "https://api.lumenfall.ai/openai/v1"  # every path below is joined to it; RECEIVER_LUMENFALL_BASE_URL overrides it
)


def verify_webhook(secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
    """Lumenfall signs its webhooks the Standard Webhooks way (`webhook-id`, `-timestamp`, `-signature`)."""
    try:
        standardwebhooks.Webhook(secret).verify(body, dict(headers), json_parse=False)
    # Deliberately broad: malformed headers, bad base64, a non-UTF-8 body, a stale timestamp, or whatever else
    # a hostile request makes the library raise, is simply "not verified" (401), never a 5xx.
    except Exception:
        return False
    return True


def parse_webhook(headers: Mapping[str, str], body: bytes) -> list[Completion]:
    """`{"type": "video.completed", "data": {"id", "status", "output": {"url"}}}`."""
    obj = load_object(body)
    event = obj.get("type")
    data = obj.get("data")
    if not isinstance(event, str) or not isinstance(data, dict):
        raise InvalidPayload("expected 'type' (string) and 'data' (object)")
    job_id = require_id(data, "id")
    status = _EVENTS.get(event.lower())
    if status is None:
        return [Completion("lumenfall", job_id, JobStatus.PENDING)]  # an event we don't act on
    if status is JobStatus.SUCCEEDED:
        output = data.get("output")
        url = output.get("url") if isinstance(output, dict) else None
        if not isinstance(url, str) or not url:
            raise InvalidPayload("'data.output.url' must be a URL on video.completed")
        return [Completion("lumenfall", job_id, status, outputs=(Output(url, guess_media_type(url, "video")),))]
    message = error_text(data.get("error")) or (f"Lumenfall {event}" if status is JobStatus.FAILED else None)
    return [Completion("lumenfall", job_id, status, error=message)]


def parse_image_response(job_id: str, body: bytes) -> Completion:
    """The synchronous `/images/generations` answer: `{"created", "data": [{"url"|"b64_json"}]}`."""
    outputs: list[Output] = []
    for item in object_list(load_object(body), "data"):
        url = item.get("url")
        if isinstance(url, str) and url:
            outputs.append(Output(url, guess_media_type(url, "image")))
        elif isinstance(item.get("b64_json"), str):
            outputs.append(Output(f"data:image/png;base64,{item['b64_json']}", "image/png"))
        else:
            raise InvalidPayload("each 'data' item needs 'url' or 'b64_json'")
    return Completion("lumenfall", job_id, JobStatus.SUCCEEDED, outputs=tuple(outputs))


# -- generating (synchronous) ----------------------------------------------------------------------

MODEL = "grok-imagine-image"
# Ids the receiver makes for the synchronous image calls it runs itself; Lumenfall's own (video) ids
# never start so, which is how a restart tells its orphaned calls apart.
RECEIVER_ID_PREFIX = "receiver-"


def new_job_id(unique: str) -> str:
    return f"{RECEIVER_ID_PREFIX}{unique}"


def build_submit(spec: GenerationSpec, *, api_key: str, webhook_url: str, request_id: str) -> ProviderRequest:
    """`POST /images/generations`: the answer is the result. Edits need a file upload, not a URL."""
    if spec.input_image:
        raise BadGeneration(
            "input_image", "Lumenfall edits take an uploaded image file (multipart), which this API does not send"
        )
    body = merge({"model": MODEL}, spec.params)
    if spec.model:
        body["model"] = spec.model
    body["prompt"] = spec.prompt
    return ProviderRequest("POST", "/images/generations", {"Authorization": f"Bearer {api_key}"}, body)


def failed_response(job_id: str, message: str) -> Completion:
    """A refusal or a failed call: the job fails with the provider's message."""
    return Completion("lumenfall", job_id, JobStatus.FAILED, error=message)


PROVIDER = Provider(
    name="lumenfall",
    order=40,
    base_url=BASE_URL,
    build_submit=build_submit,
    webhook=parse_webhook,
    webhook_signature=verify_webhook,
    webhook_secret="webhook_secret",
    secret_settings=("webhook_secret",),  # RECEIVER_LUMENFALL_WEBHOOK_SECRET: its video webhooks' signing key
    answers_synchronously=True,
)
