"""Runware: the webhook adapter (one image per call, errors per task), the task the receiver submits,
its acknowledgement and the getResponse poll."""

from __future__ import annotations

import json

import pytest

from receiver.errors import InvalidPayload
from receiver.models import JobStatus
from receiver.providers import runware
from receiver.providers._request import BadGeneration, GenerationSpec
from tests.unit.providers.common import HOOK, IMAGE, body, build

IMAGE_DONE = {
    "taskType": "imageInference",
    "taskUUID": "a770f077-f413-47de-9dac-be0b26a35da6",
    "imageUUID": "77da2d99-a6d3-44d9-b8c0-ae9fb06b6200",
    "imageURL": "https://im.runware.ai/image/ws/0.5/ii/77da.jpg",
    "seed": 123,
    "NSFWContent": False,
    "cost": 0.0013,
}


# -- the webhook ----------------------------------------------------------------------------------


def test_one_image_is_a_partial_success_keyed_by_image_uuid() -> None:
    (c,) = runware.parse_webhook({}, body({"data": [IMAGE_DONE]}))
    assert c.provider_job_id == IMAGE_DONE["taskUUID"]
    assert c.status is JobStatus.SUCCEEDED and c.partial
    assert c.outputs[0].key == IMAGE_DONE["imageUUID"]
    assert c.outputs[0].media_type == "image/jpeg"


def test_several_tasks_in_one_body() -> None:
    other = {**IMAGE_DONE, "taskUUID": "b1", "imageUUID": "i2", "imageURL": "https://im.runware.ai/x.png"}
    completions = runware.parse_webhook({}, body({"data": [IMAGE_DONE, other]}))
    assert [c.provider_job_id for c in completions] == [IMAGE_DONE["taskUUID"], "b1"]
    assert completions[1].outputs[0].media_type == "image/png"


def test_errors_fail_their_task() -> None:
    raw = {
        "data": [],
        "errors": [
            {
                "code": "invalidPrompt",
                "message": "Prompt rejected",
                "parameter": "positivePrompt",
                "taskType": "imageInference",
                "taskUUID": "t1",
            }
        ],
    }
    (c,) = runware.parse_webhook({}, body(raw))
    assert (c.provider_job_id, c.status, c.error) == ("t1", JobStatus.FAILED, "Prompt rejected")


def test_error_without_task_uuid_is_valid_but_ties_to_nothing() -> None:
    assert runware.parse_webhook({}, body({"errors": [{"code": "x", "message": "boom"}]})) == []


def test_get_response_statuses() -> None:
    items = [
        {"taskUUID": "p", "status": "processing"},
        {"taskUUID": "q", "status": "pending"},
        {"taskUUID": "e", "status": "error", "message": "NSFW"},
        {**IMAGE_DONE, "status": "success"},
    ]
    statuses = [c.status for c in runware.parse_response(body({"data": items}))]
    assert statuses == [JobStatus.PENDING, JobStatus.PENDING, JobStatus.FAILED, JobStatus.SUCCEEDED]


@pytest.mark.parametrize(
    "raw, says",
    [
        pytest.param(body({"data": {"taskUUID": "x"}}), "lists", id="data-not-a-list"),
        pytest.param(body({"something": 1}), "'data' or 'errors'", id="neither-data-nor-errors"),
        pytest.param(body({"data": [{"imageURL": "https://x"}]}), "taskUUID", id="no-task-uuid"),
        pytest.param(body({"data": [{"taskUUID": "t"}]}), "imageURL", id="no-image-url"),
        pytest.param(body({"data": ["x"]}), "objects", id="item-not-an-object"),
    ],
)
def test_bad_shapes(raw: bytes, says: str) -> None:
    with pytest.raises(InvalidPayload, match=says):
        runware.parse_webhook({}, raw)


# -- submit and poll --------------------------------------------------------------------------------


def test_task() -> None:
    spec = GenerationSpec(
        "a fox",
        input_image=IMAGE,
        params={
            "numberResults": 3,
            "outputFormat": "PNG",
            "inputs": {"seedImage": "x"},
            "webhookURL": "https://elsewhere",
            "deliveryMethod": "sync",
            "taskUUID": "mine",
        },
    )
    request = build(runware, spec, request_id="8b0f3b61-3c8a-4d52-9d1e-2f3a4b5c6d7e")
    assert (request.method, request.path) == ("POST", "")
    assert request.headers == {"Authorization": "Bearer K"}
    assert request.json == [
        {
            "taskType": "imageInference",
            "taskUUID": "8b0f3b61-3c8a-4d52-9d1e-2f3a4b5c6d7e",
            "model": "xai:grok-imagine@image",
            "positivePrompt": "a fox",
            "numberResults": 3,
            "outputFormat": "PNG",
            "inputs": {"seedImage": "x", "referenceImages": [IMAGE]},
            "deliveryMethod": "async",
            "webhookURL": HOOK,
        }
    ]
    ack = {"data": [{"taskType": "imageInference", "taskUUID": "8b0f3b61-3c8a-4d52-9d1e-2f3a4b5c6d7e"}]}
    (submitted,) = runware.parse_submit(request, json.dumps(ack).encode())
    assert (submitted.provider_job_id, submitted.expected_outputs) == ("8b0f3b61-3c8a-4d52-9d1e-2f3a4b5c6d7e", 3)
    refused = {"errors": [{"code": "insufficientCredits", "message": "Not enough credits"}]}
    with pytest.raises(InvalidPayload, match="Not enough credits"):
        runware.parse_submit(request, json.dumps(refused).encode())
    assert build(runware, GenerationSpec("x", model="xai:other@1")).json[0]["model"] == "xai:other@1"


@pytest.mark.parametrize("count", [0, 21, "2", True, None])
def test_number_results_checked(count: object) -> None:
    with pytest.raises(BadGeneration) as bad:
        build(runware, GenerationSpec("x", params={"numberResults": count}))
    assert bad.value.field == "params.numberResults"


def test_poll() -> None:
    poll = runware.build_poll("t-1", api_key="K")
    assert (poll.method, poll.path, poll.json) == ("POST", "", [{"taskType": "getResponse", "taskUUID": "t-1"}])
    processing = runware.parse_poll(
        b'{"data": [{"taskType": "imageInference", "taskUUID": "t-1", "status": "processing"}]}'
    )
    assert [c.status for c in processing] == [JobStatus.PENDING]
