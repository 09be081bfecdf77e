"""Apiframe: the webhook adapter and its signature, the generate request (with the Idempotency-Key),
its answer and the job poll."""

from __future__ import annotations

import pytest

from receiver.errors import InvalidPayload
from receiver.models import JobStatus
from receiver.providers import apiframe
from receiver.providers._request import BadGeneration, GenerationSpec
from tests.unit.providers.common import HOOK, IMAGE, body, build

DONE = {
    "event": "completed",
    "jobId": "b2c3",
    "status": "COMPLETED",
    "progress": 100,
    "result": "https://cdn.apiframe.ai/results/b2c3.png",
    "model": "grok-imagine-image",
    "creditCost": 10,
    "completedAt": "2026-11-21T10:00:00Z",
}


# -- the webhook ----------------------------------------------------------------------------------


def test_completed() -> None:
    (c,) = apiframe.parse_webhook({}, body(DONE))
    assert (c.provider_job_id, c.status) == ("b2c3", JobStatus.SUCCEEDED)
    assert c.outputs[0].url == DONE["result"] and c.outputs[0].media_type == "image/png"


def test_result_list_accepted() -> None:
    (c,) = apiframe.parse_webhook({}, body({**DONE, "result": ["https://a/1.png", "https://a/2.png"]}))
    assert len(c.outputs) == 2


def test_failed() -> None:
    raw = {"event": "failed", "jobId": "b2c3", "status": "FAILED", "error": "Provider returned an error: x"}
    (c,) = apiframe.parse_webhook({}, body(raw))
    assert c.status is JobStatus.FAILED and c.error == "Provider returned an error: x"


def test_progress_is_not_terminal() -> None:
    raw = {"event": "progress", "jobId": "b2c3", "status": "PROCESSING", "progress": 45}
    assert apiframe.parse_webhook({}, body(raw))[0].status is JobStatus.PENDING


def test_poll_shape_uses_id_and_can_be_cancelled() -> None:
    (c,) = apiframe.parse_webhook({}, body({"id": "j9", "status": "CANCELLED", "result": None}))
    assert (c.provider_job_id, c.status) == ("j9", JobStatus.CANCELLED)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(body({"event": "completed", "status": "COMPLETED"}), id="no-job-id"),
        pytest.param(body({"jobId": "x", "event": "nope"}), id="unknown-event"),
        pytest.param(body({"jobId": "x", "event": "completed"}), id="completed-without-result"),
        pytest.param(body({"jobId": "x", "status": "COMPLETED", "result": {"u": 1}}), id="result-an-object"),
    ],
)
def test_bad_shapes(raw: bytes) -> None:
    with pytest.raises(InvalidPayload):
        apiframe.parse_webhook({}, raw)


def test_signature() -> None:
    raw = body(DONE)
    header = apiframe.sign("key-123", raw)
    assert header.startswith("sha256=")
    assert apiframe.signature_valid("key-123", raw, header)
    assert apiframe.signature_valid("key-123", raw, header.removeprefix("sha256="))  # bare hex accepted
    assert apiframe.signature_valid("key-123", raw, header.upper().replace("SHA256=", "sha256="))
    assert not apiframe.signature_valid("other-key", raw, header)
    assert not apiframe.signature_valid("key-123", raw + b" ", header)
    assert not apiframe.signature_valid("key-123", raw, None)
    assert not apiframe.signature_valid("key-123", raw, "sha256=zz\u00e9")


# -- submit and poll --------------------------------------------------------------------------------


def test_request() -> None:
    spec = GenerationSpec("a fox", input_image=IMAGE, params={"grokParams": {"aspectRatio": "2:3"}, "webhookUrl": "x"})
    request = build(apiframe, spec, request_id="idem-1")
    assert (request.method, request.path) == ("POST", "/v2/images/generate")
    assert request.headers == {"X-API-Key": "K", "Idempotency-Key": "idem-1"}
    assert request.json == {
        "model": "grok-imagine-image",
        "prompt": "a fox",
        "grokParams": {"aspectRatio": "2:3", "image": IMAGE},
        "webhookUrl": HOOK,
        "webhookEvents": ["completed", "failed"],
    }
    (submitted,) = apiframe.parse_submit(request, b'{"jobId": "b2c3", "status": "QUEUED"}')
    assert submitted.provider_job_id == "b2c3" and submitted.expected_outputs is None
    with pytest.raises(BadGeneration) as bad:
        build(apiframe, GenerationSpec("x"), request_id="k" * 256)
    assert bad.value.field == "Idempotency-Key"
    poll = apiframe.build_poll("b2c3", api_key="K")
    assert (poll.method, poll.path, poll.headers) == ("GET", "/v2/jobs/b2c3", {"X-API-Key": "K"})
    (done,) = apiframe.parse_poll(b'{"id": "b2c3", "status": "COMPLETED", "result": ["https://c/1.png"]}')
    assert done.status is JobStatus.SUCCEEDED and done.outputs[0].url == "https://c/1.png"
