"""`POST /webhooks/lumenfall`: Standard Webhooks verification when RECEIVER_LUMENFALL_WEBHOOK_SECRET is set."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.fakes import lumenfall as lf
from tests.fakes.harness import hook_url, serve_receiver
from tests.support import UNMIRRORED, RunningServer

OTHER_SECRET = "whsec_b3RoZXItc2VjcmV0LW5vdC1sdW1lbmZhbGxzLTMyYg=="


async def post(server: RunningServer, body: bytes, headers: dict[str, str], token: bool = True) -> Any:
    url = hook_url(server, "lumenfall") if token else f"{server.base_url}/webhooks/lumenfall"
    async with server.client() as client:
        return await client.post(url, content=body, headers=headers)


async def stored(server: RunningServer) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    async with server.api() as api:
        receipts = (await api.get("/v1/receipts", params={"provider": "lumenfall"})).json()["receipts"]
        jobs = (await api.get("/v1/jobs", params={"provider": "lumenfall"})).json()["jobs"]
    return receipts, jobs


async def test_signed_deliveries_are_verified(tmp_path: Path) -> None:
    async with serve_receiver(tmp_path, lumenfall_webhook_secret=lf.WEBHOOK_SECRET) as server:
        body = json.dumps(lf.video_event("vid_1")).encode()
        headers = lf.sign(body, "msg_1")
        refused = {
            "wrong secret": (body, lf.sign(body, "msg_1", secret=OTHER_SECRET)),
            "stale timestamp": (body, lf.sign(body, "msg_1", timestamp=time.time() - 600)),
            "future timestamp": (body, lf.sign(body, "msg_1", timestamp=time.time() + 600)),
            "no headers": (body, {"content-type": "application/json"}),
            "no signature": (body, {k: v for k, v in headers.items() if k != "webhook-signature"}),
            "tampered body": (body.replace(b"vid_1", b"vid_2"), headers),
            "other message id": (body, {**headers, "webhook-id": "msg_2"}),
            "garbage signature": (body, {**headers, "webhook-signature": "v1,not base64!"}),
        }
        for name, (raw, sent) in refused.items():
            reply = await post(server, raw, sent)
            assert reply.status_code == 401, name
            assert reply.json()["error"] == "bad_signature", name
        assert await stored(server) == ([], [])  # nothing of an unauthenticated request is kept

        assert (await post(server, body, headers, token=False)).status_code == 401  # the token is still needed
        reply = await post(server, body, headers)
        assert reply.status_code == 200, reply.text
        assert reply.json()["outcome"] == "applied"
        (receipt,), (job,) = await stored(server)
        assert (job["provider_job_id"], job["status"]) == ("vid_1", "succeeded")
        assert job["outputs"] == [{"url": "https://media.lumenfall.ai/videos/vid_1.mp4", "media_type": "video/mp4",
                                   **UNMIRRORED}]
        again = await post(server, body, headers)  # Lumenfall retrying the same delivery
        assert again.status_code == 200 and again.json()["outcome"] == "duplicate"

        rotated = lf.sign(body, "msg_3")
        rotated["webhook-signature"] = lf.sign(body, "msg_3", secret=OTHER_SECRET)["webhook-signature"] + " " + \
            rotated["webhook-signature"]  # several signatures: one valid is enough
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
