"""`POST /webhooks/{provider}` is taken at the door (receiver.front): it must answer exactly as Starlette's way
would, errors included, and everything else must still take Starlette's way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from receiver.app import create_app
from receiver.errors import StoreUnavailable
from tests.support import WEBHOOK_TOKEN, RunningServer, errors, make_settings, serve_app

BODY = json.dumps(
    {
        "request_id": "req_front",
        "status": "COMPLETED",
        "output": {"media_url": ["https://cdn.pixazo.ai/req_front/output.jpeg"]},
    }
)


async def post_webhook(server: RunningServer, path: str = "/webhooks/pixazo") -> Any:
    async with server.client() as client:
        return await client.post(
            f"{path}?token={WEBHOOK_TOKEN}", content=BODY, headers={"content-type": "application/json"}
        )


async def test_a_webhook_is_stored_and_answered(server: RunningServer) -> None:
    reply = await post_webhook(server)
    assert reply.status_code == 200 and reply.json()["outcome"] == "applied"
    job = await server.runtime.store.get_job(reply.json()["job_ids"][0])
    assert job.provider_job_id == "req_front" and job.status.value == "succeeded"


async def test_a_lost_store_is_the_apps_503(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async def away(*args: Any) -> Any:
        raise StoreUnavailable("database restarting")

    monkeypatch.setattr(server.runtime.store, "apply", away)
    reply = await post_webhook(server)
    assert reply.status_code == 503
    assert reply.json()["error"] == "store_unavailable"
    assert reply.headers["retry-after"] == "1" and reply.headers["connection"] == "close"


async def test_a_bug_is_the_apps_500_and_its_traceback_is_logged(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, errors_logged: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any) -> Any:
        raise RuntimeError("the store broke")

    monkeypatch.setattr(server.runtime.store, "apply", broken)
    reply = await post_webhook(server)
    assert reply.status_code == 500
    assert reply.json() == {"error": "internal_error", "message": "the receiver failed to answer this request"}
    assert reply.headers["connection"] == "close"
    assert errors(errors_logged)  # an ERROR with its traceback, as for every other route


@pytest.mark.parametrize(
    ("method", "path", "status", "error"),
    [
        ("GET", "/webhooks/pixazo", 405, "method_not_allowed"),
        ("POST", "/webhooks/pixazo/more", 404, "not_found"),
        ("POST", "/webhooks/", 404, "not_found"),
        ("POST", "/webhooks/nobody", 404, "unknown_provider"),
    ],
    ids=["get", "deeper", "no-provider", "unknown-provider"],
)
async def test_what_is_not_a_webhook_is_answered_as_before(
    server: RunningServer, method: str, path: str, status: int, error: str
) -> None:
    async with server.client() as client:
        reply = await client.request(method, f"{path}?token={WEBHOOK_TOKEN}", content=BODY)
    assert (reply.status_code, reply.json()["error"]) == (status, error)


async def test_under_a_root_path_webhooks_take_starlettes_way(tmp_path: Path) -> None:
    # Behind a proxy that strips /hooks: uvicorn puts it back in front of the path, and Starlette routes on the rest.
    async with serve_app(create_app(make_settings(tmp_path)), root_path="/hooks") as server:
        reply = await post_webhook(server)
        assert reply.status_code == 200 and reply.json()["outcome"] == "applied"
