"""The pure halves of submitting and polling: request builders, answer parsers, refusal messages, backoff."""

from __future__ import annotations

import json

import pytest

from receiver.errors import InvalidPayload
from receiver.models import JobStatus
from receiver.providers import apiframe, lumenfall, oxen, pixazo, runware
from receiver.providers._request import BadGeneration, GenerationSpec, merge, refusal_message
from receiver.reconciler import next_poll_delay, poll_interval
from tests.support import make_settings

HOOK = "https://rx.example/webhooks/x?token=t0k"
IMAGE = "https://img.example/in.png"


def build(module, spec: GenerationSpec, request_id: str = "rid-1"):  # type: ignore[no-untyped-def]
    return module.build_submit(spec, api_key="K", webhook_url=HOOK, request_id=request_id)


def test_merge_is_deep_and_extra_wins() -> None:
    base = {"a": 1, "nested": {"x": 1, "y": 2}, "list": [1]}
    assert merge(base, {"nested": {"y": 3, "z": 4}, "list": [2], "b": None}) == {
        "a": 1, "nested": {"x": 1, "y": 3, "z": 4}, "list": [2], "b": None,
    }
    assert base == {"a": 1, "nested": {"x": 1, "y": 2}, "list": [1]}  # not mutated


def test_pixazo_text_and_edit() -> None:
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


def test_pixazo_answers_and_poll() -> None:
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


def test_runware_task() -> None:
    spec = GenerationSpec("a fox", input_image=IMAGE, params={
        "numberResults": 3, "outputFormat": "PNG", "inputs": {"seedImage": "x"},
        "webhookURL": "https://elsewhere", "deliveryMethod": "sync", "taskUUID": "mine",
    })
    request = build(runware, spec, request_id="8b0f3b61-3c8a-4d52-9d1e-2f3a4b5c6d7e")
    assert (request.method, request.path) == ("POST", "")
    assert request.headers == {"Authorization": "Bearer K"}
    assert request.json == [{
        "taskType": "imageInference", "taskUUID": "8b0f3b61-3c8a-4d52-9d1e-2f3a4b5c6d7e",
        "model": "xai:grok-imagine@image", "positivePrompt": "a fox", "numberResults": 3, "outputFormat": "PNG",
        "inputs": {"seedImage": "x", "referenceImages": [IMAGE]}, "deliveryMethod": "async", "webhookURL": HOOK,
    }]
    ack = {"data": [{"taskType": "imageInference", "taskUUID": "8b0f3b61-3c8a-4d52-9d1e-2f3a4b5c6d7e"}]}
    (submitted,) = runware.parse_submit(request, json.dumps(ack).encode())
    assert (submitted.provider_job_id, submitted.expected_outputs) == ("8b0f3b61-3c8a-4d52-9d1e-2f3a4b5c6d7e", 3)
    refused = {"errors": [{"code": "insufficientCredits", "message": "Not enough credits"}]}
    with pytest.raises(InvalidPayload, match="Not enough credits"):
        runware.parse_submit(request, json.dumps(refused).encode())
    assert build(runware, GenerationSpec("x", model="xai:other@1")).json[0]["model"] == "xai:other@1"


@pytest.mark.parametrize("count", [0, 21, "2", True, None])
def test_runware_number_results_checked(count: object) -> None:
    with pytest.raises(BadGeneration) as bad:
        build(runware, GenerationSpec("x", params={"numberResults": count}))
    assert bad.value.field == "params.numberResults"


def test_runware_poll() -> None:
    poll = runware.build_poll("t-1", api_key="K")
    assert (poll.method, poll.path, poll.json) == ("POST", "", [{"taskType": "getResponse", "taskUUID": "t-1"}])
    processing = runware.parse_poll(b'{"data": [{"taskType": "imageInference", "taskUUID": "t-1", "status": "processing"}]}')
    assert [c.status for c in processing] == [JobStatus.PENDING]


