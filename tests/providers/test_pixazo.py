"""The pure webhook adapters, on byte fixtures built from PROVIDERS.md."""

from __future__ import annotations

import json

import pytest

from receiver.errors import InvalidPayload
from receiver.models import JobStatus
from receiver.providers import apiframe, lumenfall, pixazo, runware


def body(value: object) -> bytes:
    return json.dumps(value).encode()


PIXAZO_DONE = {
    "request_id": "grok-imagine-pro-text-to-image-quality_019d",
    "status": "COMPLETED",
    "model_id": "grok-imagine-pro",
    "error": None,
    "output": {"media_url": ["https://cdn.pixazo.ai/a/output.jpeg", "https://cdn.pixazo.ai/b/output.jpeg"],
               "media_type": "image/jpeg"},
    "created_at": "2026-11-21T10:00:00Z",
    "completed_at": "2026-11-21T10:00:09Z",
}


class TestPixazo:
    def test_completed_has_every_output(self) -> None:
        (c,) = pixazo.parse_webhook({}, body(PIXAZO_DONE))
        assert c.provider_job_id == PIXAZO_DONE["request_id"]
        assert c.status is JobStatus.SUCCEEDED
        assert [o.url for o in c.outputs] == PIXAZO_DONE["output"]["media_url"]
        assert {o.media_type for o in c.outputs} == {"image/jpeg"}
        assert not c.partial

    def test_media_url_as_plain_string_and_type_guessed(self) -> None:
        raw = {**PIXAZO_DONE, "output": {"media_url": "https://x/y/output.webp?sig=1"}}
        (c,) = pixazo.parse_webhook({}, body(raw))
        assert c.outputs[0].media_type == "image/webp"

    @pytest.mark.parametrize("status", ["FAILED", "ERROR", "failed"])
    def test_failure_carries_the_message(self, status: str) -> None:
        raw = {"request_id": "r1", "status": status, "error": "Content policy violation", "output": None}
        (c,) = pixazo.parse_webhook({}, body(raw))
        assert c.status is JobStatus.FAILED
        assert c.error == "Content policy violation"

    def test_error_without_message_still_says_something(self) -> None:
        (c,) = pixazo.parse_webhook({}, body({"request_id": "r1", "status": "ERROR", "output": None}))
        assert c.error and "ERROR" in c.error

    def test_error_object(self) -> None:
        raw = {"request_id": "r1", "status": "FAILED", "error": {"message": "Insufficient Balance"}}
        assert pixazo.parse_webhook({}, body(raw))[0].error == "Insufficient Balance"

    @pytest.mark.parametrize("status", ["QUEUED", "PROCESSING"])
    def test_progress_is_pending(self, status: str) -> None:
        (c,) = pixazo.parse_webhook({}, body({"request_id": "r1", "status": status}))
        assert c.status is JobStatus.PENDING

    @pytest.mark.parametrize(
        "raw, says",
        [
            (b"", "empty"),
            (b"   ", "empty"),
            (b"\xff\xfe{}", "UTF-8"),
            (b"{not json", "not JSON"),
            (b"[1, 2]", "JSON object"),
            (body({"status": "COMPLETED"}), "request_id"),
            (body({"request_id": 7.5, "status": "COMPLETED"}), "request_id"),
            (body({"request_id": "r", "status": "WEIRD"}), "status"),
            (body({"request_id": "r", "status": 3}), "status"),
            (body({"request_id": "r", "status": "COMPLETED", "output": None}), "output"),
            (body({"request_id": "r", "status": "COMPLETED", "output": {"media_url": []}}), "media_url"),
            (body({"request_id": "r", "status": "COMPLETED", "output": {"media_url": [3]}}), "media_url"),
        ],
    )
    def test_bad_shapes_say_what_is_wrong(self, raw: bytes, says: str) -> None:
        with pytest.raises(InvalidPayload, match=says):
            pixazo.parse_webhook({}, raw)


