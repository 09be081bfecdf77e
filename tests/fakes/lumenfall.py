"""A fake Lumenfall (OpenAI-compatible, synchronous images), and Standard Webhooks signing for its video API."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import standardwebhooks
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.recording import FakeProvider

API_KEY = "lf-test-key-9a17"
WEBHOOK_SECRET = "whsec_bHVtZW5mYWxsLXRlc3Qtc2VjcmV0LTMyLWJ5dGVzISE="


def video_event(video_id: str, event: str = "video.completed", url: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"id": video_id, "status": event.partition(".")[2]}
    if event == "video.completed":
        data["output"] = {"url": url or f"https://media.lumenfall.ai/videos/{video_id}.mp4"}
    return {"type": event, "data": data}


def sign(
    body: bytes, msg_id: str = "msg_test_1", *, secret: str = WEBHOOK_SECRET, timestamp: float | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for `body`, as Lumenfall's video API sends them."""
    at = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, tz=UTC)
    signature = standardwebhooks.Webhook(secret).sign(msg_id, at, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


class FakeLumenfall(FakeProvider):
    """Serve with `serve("/openai/v1")`. `refusal` and `delay_s` apply to generations."""

    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__(api_key)
        self.answer: tuple[int, Any] | None = None  # replace the normal 200 answer with (status, raw body)
        self.app = Starlette(routes=[Route("/openai/v1/images/generations", self._generate, methods=["POST"])])

    async def _generate(self, request: Request) -> Response:
        recorded = await self.record(request)
        if not self.authorized(request.headers.get("authorization"), f"Bearer {self.api_key}"):
            return JSONResponse(
                {"error": {"message": "Invalid API key", "type": "invalid_request_error", "code": "invalid_api_key"}},
                401,
            )
        refused = await self.hold()
        if refused is not None:
            return refused
        if self.answer is not None:
            status, raw = self.answer
            return Response(raw, status_code=status, media_type="application/json")
        body = recorded.json
        count = int(body.get("n") or 1)
        return JSONResponse(
            {
                "created": int(time.time()),
                "data": [
                    {
                        "url": f"https://media.lumenfall.ai/generations/{len(self.requests)}-{i}.png",
                        "revised_prompt": f"{body.get('prompt')} (revised)",
                    }
                    for i in range(count)
                ],
            }
        )
