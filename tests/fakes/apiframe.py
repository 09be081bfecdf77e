"""A fake Apiframe v2: generate (with Idempotency-Key), the jobs endpoint, signed webhook bodies, refusals."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from receiver.providers import apiframe
from tests.fakes.recording import FakeProvider

API_KEY = "afk_test_4d2c81"


def completed(job_id: str, result: str | list[str] | None = None) -> dict[str, Any]:
    """The `completed` webhook body."""
    return {
        "event": "completed",
        "jobId": job_id,
        "status": "COMPLETED",
        "progress": 100,
        "result": result or f"https://cdn.apiframe.ai/results/{job_id}.png",
        "model": "grok-imagine-image",
        "creditCost": 10,
        "completedAt": "2026-11-21T10:00:09Z",
    }


def failed(job_id: str, message: str) -> dict[str, Any]:
    return {"event": "failed", "jobId": job_id, "status": "FAILED", "error": message, "model": "grok-imagine-image"}


def signed(body: dict[str, Any], api_key: str = API_KEY) -> tuple[bytes, dict[str, str]]:
    """The raw body and headers Apiframe would POST to the webhook URL."""
    raw = json.dumps(body).encode()
    return raw, {
        "Content-Type": "application/json",
        "X-Webhook-Event": str(body.get("event")),
        "X-Webhook-Signature": apiframe.sign(api_key, raw),
    }


class FakeApiframe(FakeProvider):
    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__(api_key)
        self.jobs: dict[str, dict[str, Any]] = {}  # jobId → the `GET /v2/jobs/{id}` answer
        self.by_idempotency_key: dict[str, str] = {}
        self.app = Starlette(
            routes=[
                Route("/v2/images/generate", self._generate, methods=["POST"]),
                Route("/v2/jobs/{job_id}", self._job, methods=["GET"]),
            ]
        )

    def finish(self, job_id: str, result: str | None = None, error: str | None = None) -> None:
        """Make the jobs endpoint report the job as done (without sending a webhook)."""
        job = self.jobs[job_id]
        if error is None:
            job.update(
                status="COMPLETED",
                progress=100,
                result=result or f"https://cdn.apiframe.ai/results/{job_id}.png",
                completedAt="2026-11-21T10:00:09Z",
            )
        else:
            job.update(status="FAILED", error=error)

    def _denied(self, request: Request) -> Response | None:
        if self.authorized(request.headers.get("x-api-key"), self.api_key):
            return None
        return JSONResponse({"error": "Unauthorized", "message": "Invalid API key"}, 401)

    async def _generate(self, request: Request) -> Response:
        recorded = await self.record(request)
        denied = self._denied(request) or await self.hold()
        if denied is not None:
            return denied
        body = recorded.json
        if not body.get("prompt") or body.get("model") != "grok-imagine-image":
            return JSONResponse({"error": "Bad Request", "message": "prompt and a known model are required"}, 400)
        key = request.headers.get("idempotency-key")
        if key and key in self.by_idempotency_key:  # a retried submit: the same job, charged once
            job_id = self.by_idempotency_key[key]
            return JSONResponse({"jobId": job_id, "status": self.jobs[job_id]["status"]}, 202)
        job_id = str(uuid.uuid4())
        if key:
            self.by_idempotency_key[key] = job_id
        self.jobs[job_id] = {
            "id": job_id,
            "status": "QUEUED",
            "result": None,
            "error": None,
            "progress": 0,
            "createdAt": "2026-11-21T10:00:00Z",
            "completedAt": None,
        }
        return JSONResponse({"jobId": job_id, "status": "QUEUED"}, 202)

    async def _job(self, request: Request) -> Response:
        await self.record(request)
        denied = self._denied(request)
        if denied is not None:
            return denied
        job_id = request.path_params["job_id"]
        await self.polled(job_id)
        if job_id not in self.jobs:
            return JSONResponse({"error": "Not Found", "message": f"Job {job_id} not found"}, 404)
        return JSONResponse(self.jobs[job_id])