RUNWARE_IMAGE = {
    "taskType": "imageInference", "taskUUID": "a770f077-f413-47de-9dac-be0b26a35da6",
    "imageUUID": "77da2d99-a6d3-44d9-b8c0-ae9fb06b6200", "imageURL": "https://im.runware.ai/image/ws/0.5/ii/77da.jpg",
    "seed": 123, "NSFWContent": False, "cost": 0.0013,
}


class TestRunware:
    def test_one_image_is_a_partial_success_keyed_by_image_uuid(self) -> None:
        (c,) = runware.parse_webhook({}, body({"data": [RUNWARE_IMAGE]}))
        assert c.provider_job_id == RUNWARE_IMAGE["taskUUID"]
        assert c.status is JobStatus.SUCCEEDED and c.partial
        assert c.outputs[0].key == RUNWARE_IMAGE["imageUUID"]
        assert c.outputs[0].media_type == "image/jpeg"

    def test_several_tasks_in_one_body(self) -> None:
        other = {**RUNWARE_IMAGE, "taskUUID": "b1", "imageUUID": "i2", "imageURL": "https://im.runware.ai/x.png"}
        completions = runware.parse_webhook({}, body({"data": [RUNWARE_IMAGE, other]}))
        assert [c.provider_job_id for c in completions] == [RUNWARE_IMAGE["taskUUID"], "b1"]
        assert completions[1].outputs[0].media_type == "image/png"

    def test_errors_fail_their_task(self) -> None:
        raw = {"data": [], "errors": [{"code": "invalidPrompt", "message": "Prompt rejected", "parameter": "positivePrompt",
                                       "taskType": "imageInference", "taskUUID": "t1"}]}
        (c,) = runware.parse_webhook({}, body(raw))
        assert (c.provider_job_id, c.status, c.error) == ("t1", JobStatus.FAILED, "Prompt rejected")

    def test_error_without_task_uuid_is_valid_but_ties_to_nothing(self) -> None:
        assert runware.parse_webhook({}, body({"errors": [{"code": "x", "message": "boom"}]})) == []

    def test_get_response_statuses(self) -> None:
        items = [
            {"taskUUID": "p", "status": "processing"},
            {"taskUUID": "q", "status": "pending"},
            {"taskUUID": "e", "status": "error", "message": "NSFW"},
            {**RUNWARE_IMAGE, "status": "success"},
        ]
        statuses = [c.status for c in runware.parse_response(body({"data": items}))]
        assert statuses == [JobStatus.PENDING, JobStatus.PENDING, JobStatus.FAILED, JobStatus.SUCCEEDED]

    @pytest.mark.parametrize(
        "raw, says",
        [
            (body({"data": {"taskUUID": "x"}}), "lists"),
            (body({"something": 1}), "'data' or 'errors'"),
            (body({"data": [{"imageURL": "https://x"}]}), "taskUUID"),
            (body({"data": [{"taskUUID": "t"}]}), "imageURL"),
            (body({"data": ["x"]}), "objects"),
        ],
    )
    def test_bad_shapes(self, raw: bytes, says: str) -> None:
        with pytest.raises(InvalidPayload, match=says):
            runware.parse_webhook({}, raw)


APIFRAME_DONE = {"event": "completed", "jobId": "b2c3", "status": "COMPLETED", "progress": 100,
                 "result": "https://cdn.apiframe.ai/results/b2c3.png", "model": "grok-imagine-image",
                 "creditCost": 10, "completedAt": "2026-11-21T10:00:00Z"}


