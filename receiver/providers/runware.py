"""Runware: one webhook POST per finished image; `getResponse` polling has the same item shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver.errors import InvalidPayload
from receiver.models import Completion, JobStatus, Output
from receiver.providers._parse import error_text, guess_media_type, load_object
from receiver.providers._record import Provider
from receiver.providers._request import BadGeneration, GenerationSpec, ProviderRequest, Submitted, merge

_FORMATS = {"JPG": "image/jpeg", "JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def _image_completion(item: dict[str, Any]) -> Completion:
    task_uuid = _task_uuid(item, "data")
    status = str(item.get("status") or "success").lower()
    if status in ("processing", "pending"):
        return Completion("runware", task_uuid, JobStatus.PENDING)
    if status == "error":
        message = error_text(item.get("error")) or error_text(item.get("message")) or "Runware task error"
        return Completion("runware", task_uuid, JobStatus.FAILED, error=message)
    url = item.get("imageURL") or item.get("videoURL") or item.get("mediaURL")
    if not isinstance(url, str) or not url:
        raise InvalidPayload("each 'data' item needs an 'imageURL' string")
    key = item.get("imageUUID") or item.get("mediaUUID")
    fmt = item.get("outputFormat")
    media_type = guess_media_type(url) or (_FORMATS.get(fmt.upper()) if isinstance(fmt, str) else None)
    output = Output(url=url, media_type=media_type, key=key if isinstance(key, str) and key else None)
    # Each image comes in its own POST: the job is complete once expected_outputs distinct ones arrived.
    return Completion("runware", task_uuid, JobStatus.SUCCEEDED, outputs=(output,), partial=True)


def _task_uuid(item: dict[str, Any], where: str) -> str:
    value = item.get("taskUUID")
    if not isinstance(value, str) or not value.strip():
        raise InvalidPayload(f"each '{where}' item needs a 'taskUUID' string")
    return value.strip()


def parse_response(body: bytes) -> list[Completion]:
    """Parse a webhook body or a `getResponse` answer: `{"data": [...], "errors": [...]}`."""
    obj = load_object(body)
    data = obj.get("data", [])
    errors = obj.get("errors", [])
    if not isinstance(data, list) or not isinstance(errors, list):
        raise InvalidPayload("'data' and 'errors' must be lists")
    if "data" not in obj and "errors" not in obj:
        raise InvalidPayload("expected 'data' or 'errors'")
    completions: list[Completion] = []
    for item in data:
        if not isinstance(item, dict):
            raise InvalidPayload("'data' items must be objects")
        completions.append(_image_completion(item))
    for item in errors:
        if not isinstance(item, dict):
            raise InvalidPayload("'errors' items must be objects")
        # An error without a taskUUID cannot be tied to a job: the receipt keeps it, nothing else.
        task_uuid = item.get("taskUUID")
        if isinstance(task_uuid, str) and task_uuid.strip():
            message = error_text(item.get("message")) or error_text(item.get("code")) or "Runware error"
            completions.append(Completion("runware", task_uuid.strip(), JobStatus.FAILED, error=message))
    return completions


def parse_webhook(headers: Mapping[str, str], body: bytes) -> list[Completion]:
    return parse_response(body)


# -- submitting and polling ------------------------------------------------------------------------

BASE_URL = "https://api.runware.ai/v1"  # every path below is joined to it; RECEIVER_RUNWARE_BASE_URL overrides it

MODEL = "xai:grok-imagine@image"


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def build_submit(spec: GenerationSpec, *, api_key: str, webhook_url: str, request_id: str) -> ProviderRequest:
    """One `imageInference` task; `request_id` (a fresh UUIDv4) is its taskUUID, our correlation id."""
    task = merge({"taskType": "imageInference", "model": MODEL, "numberResults": 1}, spec.params)
    if spec.model:
        task["model"] = spec.model
    task["positivePrompt"] = spec.prompt
    if spec.input_image:
        task["inputs"] = merge(task.get("inputs") or {}, {"referenceImages": [spec.input_image]})
    count = task.get("numberResults")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 20:
        raise BadGeneration("params.numberResults", "must be an integer from 1 to 20")
    # Ours, whatever params say: without them the results would not find their way back.
    task.update(taskType="imageInference", taskUUID=request_id, deliveryMethod="async", webhookURL=webhook_url)
    return ProviderRequest("POST", "", _headers(api_key), [task])


def parse_submit(request: ProviderRequest, body: bytes) -> list[Submitted]:
    """The async acknowledgement, `{"data": [{"taskType", "taskUUID"}]}`; an `errors` list is a refusal."""
    obj = load_object(body)
    errors = obj.get("errors")
    if errors:
        raise InvalidPayload(error_text(errors) or "Runware answered with errors")
    return submitted_before(request)


def submitted_before(request: ProviderRequest) -> list[Submitted]:
    """The task as submitted, known before Runware answers: its taskUUID is ours."""
    task = request.json[0]
    return [Submitted(task["taskUUID"], expected_outputs=task["numberResults"])]


def build_poll(provider_job_id: str, *, api_key: str) -> ProviderRequest:
    return ProviderRequest("POST", "", _headers(api_key), [{"taskType": "getResponse", "taskUUID": provider_job_id}])


def parse_poll(body: bytes) -> list[Completion]:
    return parse_response(body)


PROVIDER = Provider(
    name="runware",
    order=20,
    base_url=BASE_URL,
    build_submit=build_submit,
    submit_answer=parse_submit,
    webhook=parse_webhook,
    poll=build_poll,
    poll_answer=parse_poll,
    early_ids=submitted_before,
)
