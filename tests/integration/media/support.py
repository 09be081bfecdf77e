"""Shared by the media tests: a receiver that mirrors, webhooks carrying origin URLs, callbacks awaited."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from receiver.app import create_app
from receiver.tuning import MirrorTuning
from tests.fakes.callback import CallbackServer
from tests.support import WEBHOOK_TOKEN, RunningServer, eventually, make_settings, serve_app

# Short enough that every give-up happens within a few seconds.
FAST = MirrorTuning(
    attempt_timeout_s=1.5,
    read_timeout_s=1.0,
    retry_for_s=2.0,
    first_retry_s=0.1,
    max_retry_s=0.3,
    poll_s=0.2,
    sweep_every_s=0.2,
)


@contextlib.asynccontextmanager
async def mirroring_receiver(
    tmp_path: Path, callback: CallbackServer, *, mirror_tuning: MirrorTuning = FAST, **overrides: Any
) -> AsyncIterator[RunningServer]:
    """A receiver mirroring to `tmp_path/media` (loopback origins allowed), with the FAST timings, results
    called back to `callback`; `overrides` are settings."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    values: dict[str, Any] = {
        "media_url": str(tmp_path / "media"),
        "media_allow_private": True,
        "default_callback_url": callback.url("/default"),
        "public_url": f"http://127.0.0.1:{sock.getsockname()[1]}",
    }
    values.update(overrides)
    app = create_app(make_settings(tmp_path, **values), mirror_tuning=mirror_tuning)
    async with serve_app(app, sock=sock) as server:
        yield server


async def deliver(server: RunningServer, request_id: str, *urls: str, media_type: str | None = None) -> str:
    """A Pixazo completion with these result URLs; returns the job id."""
    output: dict[str, Any] = {"media_url": list(urls)}
    if media_type:
        output["media_type"] = media_type
    body = {"request_id": request_id, "status": "COMPLETED", "output": output}
    async with server.client() as client:
        reply = await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", content=json.dumps(body))
    assert reply.status_code == 200, reply.text
    return str(reply.json()["job_ids"][0])


async def callback_for(callback: CallbackServer, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The (first) callback body for `job_id`, once it arrived."""

    def bodies() -> list[dict[str, Any]]:
        return [b for b in (json.loads(r.body) for r in callback.requests) if b["data"]["id"] == job_id]

    await eventually(lambda: bodies(), timeout, f"the callback of {job_id}")
    return bodies()[0]


async def get(url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url, **kwargs)
