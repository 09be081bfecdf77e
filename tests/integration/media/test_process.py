"""Media mirroring in a real `receiver serve` process: a SIGKILL mid-fetch loses nothing, and a 50 MB
output is streamed (the process's peak memory barely moves)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.callback import callback_server
from tests.fakes.origin import image_bytes, media_origin
from tests.integration.media.support import callback_for, get
from tests.support import WEBHOOK_TOKEN, ReceiverProcess, free_port, process_env

BIG = 50 * 1024 * 1024


def mirroring_process(tmp_path: Path, callback_url: str, media_url: str | None = None, **extra: str) -> ReceiverProcess:
    """A receiver mirroring to `media_url` (default: tmp_path/media; "" leaves RECEIVER_MEDIA_URL unset)."""
    port = free_port()
    env = process_env(
        tmp_path,
        **extra,
        RECEIVER_MEDIA_URL=media_url or str(tmp_path / "media"),
        RECEIVER_MEDIA_ALLOW_PRIVATE="true",
        RECEIVER_DEFAULT_CALLBACK_URL=callback_url,
        RECEIVER_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    if media_url == "":
        del env["RECEIVER_MEDIA_URL"]
    return ReceiverProcess(env, port=port)


async def post_result(proc: ReceiverProcess, request_id: str, url: str) -> str:
    body = {"request_id": request_id, "status": "COMPLETED", "output": {"media_url": [url], "media_type": "image/png"}}
    async with httpx.AsyncClient(base_url=proc.base_url, timeout=10) as client:
        reply = await client.post(f"/webhooks/pixazo?token={WEBHOOK_TOKEN}", content=json.dumps(body))
    assert reply.status_code == 200, reply.text
    return str(reply.json()["job_ids"][0])


async def test_sigkill_mid_fetch_resumes_after_restart(tmp_path: Path) -> None:
    async with media_origin() as origin, callback_server() as callback:
        proc = mirroring_process(tmp_path, callback.url("/d"))
        await asyncio.to_thread(proc.start)
        try:
            job_id = await post_result(proc, "px-kill", origin.url("/hang-once"))
            await asyncio.wait_for(origin.hanging.wait(), 20)  # the fetch is under way, 1000 bytes in
            proc.kill()
            assert callback.requests == []
            await asyncio.to_thread(proc.start)
            output: dict[str, Any] = (await callback_for(callback, job_id, timeout=30))["data"]["outputs"][0]
            data = image_bytes(200_000, "hang")
            assert output["sha256"] == hashlib.sha256(data).hexdigest() and output["mirror_error"] is None
            assert origin.hits["/hang-once"] == 2 and len(callback.requests) == 1
            assert (await get(output["stored_url"])).content == data
        finally:
            proc.stop()


@pytest.mark.parametrize("media", ["dir", "db"])
async def test_a_50_mb_output_is_streamed_not_buffered(tmp_path: Path, media: str) -> None:
    """Stored and served again (a directory, or SQLite's database in chunks) with memory that barely moves."""
    await stream_50_mb(tmp_path, "db" if media == "db" else None)


async def test_a_50_mb_output_in_postgresql_is_streamed_not_buffered(tmp_path: Path, postgres_url: str) -> None:
    await stream_50_mb(tmp_path, "", RECEIVER_DATABASE_URL=postgres_url)  # unset: db, the default there
    assert not (tmp_path / "media").exists() and not Path("receiver-media").exists()  # the process's cwd is ours


async def stream_50_mb(tmp_path: Path, media_url: str | None, **extra: str) -> None:
    async with media_origin() as origin, callback_server() as callback:
        proc = mirroring_process(tmp_path, callback.url("/d"), media_url, **extra)
        await asyncio.to_thread(proc.start)
        try:
            warm = await post_result(proc, "px-warm", origin.url("/img/200000-w"))  # every code path loaded
            await callback_for(callback, warm, timeout=30)
            await asyncio.sleep(0.5)
            before = proc.memory_kib()["VmRSS"]
            job_id = await post_result(proc, "px-big", origin.url(f"/big/{BIG}"))
            output = (await callback_for(callback, job_id, timeout=120))["data"]["outputs"][0]
            peak = proc.memory_kib()["VmHWM"]
            assert output["bytes"] == BIG and output["mirror_error"] is None, output
            growth_mib = (peak - before) / 1024
            print(
                f"50 MB mirror: RSS before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
                f"growth {growth_mib:.1f} MiB"
            )
            assert growth_mib < 25, f"peak RSS grew by {growth_mib:.1f} MiB while mirroring 50 MB"
            async with httpx.AsyncClient(timeout=30) as client:
                head = await client.head(output["stored_url"])
                assert head.status_code == 200 and head.headers["content-length"] == str(BIG)
                digest = hashlib.sha256()
                async with client.stream("GET", output["stored_url"]) as served:
                    async for piece in served.aiter_bytes():
                        digest.update(piece)
                assert served.status_code == 200 and digest.hexdigest() == output["sha256"]
            served_growth = (proc.memory_kib()["VmHWM"] - before) / 1024
            assert served_growth < 25, f"peak RSS grew by {served_growth:.1f} MiB while storing and serving 50 MB"
        finally:
            proc.stop()