class TestApiframe:
    def test_completed(self) -> None:
        (c,) = apiframe.parse_webhook({}, body(APIFRAME_DONE))
        assert (c.provider_job_id, c.status) == ("b2c3", JobStatus.SUCCEEDED)
        assert c.outputs[0].url == APIFRAME_DONE["result"] and c.outputs[0].media_type == "image/png"

    def test_result_list_accepted(self) -> None:
        (c,) = apiframe.parse_webhook({}, body({**APIFRAME_DONE, "result": ["https://a/1.png", "https://a/2.png"]}))
        assert len(c.outputs) == 2

    def test_failed(self) -> None:
        raw = {"event": "failed", "jobId": "b2c3", "status": "FAILED", "error": "Provider returned an error: x"}
        (c,) = apiframe.parse_webhook({}, body(raw))
        assert c.status is JobStatus.FAILED and c.error == "Provider returned an error: x"

    def test_progress_is_not_terminal(self) -> None:
        raw = {"event": "progress", "jobId": "b2c3", "status": "PROCESSING", "progress": 45}
        assert apiframe.parse_webhook({}, body(raw))[0].status is JobStatus.PENDING

    def test_poll_shape_uses_id_and_can_be_cancelled(self) -> None:
        (c,) = apiframe.parse_webhook({}, body({"id": "j9", "status": "CANCELLED", "result": None}))
        assert (c.provider_job_id, c.status) == ("j9", JobStatus.CANCELLED)

    @pytest.mark.parametrize(
        "raw",
        [body({"event": "completed", "status": "COMPLETED"}), body({"jobId": "x", "event": "nope"}),
         body({"jobId": "x", "event": "completed"}), body({"jobId": "x", "status": "COMPLETED", "result": {"u": 1}})],
    )
    def test_bad_shapes(self, raw: bytes) -> None:
        with pytest.raises(InvalidPayload):
            apiframe.parse_webhook({}, raw)

    def test_signature(self) -> None:
        raw = body(APIFRAME_DONE)
        header = apiframe.sign("key-123", raw)
        assert header.startswith("sha256=")
        assert apiframe.signature_valid("key-123", raw, header)
        assert apiframe.signature_valid("key-123", raw, header.removeprefix("sha256="))  # bare hex accepted
        assert apiframe.signature_valid("key-123", raw, header.upper().replace("SHA256=", "sha256="))
        assert not apiframe.signature_valid("other-key", raw, header)
        assert not apiframe.signature_valid("key-123", raw + b" ", header)
        assert not apiframe.signature_valid("key-123", raw, None)
        assert not apiframe.signature_valid("key-123", raw, "sha256=zz\u00e9")


class TestLumenfall:
    def test_video_completed(self) -> None:
        raw = {"type": "video.completed", "data": {"id": "vid_1", "status": "completed",
                                                     "output": {"url": "https://media.lumenfall.ai/v.mp4"}}}
        (c,) = lumenfall.parse_webhook({}, body(raw))
        assert (c.provider_job_id, c.status, c.outputs[0].media_type) == ("vid_1", JobStatus.SUCCEEDED, "video/mp4")

    @pytest.mark.parametrize("event, status", [("video.failed", JobStatus.FAILED), ("video.cancelled", JobStatus.CANCELLED)])
    def test_video_failed_or_cancelled(self, event: str, status: JobStatus) -> None:
        (c,) = lumenfall.parse_webhook({}, body({"type": event, "data": {"id": "v", "status": "x", "error": {"message": "m"}}}))
        assert c.status is status

    def test_other_event_is_not_terminal(self) -> None:
        (c,) = lumenfall.parse_webhook({}, body({"type": "video.started", "data": {"id": "v"}}))
        assert c.status is JobStatus.PENDING

    def test_image_response(self) -> None:
        raw = {"created": 1702345678, "data": [{"url": "https://media.lumenfall.ai/a.png", "revised_prompt": "p"}]}
        c = lumenfall.parse_image_response("lf_1", body(raw))
        assert (c.provider_job_id, c.status, c.outputs[0].media_type) == ("lf_1", JobStatus.SUCCEEDED, "image/png")

    @pytest.mark.parametrize("raw", [body({"type": "video.completed", "data": {"id": "v"}}), body({"data": {}}), body({"type": "x"})])
    def test_bad_shapes(self, raw: bytes) -> None:
        with pytest.raises(InvalidPayload):
            lumenfall.parse_webhook({}, raw)
