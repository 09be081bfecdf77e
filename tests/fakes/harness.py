"""The receiver as providers see it: served on a socket bound first, so its public URL is its real one."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from receiver.app import create_app
from receiver.tuning import MirrorTuning, StreamTuning
from tests.support import WEBHOOK_TOKEN, RunningServer, make_settings, serve_app


@contextlib.asynccontextmanager
async def serve_receiver(
    tmp_path: Path,
    *,
    stream_tuning: StreamTuning | None = None,
    mirror_tuning: MirrorTuning | None = None,
    **overrides: Any,
) -> AsyncIterator[RunningServer]:
    """The receiver with `public_url` set to where it listens: webhook URLs it hands out reach it.
    `overrides` are settings; the tunings go to `create_app`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY: see serve_app
    sock.bind(("127.0.0.1", 0))
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(
        make_settings(tmp_path, public_url=public_url, **overrides),
        stream_tuning=stream_tuning,
        mirror_tuning=mirror_tuning,
    )
    async with serve_app(app, sock=sock) as server:
        yield server


def hook_url(server: RunningServer, provider: str) -> str:
    """What `receiver info` prints for `provider`, and what a submit must send."""
    return f"{server.base_url}/webhooks/{provider}?token={WEBHOOK_TOKEN}"


async def wait_job(server: RunningServer, job_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The job once terminal (long-poll), or fail after `timeout`."""
    async with server.api() as api:
        reply = await api.get(f"/v1/jobs/{job_id}", params={"wait": timeout})
    job: dict[str, Any] = reply.json()
    assert job["status"] != "pending", f"job {job_id} still pending after {timeout} s"
    return job
