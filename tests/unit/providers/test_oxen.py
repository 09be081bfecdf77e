"""Oxen: the pure adapter, stream events (`model`/`url`) and poll answers (`model_name`/`result_url`), and the
queue request."""

from __future__ import annotations

import json
from typing import Any

import pytest

from receiver.errors import InvalidPayload
from receiver.models import Completion, JobStatus, Output
from receiver.providers import oxen
from receiver.providers._request import GenerationSpec
from tests.unit.providers.common import IMAGE, build

GEN = "bb8f3e2a9c1d4e5f"


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def poll_answer(**overrides: Any) -> bytes:
    """`GET /api/ai/queue/{id}` as Oxen documents it."""
    answer = {
        "generation_id": GEN,
        "model_name": "xai-grok-imagine-image",
        "prompt": "a fox",
        "media_type": "image",
        "status": "succeeded",
        "result_url": "https://cdn.oxen.test/r/out.webp?X-Amz-Signature=f00",
        "error_message": None,
        "enqueued_at": 1775091431,
        "started_at": 1775091432,
        "completed_at": 1775091440,
    }
    answer.update(overrides)
    return json.dumps(answer).encode()


# -- the stream ----------------------------------------------------------------------------------


def test_stream_success() -> None:
    data = body(
        generation_id=GEN,
        status="succeeded",
        media_type="image",
        model="xai-grok-imagine-image",
        url="https://cdn.oxen.test/r/out.png?X-Amz-Expires=3600",
    )
    assert oxen.parse_stream_event(data) == Completion(
        "oxen",
        GEN,
        JobStatus.SUCCEEDED,
        outputs=(Output("https://cdn.oxen.test/r/out.png?X-Amz-Expires=3600", "image/png"),),
    )


def test_stream_failure() -> None:
    data = body(generation_id=GEN, status="failed", media_type="image", error="Insufficient credits")
    assert oxen.parse_stream_event(data) == Completion("oxen", GEN, JobStatus.FAILED, error="Insufficient credits")


def test_stream_failure_with_structured_or_missing_error() -> None:
    nested = oxen.parse_stream_event(body(generation_id=GEN, status="failed", error={"message": "NSFW"}))
    assert nested.error == "NSFW"
    bare = oxen.parse_stream_event(body(generation_id=GEN, status="failed"))
    assert bare.status is JobStatus.FAILED and bare.error  # never a failed job without a reason


def test_stream_url_without_extension_keeps_oxens_word() -> None:
    completion = oxen.parse_stream_event(
        body(generation_id=GEN, status="succeeded", media_type="image", url="https://cdn.oxen.test/r/abc123")
    )
    assert completion.outputs == (Output("https://cdn.oxen.test/r/abc123", "image"),)
    unknown = oxen.parse_stream_event(body(generation_id=GEN, status="succeeded", url="https://cdn.oxen.test/r/abc"))
    assert unknown.outputs[0].media_type is None


def test_stream_accepts_the_poll_field_name_too() -> None:
    completion = oxen.parse_stream_event(body(generation_id=GEN, status="succeeded", result_url="https://x.test/a.jpg"))
    assert completion.outputs == (Output("https://x.test/a.jpg", "image/jpeg"),)


# -- polling -------------------------------------------------------------------------------------


def test_poll_succeeded() -> None:
    assert oxen.parse_status(poll_answer()) == Completion(
        "oxen",
        GEN,
        JobStatus.SUCCEEDED,
        outputs=(Output("https://cdn.oxen.test/r/out.webp?X-Amz-Signature=f00", "image/webp"),),
    )


def test_poll_failed_uses_error_message() -> None:
    completion = oxen.parse_status(poll_answer(status="failed", result_url=None, error_message="content policy"))
    assert completion == Completion("oxen", GEN, JobStatus.FAILED, error="content policy")


def test_poll_cancelled() -> None:
    assert oxen.parse_status(poll_answer(status="cancelled", result_url=None)) == Completion(
        "oxen", GEN, JobStatus.CANCELLED
    )
    with_reason = oxen.parse_status(poll_answer(status="cancelled", result_url=None, error_message="by user"))
    assert with_reason.error == "by user"


