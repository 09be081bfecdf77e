"""A fake Pixazo gateway: the generate requests (model in the path), the status endpoint, refusals."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.recording import FakeProvider

API_KEY = "pixazo-test-key-77c1"
INSUFFICIENT = (402, {"error": "Insufficient Balance", "message": "Your wallet does not have enough balance."})


def completed(request_id: str, urls: list[str] | None = None) -> dict[str, Any]:
    """The status response (and webhook body) of a finished request."""
    model = request_id.partition("_")[0]
    urls = urls or [f"https://pub-test.r2.dev/v1/{request_id}/output.jpeg"]
    return {
        "request_id": request_id,
        "status": "COMPLETED",
        "model_id": model,
        "error": None,
        "output": {"media_url": urls, "media_type": "image/jpeg"},
        "created_at": "2026-03-31T10:00:00.000Z",
        "completed_at": "2026-03-31T10:00:15.000Z",
    }


def failed(request_id: str, message: str, status: str = "ERROR") -> dict[str, Any]:
    return {
        "request_id": request_id,
        "status": status,
        "model_id": request_id.partition("_")[0],
        "error": message,
        "output": None,
    }


class FakePixazo(FakeProvider):
    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__(api_key)
        self.statuses: dict[str, dict[str, Any]] = {}  # request_id → status answer
        self.app = Starlette(
            routes=[
                Route("/v2/requests/status/{request_id}", self._status, methods=["GET"]),
                Route("/{model}/v1/{operation}", self._generate, methods=["POST"]),
            ]
        )

    def _denied(self, request: Request) -> Response | None:
        if self.authorized(request.headers.get("ocp-apim-subscription-key"), self.api_key):
            return None
        return JSONResponse({"statusCode": 401, "message": "Access denied due to invalid subscription key."}, 401)

    async def _generate(self, request: Request) -> Response:
        await self.record(request)
        model, operation = request.path_params["model"], request.path_params["operation"]
        if operation != f"{model}-request":
            return JSONResponse({"error": "Not Found", "message": "Resource not found"}, 404)
        denied = self._denied(request) or await self.hold()
        if denied is not None:
            return denied
        request_id = f"{model}_{uuid.uuid4()}"
        self.statuses[request_id] = {
            "request_id": request_id,
            "status": "QUEUED",
            "model_id": model,
            "error": None,
            "output": None,
        }
        return JSONResponse(
            {
                "request_id": request_id,
                "status": "QUEUED",
                "polling_url": f"{self.base_url}/v2/requests/status/{request_id}",
            },
            202,
        )

    async def _status(self, request: Request) -> Response:
        await self.record(request)
        denied = self._denied(request)
        if denied is not None:
            return denied
        request_id = request.path_params["request_id"]
        await self.polled(request_id)
        if request_id not in self.statuses:
            return JSONResponse({"error": "Not Found", "message": f"Request {request_id} not found"}, 404)
        return JSONResponse(self.statuses[request_id])