def test_apiframe_request() -> None:
    spec = GenerationSpec("a fox", input_image=IMAGE, params={"grokParams": {"aspectRatio": "2:3"}, "webhookUrl": "x"})
    request = build(apiframe, spec, request_id="idem-1")
    assert (request.method, request.path) == ("POST", "/v2/images/generate")
    assert request.headers == {"X-API-Key": "K", "Idempotency-Key": "idem-1"}
    assert request.json == {"model": "grok-imagine-image", "prompt": "a fox",
                            "grokParams": {"aspectRatio": "2:3", "image": IMAGE},
                            "webhookUrl": HOOK, "webhookEvents": ["completed", "failed"]}
    (submitted,) = apiframe.parse_submit(request, b'{"jobId": "b2c3", "status": "QUEUED"}')
    assert submitted.provider_job_id == "b2c3" and submitted.expected_outputs is None
    with pytest.raises(BadGeneration) as bad:
        build(apiframe, GenerationSpec("x"), request_id="k" * 256)
    assert bad.value.field == "Idempotency-Key"
    poll = apiframe.build_poll("b2c3", api_key="K")
    assert (poll.method, poll.path, poll.headers) == ("GET", "/v2/jobs/b2c3", {"X-API-Key": "K"})
    (done,) = apiframe.parse_poll(b'{"id": "b2c3", "status": "COMPLETED", "result": ["https://c/1.png"]}')
    assert done.status is JobStatus.SUCCEEDED and done.outputs[0].url == "https://c/1.png"


def test_oxen_request() -> None:
    text = build(oxen, GenerationSpec("a fox", params={"output_format": "png"}))
    assert (text.method, text.path, text.headers) == ("POST", "/api/ai/queue", {"Authorization": "Bearer K"})
    assert text.json == {"model": "xai-grok-imagine-image", "prompt": "a fox", "output_format": "png"}
    edit = build(oxen, GenerationSpec("sharper", input_image=IMAGE))
    assert edit.json == {"model": "xai-grok-imagine-image-edit", "prompt": "sharper", "input_image": IMAGE}
    assert build(oxen, GenerationSpec("x", model="m-2")).json["model"] == "m-2"
    answer = {"generations": [{"generation_id": "g1", "status": "queued"}, {"generation_id": "g2", "status": "queued"}]}
    assert [s.provider_job_id for s in oxen.parse_submit(text, json.dumps(answer).encode())] == ["g1", "g2"]
    for bad in (b'{"generations": []}', b'{"generations": [{"status": "queued"}]}', b"[]"):
        with pytest.raises(InvalidPayload):
            oxen.parse_submit(text, bad)
    assert oxen.build_poll("g1", api_key="K").path == "/api/ai/queue/g1"


def test_lumenfall_request() -> None:
    request = build(lumenfall, GenerationSpec("a fox", params={"n": 2, "size": "1024x1024"}))
    assert (request.method, request.path) == ("POST", "/images/generations")
    assert request.headers == {"Authorization": "Bearer K"}
    assert request.json == {"model": "grok-imagine-image", "prompt": "a fox", "n": 2, "size": "1024x1024"}
    with pytest.raises(BadGeneration) as bad:
        build(lumenfall, GenerationSpec("x", input_image=IMAGE))
    assert bad.value.field == "input_image"
    failed = lumenfall.failed_response("j1", "content policy")
    assert (failed.provider, failed.provider_job_id, failed.status, failed.error) == (
        "lumenfall", "j1", JobStatus.FAILED, "content policy")


@pytest.mark.parametrize(("status", "body", "message"), [
    (402, b'{"error": "Insufficient Balance", "message": "Your wallet does not have enough balance."}',
     "Your wallet does not have enough balance."),
    (429, b'{"error": "Too Many Requests"}', "Too Many Requests"),
    (400, b'{"error": {"message": "bad size", "type": "invalid_request_error"}}', "bad size"),
    (400, b'{"errors": [{"code": "c", "message": "first"}, {"message": "second"}]}', "first; second"),
    (404, b'{"error": {"type": "resource_not_found", "title": "Generation not found"}}', "resource_not_found"),
    (500, b"<html>upstream exploded</html>", "<html>upstream exploded</html>"),
    (503, b"", "HTTP 503 with an empty body"),
])
def test_refusal_message(status: int, body: bytes, message: str) -> None:
    assert refusal_message(status, body) == message


def test_poll_timing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    prod = make_settings(tmp_path)
    assert poll_interval(prod) == 1.0
    assert poll_interval(make_settings(tmp_path, reconcile_after_s=0.2)) == pytest.approx(0.05)
    no_jitter = lambda: 0.0  # noqa: E731
    delays = [next_poll_delay(prod, n, rand=no_jitter) for n in range(10)]
    assert delays[:3] == [60.0, 120.0, 240.0] and delays[-1] == 3600.0
    assert next_poll_delay(make_settings(tmp_path, reconcile_after_s=0.2), 0, rand=no_jitter) == pytest.approx(0.2)
    assert 30.0 <= next_poll_delay(prod, 0, rand=lambda: 1.0) < 60.0  # jitter only shortens