@pytest.mark.parametrize("status", ["queued", "processing", "running", "QUEUED"])
def test_poll_not_yet_terminal(status: str) -> None:
    completion = oxen.parse_status(poll_answer(status=status, result_url=None, completed_at=None))
    assert completion.status is JobStatus.PENDING and not completion.status.terminal
    assert completion.outputs == () and completion.error is None


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("succeeded", JobStatus.SUCCEEDED),
        ("SUCCEEDED", JobStatus.SUCCEEDED),
        ("completed", JobStatus.SUCCEEDED),
        ("failed", JobStatus.FAILED),
        ("cancelled", JobStatus.CANCELLED),
        ("canceled", JobStatus.CANCELLED),
    ],
)
def test_every_terminal_status_word(word: str, status: JobStatus) -> None:
    assert oxen.parse_status(poll_answer(status=word)).status is status
    assert oxen.parse_stream_event(body(generation_id=GEN, status=word, url="https://x.test/a.png")).status is status


# -- odd shapes ----------------------------------------------------------------------------------


def test_numeric_and_padded_ids_become_strings() -> None:
    assert oxen.parse_status(poll_answer(generation_id=42)).provider_job_id == "42"
    assert oxen.parse_status(poll_answer(generation_id=f"  {GEN} ")).provider_job_id == GEN


def test_extra_fields_are_ignored() -> None:
    completion = oxen.parse_stream_event(
        body(
            generation_id=GEN,
            status="succeeded",
            url="https://x.test/a.png",
            seed=7,
            tags=["x"],
            nested={"deep": [1, 2]},
        )
    )
    assert completion.status is JobStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"   \n", "empty", id="blank"),
        pytest.param(b"not json", "not JSON", id="not-json"),
        pytest.param(b"\xff\xfe{}", "UTF-8", id="not-utf8"),
        pytest.param(b"[1, 2]", "JSON object", id="array"),
        pytest.param(b'"succeeded"', "JSON object", id="string"),
        pytest.param(body(status="succeeded", url="https://x.test/a.png"), "generation_id", id="no-generation-id"),
        pytest.param(
            body(generation_id="", status="succeeded", url="https://x.test/a.png"),
            "generation_id",
            id="empty-generation-id",
        ),
        pytest.param(
            body(generation_id=True, status="succeeded", url="https://x.test/a.png"),
            "generation_id",
            id="boolean-generation-id",
        ),
        pytest.param(body(generation_id=GEN), "status", id="no-status"),
        pytest.param(body(generation_id=GEN, status=None), "status", id="null-status"),
        pytest.param(body(generation_id=GEN, status="exploded"), "status", id="unknown-status"),
        pytest.param(body(generation_id=GEN, status=3), "status", id="numeric-status"),
        pytest.param(body(generation_id=GEN, status="succeeded"), "url", id="succeeded-without-url"),
        pytest.param(body(generation_id=GEN, status="succeeded", url=""), "url", id="empty-url"),
        pytest.param(body(generation_id=GEN, status="succeeded", url=["https://x.test/a.png"]), "url", id="url-list"),
    ],
)
def test_malformed_stream_events_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        oxen.parse_stream_event(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(
            body(
                error={"type": "resource_not_found", "title": "Generation not found"},
                status="error",
                status_message="resource_not_found",
            ),
            None,
            id="404-shape-is-not-a-status",
        ),
        pytest.param(poll_answer(result_url=None), "result_url", id="succeeded-without-result-url"),
    ],
)
def test_malformed_poll_answers_are_invalid(raw: bytes, reason: str | None) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        oxen.parse_status(raw)


# -- submitting ----------------------------------------------------------------------------------


def test_request() -> None:
    text = build(oxen, GenerationSpec("a fox", params={"output_format": "png"}))
    assert (text.method, text.path, text.headers) == ("POST", "/api/ai/queue", {"Authorization": "Bearer K"})
    assert text.json == {"model": "xai-grok-imagine-image", "prompt": "a fox", "output_format": "png"}
    edit = build(oxen, GenerationSpec("sharper", input_image=IMAGE))
    assert edit.json == {"model": "xai-grok-imagine-image-edit", "prompt": "sharper", "input_image": IMAGE}
    assert build(oxen, GenerationSpec("x", model="m-2")).json["model"] == "m-2"
    answer = {"generations": [{"generation_id": "g1", "status": "queued"}, {"generation_id": "g2", "status": "queued"}]}
    assert [s.provider_job_id for s in oxen.parse_submit(text, json.dumps(answer).encode())] == ["g1", "g2"]
    assert oxen.build_poll("g1", api_key="K").path == "/api/ai/queue/g1"


@pytest.mark.parametrize(
    "answer",
    [b'{"generations": []}', b'{"generations": [{"status": "queued"}]}', b"[]"],
    ids=["no-generations", "no-generation-id", "not-an-object"],
)
def test_submit_answers_without_generation_ids_are_invalid(answer: bytes) -> None:
    with pytest.raises(InvalidPayload):
        oxen.parse_submit(build(oxen, GenerationSpec("a fox")), answer)
