"""Callback HTTP clients for `python -m scripts.bench`, each measured alone in a process of its own: this module
is that process's program (`python -m scripts.benchclient client httpx|aiohttp URL COUNT CONCURRENCY`, from the
repository root).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

CALLBACK_CLIENTS = ("httpx", "aiohttp")
ROOT = Path(__file__).resolve().parent.parent  # where `python -m scripts.benchclient` finds this module


def callback_body(key: str) -> bytes:
    """A callback as the delivery worker sends it (job.succeeded, one output); `key` is its provider_job_id."""
    return json.dumps(
        {
            "type": "job.succeeded",
            "timestamp": "2026-01-01T00:00:00Z",
            "data": {
                "id": f"job_{key}",
                "provider": "pixazo",
                "provider_job_id": key,
                "status": "succeeded",
                "outputs": [
                    {"url": f"https://cdn.pixazo.ai/{key}/output.jpeg", "media_type": "image/jpeg", "key": None}
                ],
                "error": None,
                "metadata": {},
                "created_at": "2026-01-01T00:00:00Z",
                "completed_at": "2026-01-01T00:00:05Z",
            },
        },
        separators=(",", ":"),
    ).encode()


async def _post_callbacks(kind: str, url: str, keys: Sequence[str], concurrency: int) -> None:
    """POST one callback per key, `concurrency` at a time, each the way the delivery worker does it (one
    whole-attempt deadline, no redirects, a bounded read of the answer), with `kind`'s pooled client."""
    headers = {
        "webhook-id": "msg_bench",
        "webhook-timestamp": "1767225600",
        "webhook-signature": "v1,AAAA",
        "content-type": "application/json",
        "user-agent": "receiver-callbacks/1",
    }
    if kind == "httpx":
        import httpx

        client = httpx.AsyncClient(
            timeout=15, follow_redirects=False, limits=httpx.Limits(max_connections=64, max_keepalive_connections=16)
        )

        async def post(body: bytes) -> int:
            async with asyncio.timeout(15):
                async with client.stream("POST", url, content=body, headers=headers) as response:
                    async for _ in response.aiter_raw():
                        pass
                    return response.status_code

        close = client.aclose
    elif kind == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, limit_per_host=8), auto_decompress=False
        )

        async def post(body: bytes) -> int:
            async with asyncio.timeout(15):
                async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                    await response.content.read(65536)
                    return response.status

        close = session.close
    else:
        raise ValueError(kind)
    pending = iter(keys)

    async def worker() -> None:
        for key in pending:
            status = await post(callback_body(key))
            if status != 200:
                raise RuntimeError(f"callback answered {status}")

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await close()


def _client_main(kind: str, url: str, count: int, concurrency: int) -> None:
    """In its own process: a warm-up, then `count` callbacks; prints the CPU time they took, as JSON."""
    import resource

    try:
        import uvloop  # as under uvicorn

        run = uvloop.run
    except ImportError:
        run = asyncio.run

    async def main() -> dict[str, float]:
        await _post_callbacks(kind, url, [f"{kind}-warm-{os.getpid()}-{i}" for i in range(200)], concurrency)
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        await _post_callbacks(kind, url, [f"{kind}-{os.getpid()}-{i}" for i in range(count)], concurrency)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        return {"cpu_us_per_post": cpu / count * 1e6, "posts_per_s": count / (time.perf_counter() - started)}

    print("CLIENTJSON " + json.dumps(run(main())), flush=True)


async def callback_client_cpu(kind: str, url: str, *, count: int, concurrency: int = 8) -> dict[str, float]:
    """CPU µs per callback POST of `kind` against `url`, measured in a process of its own (so the sink's and
    the caller's CPU are not counted)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scripts.benchclient",
        "client",
        kind,
        url,
        str(count),
        str(concurrency),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    line = next((ln for ln in out.decode().splitlines() if ln.startswith("CLIENTJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{kind} client failed ({proc.returncode}): {err.decode()[-2000:]}")
    return dict(json.loads(line[len("CLIENTJSON ") :]))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "client":
        _client_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        raise SystemExit("usage: python -m scripts.benchclient client httpx|aiohttp URL COUNT CONCURRENCY")
