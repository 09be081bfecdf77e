"""Pixazo: the webhook adapter on byte fixtures built from Pixazo's documented shapes, the submit and
status requests, and their answers."""

from __future__ import annotations

import json

import pytest

from receiver.errors import InvalidPayload
from receiver.models import JobStatus
from receiver.providers import pixazo
from receiver.providers._request import BadGeneration, GenerationSpec
from tests.unit.providers.common import HOOK, IMAGE, body, build

DONE = {
    "request_id": "grok-imagine-pro-text-to-image-quality_019d",
    "status": "COMPLETED",
    "model_id": "grok-imagine-pro",
    "error": None,
    "output": {
        "media_url": ["https://cdn.pixazo.ai/a/output.jpeg", "https://cdn.pixazo.ai/b/output.jpeg"],
        "media_type": "image/jpeg",
    },
    "created_at": "2026-11-21T10:00:00Z",
    "completed_at": "2026-11-21T10:00:09Z",
}


# -- the webhook ----------------------------------------------------------------------------------


def test_completed_has_every_output() -> None:
    (c,) = pixazo.parse_webhook({}, body(DONE))
    assert c.provider_job_id == DONE["request_id"]
    assert c.status is JobStatus.SUCCEEDED
    assert [o.url for o in c.outputs] == DONE["output"]["media_url"]
    assert {o.media_type for o in c.outputs} == {"image/jpeg"}
    assert not c.partial


def test_media_url_as_plain_string_and_type_guessed() -> None:
    raw = {**DONE, "output": {"media_url": "https://x/y/output.webp?sig=1"}}
    (c,) = pixazo.parse_webhook({}, body(raw))
    assert c.outputs[0].media_type == "image/webp"


@pytest.mark.parametrize("status", ["FAILED", "ERROR", "failed"])
def test_failure_carries_the_message(status: str) -> None:
    raw = {"request_id": "r1", "status": status, "error": "Content policy violation", "output": None}
    (c,) = pixazo.parse_webhook({}, body(raw))
    assert c.status is JobStatus.FAILED
    assert c.error == "Content policy violation"


def test_error_without_message_still_says_something() -> None:
    (c,) = pixazo.parse_webhook({}, body({"request_id": "r1", "status": "ERROR", "output": None}))
    assert c.error and "ERROR" in c.error


def test_error_object() -> None:
    raw = {"request_id": "r1", "status": "FAILED", "error": {"message": "Insufficient Balance"}}
    assert pixazo.parse_webhook({}, body(raw))[0].error == "Insufficient Balance"


@pytest.mark.parametrize("status", ["QUEUED", "PROCESSING"])
def test_progress_is_pending(status: str) -> None:
    (c,) = pixazo.parse_webhook({}, body({"request_id": "r1", "status": status}))
    assert c.status is JobStatus.PENDING


@pytest.mark.parametrize(
    "raw, says",
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"   ", "empty", id="blank"),
        pytest.param(b"\xff\xfe{}", "UTF-8", id="not-utf8"),
        pytest.param(b"{not json", "not JSON", id="not-json"),
        pytest.param(b"[1, 2]", "JSON object", id="array"),
        pytest.param(body({"status": "COMPLETED"}), "request_id", id="no-request-id"),
        pytest.param(body({"request_id": 7.5, "status": "COMPLETED"}), "request_id", id="float-request-id"),
        pytest.param(body({"request_id": "r", "status": "WEIRD"}), "status", id="unknown-status"),
        pytest.param(body({"request_id": "r", "status": 3}), "status", id="numeric-status"),
        pytest.param(body({"request_id": "r", "status": "COMPLETED", "output": None}), "output", id="no-output"),
        pytest.param(
            body({"request_id": "r", "status": "COMPLETED", "output": {"media_url": []}}),
            "media_url",
            id="no-media-url",
        ),
        pytest.param(
            body({"request_id": "r", "status": "COMPLETED", "output": {"media_url": [3]}}),
            "media_url",
            id="numeric-media-url",
        ),
    ],
)
def test_bad_shapes_say_what_is_wrong(raw: bytes, says: str) -> None:
    with pytest.raises(InvalidPayload, match=says):
        pixazo.parse_webhook({}, raw)


# -- submit and poll --------------------------------------------------------------------------------


def test_text_and_edit_requests() -> None:
    text = build(pixazo, GenerationSpec("a fox", params={"num_images": 2, "aspect_ratio": "16:9", "prompt": "no"}))
    assert text.method == "POST"
    assert text.path == "/grok-imagine-pro-text-to-image-quality/v1/grok-imagine-pro-text-to-image-quality-request"
    assert text.headers == {"Ocp-Apim-Subscription-Key": "K", "Cache-Control": "no-cache", "X-Webhook-URL": HOOK}
    assert text.json == {"prompt": "a fox", "num_images": 2, "aspect_ratio": "16:9"}

    edit = build(pixazo, GenerationSpec("sharper", input_image=IMAGE))
    assert edit.path == "/grok-imagine-pro-edit-quality/v1/grok-imagine-pro-edit-quality-request"
    assert edit.json == {"prompt": "sharper", "image_urls": [IMAGE]}

    other = build(pixazo, GenerationSpec("x", model="grok-imagine-speed"))
    assert other.path == "/grok-imagine-speed/v1/grok-imagine-speed-request"
    with pytest.raises(BadGeneration) as bad:
        build(pixazo, GenerationSpec("x", model="../v2/requests"))
    assert bad.value.field == "model"


def test_submit_answers_and_poll() -> None:
    request = build(pixazo, GenerationSpec("a fox"))
    answer = {"request_id": "grok_019d-1", "status": "QUEUED", "polling_url": "https://…"}
    assert [s.provider_job_id for s in pixazo.parse_submit(request, json.dumps(answer).encode())] == ["grok_019d-1"]
    with pytest.raises(InvalidPayload):
        pixazo.parse_submit(request, b'{"status": "QUEUED"}')
    poll = pixazo.build_poll("grok/019d 1", api_key="K")
    assert (poll.method, poll.path, poll.json) == ("GET", "/v2/requests/status/grok%2F019d%201", None)
    assert poll.headers["Ocp-Apim-Subscription-Key"] == "K"
    (done,) = pixazo.parse_poll(json.dumps({"request_id": "r", "status": "FAILED", "error": "nsfw"}).encode())
    assert (done.status, done.error) == (JobStatus.FAILED, "nsfw")
