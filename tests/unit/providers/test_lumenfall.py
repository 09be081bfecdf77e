"""Lumenfall: the adapter (video webhooks, the synchronous image answer), the generation request, and
`POST /webhooks/lumenfall` end to end with its Standard Webhooks verification (when
RECEIVER_LUMENFALL_WEBHOOK_SECRET is set)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from receiver.errors import InvalidPayload
from receiver.models import JobStatus
from receiver.providers import lumenfall
from receiver.providers._request import BadGeneration, GenerationSpec
from tests.fakes import lumenfall as lf
from tests.fakes.harness import hook_url, serve_receiver
from tests.support import UNMIRRORED, RunningServer
from tests.unit.providers.common import IMAGE, body, build

OTHER_SECRET = "whsec_b3RoZXItc2VjcmV0LW5vdC1sdW1lbmZhbGxzLTMyYg=="


# -- the adapter ----------------------------------------------------------------------------------


def test_video_completed() -> None:
    raw = {
        "type": "video.completed",
        "data": {"id": "vid_1", "status": "completed", "output": {"url": "https://media.lumenfall.ai/v.mp4"}},
    }
    (c,) = lumenfall.parse_webhook({}, body(raw))
    assert (c.provider_job_id, c.status, c.outputs[0].media_type) == ("vid_1", JobStatus.SUCCEEDED, "video/mp4")


@pytest.mark.parametrize(
    "event, status", [("video.failed", JobStatus.FAILED), ("video.cancelled", JobStatus.CANCELLED)]
)
def test_video_failed_or_cancelled(event: str, status: JobStatus) -> None:
    (c,) = lumenfall.parse_webhook(
        {}, body({"type": event, "data": {"id": "v", "status": "x", "error": {"message": "m"}}})
    )
    assert c.status is status


def test_other_event_is_not_terminal() -> None:
    (c,) = lumenfall.parse_webhook({}, body({"type": "video.started", "data": {"id": "v"}}))
    assert c.status is JobStatus.PENDING


def test_image_response() -> None:
    raw = {"created": 1702345678, "data": [{"url": "https://media.lumenfall.ai/a.png", "revised_prompt": "p"}]}
    c = lumenfall.parse_image_response("lf_1", body(raw))
    assert (c.provider_job_id, c.status, c.outputs[0].media_type) == ("lf_1", JobStatus.SUCCEEDED, "image/png")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(body({"type": "video.completed", "data": {"id": "v"}}), id="completed-without-output"),
        pytest.param(body({"data": {}}), id="no-type"),
        pytest.param(body({"type": "x"}), id="no-data"),
    ],
)
def test_bad_shapes(raw: bytes) -> None:
    with pytest.raises(InvalidPayload):
        lumenfall.parse_webhook({}, raw)


def test_request() -> None:
    request = build(lumenfall, GenerationSpec("a fox", params={"n": 2, "size": "1024x1024"}))
    assert (request.method, request.path) == ("POST", "/images/generations")
    assert request.headers == {"Authorization": "Bearer K"}
    assert request.json == {"model": "grok-imagine-image", "prompt": "a fox", "n": 2, "size": "1024x1024"}
    with pytest.raises(BadGeneration) as bad:
        build(lumenfall, GenerationSpec("x", input_image=IMAGE))
    assert bad.value.field == "input_image"
    failed = lumenfall.failed_response("j1", "content policy")
    assert (failed.provider, failed.provider_job_id, failed.status, failed.error) == (
        "lumenfall",
        "j1",
        JobStatus.FAILED,
        "content policy",
    )


# -- POST /webhooks/lumenfall ---------------------------------------------------------------------


async def post(server: RunningServer, body: bytes, headers: dict[str, str], token: bool = True) -> Any:
    url = hook_url(server, "lumenfall") if token else f"{server.base_url}/webhooks/lumenfall"
    async with server.client() as client:
        return await client.post(url, content=body, headers=headers)


async def stored(server: RunningServer) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    async with server.api() as api:
        receipts = (await api.get("/v1/receipts", params={"provider": "lumenfall"})).json()["receipts"]
        jobs = (await api.get("/v1/jobs", params={"provider": "lumenfall"})).json()["jobs"]
    return receipts, jobs


Delivery = tuple[bytes, dict[str, str]]

# From a good delivery (body and headers, signed as msg_1), one whose signature must not pass.
BADLY_SIGNED: dict[str, Callable[[bytes, dict[str, str]], Delivery]] = {
    "wrong secret": lambda body, headers: (body, lf.sign(body, "msg_1", secret=OTHER_SECRET)),
    "stale timestamp": lambda body, headers: (body, lf.sign(body, "msg_1", timestamp=time.time() - 600)),
    "future timestamp": lambda body, headers: (body, lf.sign(body, "msg_1", timestamp=time.time() + 600)),
    "no headers": lambda body, headers: (body, {"content-type": "application/json"}),
    "no signature": lambda body, headers: (body, {k: v for k, v in headers.items() if k != "webhook-signature"}),
    "tampered body": lambda body, headers: (body.replace(b"vid_1", b"vid_2"), headers),
    "other message id": lambda body, headers: (body, {**headers, "webhook-id": "msg_2"}),
    "garbage signature": lambda body, headers: (body, {**headers, "webhook-signature": "v1,not base64!"}),
}


@pytest.mark.parametrize("spoil", list(BADLY_SIGNED.values()), ids=list(BADLY_SIGNED))
async def test_badly_signed_deliveries_are_refused_and_nothing_kept(
    tmp_path: Path, spoil: Callable[[bytes, dict[str, str]], Delivery]
) -> None:
    async with serve_receiver(tmp_path, lumenfall_webhook_secret=lf.WEBHOOK_SECRET) as server:
        body = json.dumps(lf.video_event("vid_1")).encode()
        raw, sent = spoil(body, lf.sign(body, "msg_1"))
        reply = await post(server, raw, sent)
        assert reply.status_code == 401
        assert reply.json()["error"] == "bad_signature"
        assert await stored(server) == ([], [])  # nothing of an unauthenticated request is kept


async def test_signed_deliveries_are_verified(tmp_path: Path) -> None:
    async with serve_receiver(tmp_path, lumenfall_webhook_secret=lf.WEBHOOK_SECRET) as server:
        body = json.dumps(lf.video_event("vid_1")).encode()
        headers = lf.sign(body, "msg_1")
        assert (await post(server, body, headers, token=False)).status_code == 401  # the token is still needed
        assert await stored(server) == ([], [])
        reply = await post(server, body, headers)
        assert reply.status_code == 200, reply.text
        assert reply.json()["outcome"] == "applied"
        (receipt,), (job,) = await stored(server)
        assert (job["provider_job_id"], job["status"]) == ("vid_1", "succeeded")
        assert job["outputs"] == [
            {"url": "https://media.lumenfall.ai/videos/vid_1.mp4", "media_type": "video/mp4", **UNMIRRORED}
        ]
        again = await post(server, body, headers)  # Lumenfall retrying the same delivery
        assert again.status_code == 200 and again.json()["outcome"] == "duplicate"

        rotated = lf.sign(body, "msg_3")
        rotated["webhook-signature"] = (
            lf.sign(body, "msg_3", secret=OTHER_SECRET)["webhook-signature"] + " " + rotated["webhook-signature"]
        )  # several signatures: one valid is enough
        assert (await post(server, body, rotated)).status_code == 200

        failed = json.dumps(lf.video_event("vid_9", "video.failed")).encode()
        assert (await post(server, failed, lf.sign(failed, "msg_9"))).status_code == 200
        async with server.api() as api:
            (vid_9,) = [j for j in (await api.get("/v1/jobs")).json()["jobs"] if j["provider_job_id"] == "vid_9"]
        assert (vid_9["status"], vid_9["error"]) == ("failed", "Lumenfall video.failed")


async def test_unsigned_deliveries_accepted_without_a_secret(tmp_path: Path) -> None:
    async with serve_receiver(tmp_path) as server:
        body = json.dumps(lf.video_event("vid_1", "video.cancelled")).encode()
        reply = await post(server, body, {"content-type": "application/json"})
        assert reply.status_code == 200, reply.text
        (_, (job,)) = await stored(server)
        assert job["status"] == "cancelled"
        # Signature headers (from some other secret) are not checked either: there is nothing to check them with.
        other = json.dumps(lf.video_event("vid_2")).encode()
        assert (await post(server, other, lf.sign(other, secret=OTHER_SECRET))).status_code == 200
