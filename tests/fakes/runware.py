"""A fake Runware API: one POST endpoint taking a task array (imageInference, getResponse), refusals."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.recording import FakeProvider

API_KEY = "runware-test-key-0b9e"


def image(task_uuid: str, number: int = 1) -> dict[str, Any]:
    """One finished image, as a webhook `data` item (each image comes in its own POST)."""
    image_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{task_uuid}/{number}"))
    return {
        "taskType": "imageInference",
        "taskUUID": task_uuid,
        "imageUUID": image_uuid,
        "imageURL": f"https://im.runware.ai/image/ws/2/ii/{image_uuid}.jpg",
        "seed": 1000 + number,
        "NSFWContent": False,
        "cost": 0.0013,
    }


def error(task_uuid: str, message: str, code: str = "insufficientCredits") -> dict[str, Any]:
    return {
        "errors": [
            {"code": code, "message": message, "parameter": "", "taskType": "imageInference", "taskUUID": task_uuid}
        ],
        "data": [],
    }


def _is_uuid4(value: Any) -> bool:
    try:
        return isinstance(value, str) and uuid.UUID(value).version == 4 and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


class FakeRunware(FakeProvider):
    """Serve with `serve("/v1")`: the base URL then ends in /v1, as the real one does."""

    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__(api_key)
        self.tasks: dict[str, dict[str, Any]] = {}  # taskUUID → the submitted task
        self.responses: dict[str, list[dict[str, Any]]] = {}  # taskUUID → getResponse `data` items
        self.app = Starlette(routes=[Route("/v1", self._tasks, methods=["POST"])])

    def tasks_submitted(self) -> list[dict[str, Any]]:
        return [t for r in self.requests_to("/v1") for t in r.json if t.get("taskType") == "imageInference"]

    def polls(self) -> list[dict[str, Any]]:
        return [t for r in self.requests_to("/v1") for t in r.json if t.get("taskType") == "getResponse"]

    async def _tasks(self, request: Request) -> Response:
        recorded = await self.record(request)
        if not self.authorized(request.headers.get("authorization"), f"Bearer {self.api_key}"):
            return JSONResponse({"errors": [{"code": "invalidApiKey", "message": "Invalid API key."}]}, 401)
        try:
            tasks = json.loads(recorded.body)
        except ValueError:
            return JSONResponse({"errors": [{"code": "invalidJSON", "message": "Body is not JSON."}]}, 400)
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            return JSONResponse({"errors": [{"code": "invalidBody", "message": "Expected an array of tasks."}]}, 400)
        data: list[dict[str, Any]] = []
        for task in tasks:
            task_uuid = task.get("taskUUID")
            if not _is_uuid4(task_uuid):
                return JSONResponse(
                    {
                        "errors": [
                            {
                                "code": "invalidTaskUUID",
                                "parameter": "taskUUID",
                                "message": "taskUUID must be a UUID v4.",
                            }
                        ]
                    },
                    400,
                )
            if task.get("taskType") == "getResponse":
                if task_uuid not in self.tasks:
                    return JSONResponse(error(task_uuid, "Task not found.", "taskNotFound"), 400)
                await self.polled(task_uuid)
                data += self.responses.get(task_uuid) or [
                    {"taskType": "imageInference", "taskUUID": task_uuid, "status": "processing"}
                ]
            elif task.get("taskType") == "imageInference":
                refused = await self.hold()
                if refused is not None:
                    return refused
                self.tasks[task_uuid] = task
                data.append({"taskType": "imageInference", "taskUUID": task_uuid})
            else:
                return JSONResponse({"errors": [{"code": "invalidTaskType", "message": "Unknown taskType."}]}, 400)
        return JSONResponse({"data": data})
