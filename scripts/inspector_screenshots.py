"""Take docs/inspector.png and docs/inspector-job.png on a realistic store: a few hundred jobs of every
webhook provider, their receipts, refused requests, and a job whose callbacks failed and wait for a retry.

    .venv/bin/python -m scripts.inspector_screenshots [--out docs]

Runs a receiver in-process on loopback (SQLite in a temporary directory), fake provider CDN and callback
endpoints, and Debian's Chromium through Playwright (RECEIVER_CHROMIUM overrides /usr/bin/chromium).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import uuid
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from tests.fakes.callback import Reply, callback_server
from tests.fakes.images import fake_cdn
from tests.integration.media.support import mirroring_receiver
from tests.support import API_TOKEN, WEBHOOK_TOKEN, eventually

PROMPTS = [
    "a lighthouse at dusk, volumetric fog",
    "isometric tiny kitchen, pastel",
    "red fox in fresh snow",
    "portrait of an astronaut, film grain",
    "watercolor map of Lisbon",
    "neon koi pond at night",
    "product shot of a ceramic mug",
    "brutalist library interior",
    "macro of a dew-covered leaf",
]


def hook(provider: str, token: str = WEBHOOK_TOKEN) -> str:
    return f"/webhooks/{provider}?token={token}"


def provider_job_id(provider: str, rng: random.Random) -> str:
    u = uuid.UUID(int=rng.getrandbits(128), version=4)
    return {
        "pixazo": f"grok-imagine-{u.hex[:20]}",
        "runware": str(u),
        "apiframe": str(u),
        "lumenfall": f"gen_{u.hex[:24]}",
    }[provider]


def completion(provider: str, pid: str, url: str, failed: bool) -> dict[str, Any]:
    if provider == "pixazo":
        if failed:
            return {"request_id": pid, "status": "FAILED", "error": "content policy: prompt rejected"}
        return {"request_id": pid, "status": "COMPLETED", "output": {"media_url": [url], "media_type": "image/png"}}
    if provider == "runware":
        if failed:
            return {"errors": [{"taskUUID": pid, "message": "Invalid model AIR"}]}
        return {"data": [{"taskType": "imageInference", "taskUUID": pid, "imageUUID": pid[::-1], "imageURL": url}]}
    if failed:
        return {"jobId": pid, "event": "failed", "status": "FAILED", "error": "upstream timeout"}
    return {"jobId": pid, "event": "completed", "status": "COMPLETED", "result": url}


async def populate(server: Any, cdn: Any, down_url: str) -> str:
    rng = random.Random(26)
    async with server.client() as client, server.api() as api:
        for n in range(340):
            provider = rng.choice(["pixazo", "pixazo", "runware", "apiframe"])
            pid = provider_job_id(provider, rng)
            await api.post(
                "/v1/jobs",
                json={
                    "provider": provider,
                    "provider_job_id": pid,
                    "metadata": {"prompt": rng.choice(PROMPTS), "run": n},
                },
            )
            if rng.random() < 0.8:
                body = completion(provider, pid, cdn.url(f"{provider}/{pid}"), failed=rng.random() < 0.08)
                await client.post(hook(provider), json=body)
            if provider == "apiframe" and rng.random() < 0.3:
                await client.post(
                    hook("apiframe"), json={"jobId": pid, "event": "progress", "status": "PROCESSING", "progress": 40}
                )
        # Refused requests of the kinds a real deployment sees.
        await client.post(
            hook("pixazo", "old-token-from-last-deploy"),
            json={"request_id": "grok-imagine-9f2"},
            headers={"User-Agent": "Pixazo-Webhooks/1.4"},
        )
        await client.post(hook("midjourney"), json={"id": "mj-1"}, headers={"User-Agent": "curl/8.5.0"})
        await client.post(hook("runware"), content=b'{"data": [' + b'{"imageURL": "x"},' * 80_000 + b"{}]}")
        await client.post(hook("pixazo"), content=b'{"request_id": "grok-imagine-77", "status": "COMPLETED",')
        await client.post(
            hook("apiframe", ""), json={"jobId": "af-probe"}, headers={"Authorization": "Bearer sk-live-xxxx"}
        )
        # The job whose callbacks fail: attempts 1 and 2 answered 503, the third waits an hour.
        pid = provider_job_id("pixazo", rng)
        job = (
            await api.post(
                "/v1/jobs",
                json={
                    "provider": "pixazo",
                    "provider_job_id": pid,
                    "callback_url": down_url,
                    "metadata": {"prompt": "a red fox in fresh snow", "run": 341},
                },
            )
        ).json()
        await client.post(
            hook("pixazo"),
            json={
                "request_id": pid,
                "status": "COMPLETED",
                "output": {"media_url": [cdn.url(f"fox/{pid}-1"), cdn.url(f"fox/{pid}-2")], "media_type": "image/png"},
            },
        )
        return str(job["id"])


async def main(out: Path) -> None:
    down = Reply(
        503,
        {"Content-Type": "application/json", "X-Request-Id": "req_7f3a9c"},
        b'{"error": "service unavailable", "detail": "database failover in progress"}',
    )
    with tempfile.TemporaryDirectory() as tmp:
        async with callback_server() as ok, callback_server(default=down) as failing, fake_cdn(256) as cdn:
            async with mirroring_receiver(Path(tmp), ok, retry_schedule=(2.0, 3600.0)) as server:
                job_id = await populate(server, cdn, failing.url("/hooks/receiver"))
                await eventually(lambda: len(failing.requests) >= 2, timeout=60, what="two failed attempts")
                async with async_playwright() as pw:
                    chromium = await pw.chromium.launch(
                        executable_path=os.environ.get("RECEIVER_CHROMIUM", "/usr/bin/chromium"),
                        args=["--headless", "--no-sandbox", "--disable-gpu"],
                        headless=True,
                    )
                    page = await (await chromium.new_context(viewport={"width": 1440, "height": 1000})).new_page()
                    await page.goto(f"{server.base_url}/ui/")
                    await page.get_by_label("API token").fill(API_TOKEN)
                    await page.get_by_label("API token").press("Enter")
                    await page.locator("#job-list tbody tr").nth(49).wait_for()
                    await page.locator("#refusal-list details").nth(4).wait_for()
                    await page.locator("#refusal-list details").nth(4).locator("summary").click()
                    await page.wait_for_timeout(1500)
                    await page.screenshot(path=str(out / "inspector.png"), full_page=True)

                    await page.goto(f"{server.base_url}/ui/#/jobs/{job_id}")
                    attempts = page.locator("#deliveries details")
                    await attempts.nth(1).wait_for()
                    await attempts.nth(1).locator("summary").click()
                    await page.wait_for_function(
                        "() => [...document.querySelectorAll('#job-outputs img')]"
                        ".every((i) => i.complete && i.naturalWidth > 0)"
                    )
                    await page.wait_for_timeout(1500)
                    await page.screenshot(path=str(out / "inspector-job.png"), full_page=True)
                    await chromium.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    asyncio.run(main(parser.parse_args().out))
